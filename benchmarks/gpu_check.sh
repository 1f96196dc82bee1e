#!/usr/bin/env bash
# The series' GPU check, ready to run on a machine with one CUDA GPU (about 5 minutes on a current one):
#   1. the device and the precision that ptft_helpers chooses for it (bf16 from compute capability 8.0, else fp16
#      with a gradient scaler; TF32 matmuls from 8.0);
#   2. every notebook in fast mode under nbval, with PTFT_DEVICE=cuda;
#   3. the 20-epoch autoencoder pretraining, the 30-epoch SimCLR pretraining and the masked autoencoder's (a ViT,
#      notebook 08), full recipe, timed, in the precision chosen in 1 (bfloat16 where the GPU supports it);
#      the by-hand ViT MAE against Hugging Face's ViTMAEForPreTraining, images/s (benchmarks/bench_vit.py);
#      LoRA against full fine-tuning: step time and peak memory (benchmarks/bench_lora.py);
#   4. a short report: benchmarks/gpu-report.md (and the raw numbers in benchmarks/gpu-report.json).
# Run from the repository root after `make test` has built .venv:  bash benchmarks/gpu_check.sh
# Checkpoints and the notebooks' results go to a temporary folder, removed at the end: nothing of the CPU runs is
# replaced.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "gpu_check: no CUDA GPU here; run it on a machine with one")'
export PTFT_DEVICE=cuda PTFT_PROGRESS=0
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export PTFT_CHECKPOINTS="$scratch/checkpoints" PTFT_RESULTS="$scratch/results"
report=benchmarks/gpu-report.md
start=$(date +%s)

$PY - <<'EOF' > benchmarks/gpu-report.json
import json, torch
from ptft_helpers.devices import describe_device, pick_device, precision
device = pick_device()
print(json.dumps({"device": describe_device(device), "precision": precision(device).describe(),
                  "capability": list(torch.cuda.get_device_capability(device)), "torch": torch.__version__}))
EOF
echo "device: $($PY -c 'import json; print(json.load(open("benchmarks/gpu-report.json"))["device"])')"

nb_start=$(date +%s)
PTFT_FAST=1 $PY -m pytest -q -p no:cacheprovider --nbval-lax --nbval-sanitize-with notebooks/sanitize.cfg \
  notebooks/[0-9]*.ipynb > benchmarks/gpu-notebooks.log 2>&1 && nb_status=passed || nb_status=FAILED
nb_seconds=$(( $(date +%s) - nb_start ))

timed() {  # $1: label; the rest: pretrain options. Trains into a new file (never a found checkpoint: --out), and
  # prints the seconds and the checkpoint's summary; a failure stops the check.
  local label=$1; shift
  local t0=$SECONDS log="benchmarks/gpu-$label.log"
  if ! PTFT_FAST=0 $PY -m ptft_helpers pretrain "$@" --out "$PTFT_CHECKPOINTS/$label.pt" > "$log" 2>&1 \
      || ! grep -q "^Saved the checkpoint" "$log"; then
    echo "gpu_check: the $label pretraining failed or did not train; see $log" >&2
    return 1
  fi
  echo "$label $((SECONDS - t0)) $(tail -1 "$log")"
}
ae=$(timed autoencoder --pretext plain) || exit 1
simclr=$(timed simclr --pretext simclr) || exit 1
mae=$(timed mae --pretext mae) || exit 1
$PY benchmarks/bench_vit.py --device cuda --json benchmarks/gpu-vit.json > benchmarks/gpu-vit.log 2>&1 \
  || { echo "gpu_check: benchmarks/bench_vit.py failed; see benchmarks/gpu-vit.log" >&2; exit 1; }
$PY benchmarks/bench_lora.py --device cuda --json benchmarks/gpu-lora.json > benchmarks/gpu-lora.log 2>&1 \
  || { echo "gpu_check: benchmarks/bench_lora.py failed; see benchmarks/gpu-lora.log" >&2; exit 1; }

$PY - "$nb_status" "$nb_seconds" "$ae" "$simclr" "$mae" "$(( $(date +%s) - start ))" <<'EOF'
import json, sys
status, nb_seconds, ae, simclr, mae, total = sys.argv[1:]
info = json.load(open("benchmarks/gpu-report.json"))
runs = {}
for line in (ae, simclr, mae):
    label, seconds, summary = line.split(" ", 2)
    runs[label] = {"seconds": float(seconds), "summary": json.loads(summary)}
info.update(notebooks_fast={"status": status, "seconds": int(nb_seconds)}, pretraining=runs, total_seconds=int(total))
json.dump(info, open("benchmarks/gpu-report.json", "w"), indent=1)
lines = [f"# GPU check: {info['device']}", "",
         f"- precision chosen: {info['precision']} (compute capability {'.'.join(map(str, info['capability']))}; "
         f"torch {info['torch']})",
         f"- every notebook in fast mode with PTFT_DEVICE=cuda: {status} in {nb_seconds} s "
         "(benchmarks/gpu-notebooks.log)"]
for label, run in runs.items():
    s = run["summary"]
    lines.append(f"- {label}, {s['epochs']} epochs, full recipe: {run['seconds']:.0f} s, final train loss "
                 f"{s['final_train_loss']:.4f}")
for name in ("vit", "lora"):  # the benchmarks' own one-line summaries
    info[name] = json.load(open(f"benchmarks/gpu-{name}.json"))
    lines.append(f"- {name}: {info[name]['summary']} (benchmarks/gpu-{name}.json)")
json.dump(info, open("benchmarks/gpu-report.json", "w"), indent=1)
lines.append(f"- the whole check: {total} s")
open("benchmarks/gpu-report.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF

"""Command line: ``python -m ptft_helpers {data,check,pretrain,finetune,evaluate} --help``.

``data`` prepares a dataset and says which data folder it used, and why; ``data --check`` only checks that it
loads (``--kernel python3``: inside that Jupyter kernel, as nbgrader's autograde will load it).

Bad arguments exit with code 2 and a one-line message; nothing is overwritten by a failed run.
A dataset that cannot be found also exits with 2, listing where it looked and how to fix it.
``pretrain`` prints where it saved (or found) the checkpoint; ``evaluate`` and ``finetune`` take that path as is, for
every kind of encoder (each autoencoder pretext, SimCLR, notebook 09's subset encoders, one trained under torchrun).
A checkpoint of an older version without the metadata they need is a one-line error (exit code 2) that names it.
``pretrain --all`` pretrains every encoder the notebooks load. Started by ``torchrun --nproc_per_node=N -m
ptft_helpers pretrain ...``, it trains on N processes (``distributed``): rank 0 prints and writes the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from .checkpoints import load_pretrained
from .contrastive import SimCLR, contrastive_settings, evaluate_contrastive
from .data import DATASETS, balanced_subset, check, dataset_info, load, prepare
from .distributed import RankError, World
from .envcheck import check_environment, print_report
from .mae import masked_loss
from .models import Classifier
from .pretrained import load_or_pretrain, pretrain_settings, series_encoders
from .seeding import seeded
from .settings import data_folder, progress_enabled
from .training import PRETEXTS, check_learning_rate, evaluate, finetune
from .validation import positive_int
from .vit import MaskedAutoencoder, ViTClassifier


def _positive_int(text: str) -> int:
    try:
        return positive_int(int(text), "the value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None


def _learning_rate(text: str) -> float:
    try:
        return check_learning_rate(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number such as 1e-3, got {text!r}") from None


def _dataset(text: str) -> str:
    try:
        return dataset_info(text).name
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; choose one of: {', '.join(DATASETS)}") from None


def _checkpoint(text: str) -> Path:
    return Path(text).expanduser()


def shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it is inside it (as printed by ``pretrain``), else absolute."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with its default (except where there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (exit code 2), not a usage dump."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=_Help, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with one sub-command per task."""
    parser = _Parser(prog="python -m ptft_helpers", description="ptft: pre-training and fine-tuning helpers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_data_command(sub)
    sub.add_parser("check", help="check the environment and print [OK]/[FAIL] lines")
    _add_pretrain_command(sub)
    _add_finetune_command(sub)
    _add_evaluate_command(sub)
    return parser


def _add_data_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="prepare a dataset in the data folder and say where it came from (the last resort, as root on Debian: "
        "apt-get install dataset-fashion-mnist, which it says before it runs it)",
    )
    p.add_argument("--dataset", type=_dataset, default="fashion-mnist", help="fashion-mnist or mnist")
    p.add_argument("--check", action="store_true", help="only check that it loads, fetching nothing")
    p.add_argument(
        "--kernel",
        default=None,
        help="with --check: check inside this Jupyter kernel, as nbgrader's autograde will load the data "
        "(e.g. python3; default: in this process)",
    )


def _add_pretrain_command(sub: argparse._SubParsersAction) -> None:
    ae, simclr = pretrain_settings(), contrastive_settings()
    p = sub.add_parser(
        "pretrain", help="pretrain an encoder (autoencoder or SimCLR), or load a matching checkpoint; say where it is"
    )
    p.add_argument("--dataset", type=_dataset, default="fashion-mnist", help="fashion-mnist or mnist")
    _add_encoder_options(p)
    _add_recipe_options(p, ae, simclr)
    p.add_argument(
        "--all",
        action="store_true",
        help="pretrain every encoder the notebooks load (their recipes; make checkpoints runs this)",
    )
    p.add_argument(
        "--out",
        type=_checkpoint,
        default=None,
        help="checkpoint path (default: a file named after the settings, in $PTFT_CHECKPOINTS, else in the data "
        "folder's checkpoints/ when writable, else in ~/.cache/ptft/checkpoints/; a fast/ subfolder in fast mode)",
    )


def _add_encoder_options(p: argparse.ArgumentParser) -> None:
    """``pretrain``'s options for what is trained: the architecture, its sizes and the pretext task."""
    p.add_argument(
        "--arch",
        choices=["mlp", "conv", "smallconv", "vit"],
        default=None,
        help="architecture (default: mlp; smallconv, SimCLR's encoder: the only choice for --pretext simclr; "
        "vit, the only choice for --pretext mae)",
    )
    p.add_argument(
        "--latent-dim",
        type=_positive_int,
        default=None,
        help="length of the code z (default: 32); smallconv: 64 x channels; simclr: the projection's (default: 64)",
    )
    p.add_argument(
        "--hidden-dim",
        type=_positive_int,
        default=None,
        help="hidden units (mlp, default 256) or channels (conv, default 16; smallconv, default 32)",
    )
    p.add_argument(
        "--pretext",
        choices=[*PRETEXTS, "simclr", "mae"],
        default="plain",
        help="pretext task (simclr: contrastive, notebook 06; mae: a ViT's masked patches, notebook 08)",
    )


def _add_recipe_options(p: argparse.ArgumentParser, ae: dict, simclr: dict) -> None:
    """``pretrain``'s options for how it is trained; their help shows the autoencoders' (``ae``) and SimCLR's
    (``simclr``) defaults."""
    p.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"passes over the images (default: {ae['epochs']}; simclr {simclr['epochs']})",
    )
    p.add_argument(
        "--train-size",
        type=_positive_int,
        default=None,
        help=f"train on the first N training images (default: {ae['train_size']}; simclr {simclr['train_size']})",
    )
    p.add_argument(
        "--lr",
        type=_learning_rate,
        default=None,
        help=f"Adam's learning rate (default: {ae['lr']:g}; simclr {simclr['lr']:g})",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help=f"the global batch, split over the processes under torchrun (default: {ae['batch_size']}; "
        f"simclr {simclr['batch_size']})",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (initial weights, batch order)")


def _add_finetune_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a pretrained encoder (autoencoder or SimCLR) on a few labels; report test accuracy"
    )
    p.add_argument("checkpoint", type=_checkpoint, help="a checkpoint path, as `pretrain` prints it")
    p.add_argument("--labels", type=_positive_int, default=100, help="number of labelled examples (a multiple of 10)")
    p.add_argument(
        "--mode",
        choices=["probe", "finetune"],
        default="finetune",
        help="probe: frozen encoder; finetune: train it too",
    )
    p.add_argument("--epochs", type=_positive_int, default=50, help="passes over the labelled examples")
    p.add_argument("--lr", type=_learning_rate, default=1e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed (which labels, initial head, batch order)")


def _add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="report a checkpoint's loss on the test set (reconstruction error, or SimCLR's NT-Xent)",
        description="Print, as JSON, the dataset, the pretext, the code size and the loss on the test set: for an "
        "autoencoder, whatever its pretext, the error of reconstructing the clean test images (mse, per pixel); for "
        "SimCLR, which reconstructs nothing, the NT-Xent loss (nt_xent) of two augmented views of each test image, in "
        "batches of its training batch size whose other images are the negatives, and chance, the loss of codes no "
        "better than a guess, log(2 x batch - 1). Lower is better. To score the code on labels, use finetune.",
    )
    p.add_argument("checkpoint", type=_checkpoint, help="a checkpoint path, as `pretrain` prints it")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        progress_enabled()  # every switch is read at once, so a bad value is an error before any work
        parser = build_parser()  # reads PTFT_FAST for the defaults
    except ValueError as err:
        print(f"python -m ptft_helpers: error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, PermissionError) as err:
        # Bad arguments give one-line messages; a missing dataset also lists where it looked and the fixes. Under
        # torchrun every rank meets the same error: rank 0 says it, the others only exit with the same code; an
        # error of one rank's own (a RankError) is said by that rank.
        if os.environ.get("RANK", "0") == "0" or isinstance(err, RankError):
            print(f"{parser.prog} {args.command}: error: {str(err).strip() or type(err).__name__}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "data":
        if args.kernel and not args.check:
            raise ValueError("--kernel goes with --check: python -m ptft_helpers data --check --kernel python3")
        if args.check:
            print(_check_in_kernel(args.kernel, args.dataset) if args.kernel else check(args.dataset))
            return 0
        source = prepare(args.dataset, allow_apt=True)  # the one command that may install the Debian package
        print(data_folder().describe("data"))
        print(f"{args.dataset}: {source}")
        return 0
    if args.command == "check":
        return 0 if print_report(check_environment()) else 1
    if args.command == "pretrain":
        return _pretrain(args)
    if args.command == "evaluate":
        return _evaluate(args.checkpoint)
    return _finetune(args)


def _evaluate(checkpoint: Path) -> int:
    """Print the model's loss on the test set, as JSON (``evaluate --help`` says which loss)."""
    model, meta = load_pretrained(checkpoint)
    test = load(meta["dataset"], "test")
    if isinstance(model, SimCLR):
        recipe = {"batch_size": meta["batch_size"], "temperature": meta["temperature"]}
        scores = evaluate_contrastive(model, test.images, **recipe)
    elif isinstance(model, MaskedAutoencoder):
        scores = {"masked_mse": masked_loss(model, test.images)}
    else:
        scores = evaluate(model, test.images)
    about = {"dataset": meta["dataset"], "pretext": meta["pretext"], "code_size": model.encoder.latent_dim}
    print(json.dumps({**about, **scores}))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    """Train a linear head on the encoder (and the encoder too, unless probing) with a few labels; print the test
    scores as JSON."""
    model, meta = load_pretrained(args.checkpoint)
    train, test = load(meta["dataset"], "train"), load(meta["dataset"], "test")
    idx = balanced_subset(train.labels, args.labels, seed=args.seed)
    with seeded(args.seed):
        vit = isinstance(model, MaskedAutoencoder)
        classifier = ViTClassifier(encoder=model.encoder) if vit else Classifier(model.encoder)
    if args.mode == "probe":
        classifier.freeze_encoder()
    finetune(classifier, train.images[idx], train.labels[idx], epochs=args.epochs, lr=args.lr, seed=args.seed)
    scores = evaluate(classifier, test.images, test.labels)
    print(json.dumps({"labels": args.labels, "mode": args.mode, **scores}))
    return 0


def _check_in_kernel(kernel: str, dataset: str) -> str:
    """Run ``data.check`` inside the Jupyter kernel ``kernel``, in the sandbox that nbgrader's autograde runs each
    hand-in in (``sandbox``); return its line."""
    try:
        import jupyter_client  # noqa: F401 (the sandbox's kernel manager is one of jupyter_client's)
    except ImportError:
        raise ValueError("--kernel needs Jupyter: pip install 'ptft-helpers[teach]' (make assignments does).") from None
    from .sandbox import SandboxError, start_new_kernel

    with tempfile.TemporaryFile("w+") as kernel_log:  # the kernel's own messages, shown only if it fails to start
        try:
            manager, client = start_new_kernel(kernel_name=kernel, startup_timeout=120, stderr=kernel_log)
        except SandboxError as err:
            raise ValueError(str(err)) from None
        except Exception as err:  # no such kernel, or one that does not start
            kernel_log.seek(0)
            last = ([line for line in kernel_log.read().splitlines() if line.strip()] or [""])[-1]
            detail = f"{type(err).__name__}: {err}" + (f"; {last}" if last else "")
            raise ValueError(f"the Jupyter kernel {kernel!r} does not start ({detail}).") from None
    printed, errors = [], []

    def collect(message: dict) -> None:
        content = message["content"]
        if message["msg_type"] == "stream":
            printed.append(content["text"])
        elif message["msg_type"] == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    code = f"from ptft_helpers.data import check\nprint(check({dataset!r}))"
    try:
        client.execute_interactive(code, output_hook=collect, timeout=300)
    except (TimeoutError, RuntimeError) as err:  # a kernel that hangs, or dies while checking
        detail = f"{type(err).__name__}: {err}"
        raise ValueError(f"the Jupyter kernel {kernel!r} did not finish the check ({detail}).") from None
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    if errors:
        raise ValueError(f"in the Jupyter kernel {kernel!r} (the one grading uses): {errors[0]}")
    return f"{''.join(printed).strip()}, in the Jupyter kernel {kernel!r}"


def _pretrain(args: argparse.Namespace) -> int:
    """Load or train; print one line saying where the checkpoint is, then its summary as JSON. Under torchrun, every
    rank trains its share and rank 0 prints and writes."""
    world = World.start()  # None unless torchrun started this process
    try:
        if args.all:
            _pretrain_all(args, world)
        else:
            _pretrain_one(args.dataset, world, **_options(args))
    except BaseException:
        if world is not None:
            world.stop(wait=False)  # the other ranks may not get to stop()
        raise
    if world is not None:
        world.stop()
    return 0


def _pretrain_all(args: argparse.Namespace, world: World | None) -> None:
    """Every encoder of ``series_encoders()``, each with its own recipe (so no recipe option may be given)."""
    defaults = {
        "arch": None,
        "latent_dim": None,
        "hidden_dim": None,
        "epochs": None,
        "train_size": None,
        "lr": None,
        "batch_size": None,
        "out": None,
        "pretext": "plain",
        "seed": 0,
    }
    if chosen := [name.replace("_", "-") for name, value in defaults.items() if getattr(args, name) != value]:
        raise ValueError(f"--all takes each encoder's own recipe: leave out {', '.join('--' + o for o in chosen)}.")
    for options in series_encoders():
        _pretrain_one(args.dataset, world, **options)


def _options(args: argparse.Namespace) -> dict:
    """``load_or_pretrain``'s options from the command line (SimCLR's architecture and sizes by default)."""
    simclr = args.pretext == "simclr"
    arch = args.arch or {"simclr": "smallconv", "mae": "vit"}.get(args.pretext, "mlp")
    return {
        "pretext": args.pretext,
        "arch": arch,
        "latent_dim": args.latent_dim or (64 if simclr else None if arch in ("smallconv", "vit") else 32),
        "hidden_dim": args.hidden_dim,
        "seed": args.seed,
        "path": args.out,
        **{k: getattr(args, k) for k in ("epochs", "train_size", "lr", "batch_size") if getattr(args, k) is not None},
    }


def _pretrain_one(dataset: str, world: World | None, **options) -> None:
    started = time.time_ns()
    result = load_or_pretrain(dataset, world=world, **options)
    if world is not None and world.rank != 0:
        return
    meta = result.metadata
    keys = ("dataset", "pretext", "epochs", "final_train_loss", "final_test_loss")
    summary = {k: meta[k] for k in keys if k in meta}  # SimCLR has no test loss
    saved = result.path.stat().st_mtime_ns >= started  # written during this run (else found, made earlier)
    print(f"{'Saved' if saved else 'Found'} the checkpoint: {shown_path(result.path)}", flush=True)
    print(json.dumps({**summary, "checkpoint": shown_path(result.path)}), flush=True)

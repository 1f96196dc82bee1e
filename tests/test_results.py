"""Every run's row: saved atomically to the results folder, read back with its types, found again later."""

import json
import os

import pytest

from ptft_helpers import results

ROWS = [{"method": "scratch", "seed": 0, "test_acc": 0.5, "val_counts": True}, {"method": "probe", "seed": 1}]


@pytest.fixture
def results_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PTFT_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("PTFT_FAST", raising=False)
    return tmp_path / "results"


def test_rows_and_machine_record_round_trip(results_env):
    path = results.save_results(ROWS, "07_example", {"cpu": "x", "protocol": {"seeds": (1, 2)}})
    assert path == results_env / "07_example.csv"
    assert results.load_rows(path) == ROWS  # numbers and booleans come back as such; empty cells are dropped
    assert json.loads((results_env / "07_example.json").read_text()) == {"cpu": "x", "protocol": {"seeds": [1, 2]}}
    assert sorted(p.name for p in results_env.iterdir()) == ["07_example.csv", "07_example.json"]  # no temp files


def test_fast_runs_save_beside_not_over_a_full_run(results_env, monkeypatch):
    results.save_results(ROWS, "07_example", {})
    monkeypatch.setenv("PTFT_FAST", "1")
    fast = results.save_results(ROWS[:1], "07_example", {})
    assert fast == results_env / "fast" / "07_example.csv"
    assert results.full_run_rows("07_example") == ROWS  # the full run's, even in fast mode
    assert results.latest_rows("07_example") == results.load_rows(fast)  # this mode's own run first
    monkeypatch.delenv("PTFT_FAST")
    assert results.latest_rows("07_example") == ROWS


def test_a_full_run_is_found_in_the_clone_when_not_run_here(results_env):
    stored = results.full_run_rows("05_label_efficiency")  # not in PTFT_RESULTS: the clone's stored results/
    assert stored is not None and {r["labels"] for r in stored} == {20, 50, 100, 500, 1000}
    assert results.full_run_rows("no_such_notebook") is None


def test_an_unwritable_results_folder_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PTFT_RESULTS", "/sys/ptft-results")
    monkeypatch.delenv("PTFT_FAST", raising=False)
    with pytest.raises(PermissionError, match=r"^Cannot save /sys/ptft-results/x.csv: .*Set PTFT_RESULTS"):
        results.save_results(ROWS, "x", {})


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(results_env):
    path = results.save_results(ROWS, "07_example", {})
    before = path.read_bytes()

    def write_half(f):
        f.write("labels,seed\n1,")
        raise ValueError("stopped mid-write")

    with pytest.raises(ValueError, match="stopped mid-write"):
        results._write_atomically(path, write_half)
    assert path.read_bytes() == before
    assert sorted(p.name for p in results_env.iterdir()) == ["07_example.csv", "07_example.json"]


def test_saved_files_get_the_users_umask(results_env):
    old = os.umask(0o027)
    try:
        path = results.save_results(ROWS, "07_example", {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640

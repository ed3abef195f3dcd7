import json
import subprocess
import sys

import pandas as pd
import pytest

from studies import reconstruction as study
from xnorpp_core.reconstruction import RECONSTRUCTION_METHODS

SMALL = ["--trials", "3", "--out-channels", "4", "--in-channels", "6", "--input-size", "8"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("table2")
    study.main(SMALL + ["--out", str(out)])
    return out


def test_small_run_writes_well_formed_files(small_run):
    table = pd.read_csv(small_run / "table2.csv")
    for column in ("method", "l1_mean", "l1_std", "rel_l1_mean", "steps_mean", "gap_to_optimum",
                   "paper_l1_mean", "paper_l1_std"):
        assert column in table.columns
    assert list(table.method) == list(RECONSTRUCTION_METHODS)
    by = table.set_index("method")
    assert by.loc["case1", "paper_l1_mean"] == 0.038
    assert pd.isna(by.loc["case2", "paper_l1_mean"]) and pd.isna(by.loc["xnor_alpha", "paper_l1_mean"])
    assert (by.loc[["case1", "case2", "case3", "case4"], "gap_to_optimum"] < 1e-3).all()
    assert (by.loc[["direct", "xnor", "xnor_alpha"], "steps_mean"] == 0).all()
    trials = pd.read_csv(small_run / "trials.csv")
    assert list(trials.columns[:5]) == ["trial", "method", "l1", "rel_l1", "steps"]
    assert len(trials) == 3 * len(RECONSTRUCTION_METHODS)
    summary = trials.groupby("method")["l1"].mean()
    assert summary["case1"] == pytest.approx(by.loc["case1", "l1_mean"])
    run = json.loads((small_run / "run.json").read_text())
    assert run["config"]["trials"] == 3 and run["config"]["seed"] == 0
    assert "torch" in run["environment"]["versions"] and run["wall_seconds"] > 0
    md = (small_run / "table2.md").read_text()
    assert "| case4" in md and "0.035 ± 0.001" in md
    assert (small_run / "table2.png").stat().st_size > 0


def test_same_command_gives_the_same_numbers(small_run, tmp_path):
    study.main(SMALL + ["--out", str(tmp_path)])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "trials.csv"), pd.read_csv(small_run / "trials.csv"))


def test_case1_never_beats_its_exact_optimum_and_learned_beat_direct(small_run):
    trials = pd.read_csv(small_run / "trials.csv").pivot(index="trial", columns="method", values="l1")
    assert (trials["case1"] <= trials["xnor_alpha"] + 1e-6).all()  # alpha is one feasible Case 1 scale
    assert (trials["case2"] <= trials["case1"]).all() and (trials["case1"] < trials["direct"]).all()


@pytest.mark.parametrize("argv", [
    ["--trials", "0"], ["--trials", "abc"], ["--seed", "-1"], ["--padding", "5"], ["--loss", "l3"],
    ["--pad-mode", "reflect"], ["--device", "tpu"], ["--kernel-size", "0"], ["--bogus", "1"],
])
def test_bad_options_exit_2_with_one_line_and_write_nothing(argv, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as err:
        study.main(argv + ["--out", str(out)])
    assert err.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0]
    assert not out.exists()


def test_command_line_entry_point(tmp_path):
    out = tmp_path / "out"
    bad = subprocess.run([sys.executable, "-m", "studies.reconstruction", "--loss", "l3", "--out", str(out)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and not out.exists()


def test_result_files_get_the_usual_mode_of_a_new_file(small_run):
    import os
    umask = os.umask(0)
    os.umask(umask)
    assert (small_run / "table2.csv").stat().st_mode & 0o777 == 0o666 & ~umask

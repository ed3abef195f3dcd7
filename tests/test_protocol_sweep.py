"""``python -m studies.protocol_sweep`` on a tiny grid: outputs, citations, evidence, computed sentences, bad options."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from studies import protocol_sweep
from xnorpp_core.report.protocol_analysis import analysis

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--shape", "8x8x3x3@6", "8x8x1x1@6", "--inputs", "gaussian", "uniform", "--padding", "0", "--losses", "l1",
        "--weights", "unit", "small", "--train-inputs", "1", "3", "--trials", "3", "--heldout-inputs", "2",
        "--starts", "2", "--crosses", "weights:shape"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "protocol_sweep"
    protocol_sweep.main(TINY + ["--out", str(out), "--threads", str(torch.get_num_threads())])  # no side effect
    return out


def test_writes_every_output(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert {"sweep.csv", "claims.csv", "cells.csv", "README.md", "run.json", "xnor_over_case1.png",
            "generalisation.png", "inputs.png", "scale.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    run = json.loads((tiny_run / "run.json").read_text())
    assert run["config"]["trials"] == 3 and run["config"]["seed"] == 0 and "versions" in run["environment"]
    cells = pd.read_csv(tiny_run / "cells.csv")
    sweep = pd.read_csv(tiny_run / "sweep.csv")
    assert set(sweep.cell_id) == set(cells.cell_id) and sweep.row_id.is_unique


def test_every_fit_carries_its_evidence(tiny_run):
    sweep = pd.read_csv(tiny_run / "sweep.csv")
    fits = sweep[sweep.gap_max.notna()]
    assert len(fits) == 4 * sweep.cell_id.nunique()
    assert (fits.gap_max <= 1e-3).all() and fits.within_tolerance.all()
    exact = fits.method.isin(["case1", "case2"])
    assert (fits[exact].evidence == "exact").all() and (fits[exact].gap_min >= -1e-6).all()
    assert (fits[~exact].evidence == "best of 2 independent starts; lower bound from Case 2").all()
    assert (fits[~exact].gap_to_bound_min >= -1e-6).all()


def test_every_citation_in_the_analysis_is_a_row(tiny_run):
    text = (tiny_run / "README.md").read_text()
    sweep = set(pd.read_csv(tiny_run / "sweep.csv").row_id)
    claims = set(pd.read_csv(tiny_run / "claims.csv").claim_id)
    cited = [i for group in re.findall(r"\[([^\]]+)\]", text) for i in group.split(", ")]
    cited = [i for i in cited if re.fullmatch(r"c\d+/.+", i)]
    assert len(cited) > 20
    assert [i for i in cited if i not in sweep | claims] == []
    # the table rows name their row ids too
    assert [i for i in re.findall(r"\| (c\d+/\w+/\w+/l[12]) \|", text) if i not in sweep] == []


def test_cited_numbers_are_the_csv_values(tiny_run):
    """Spot-check: the paper-protocol table prints the CSV's mean for each row it names."""
    text = (tiny_run / "README.md").read_text()
    sweep = pd.read_csv(tiny_run / "sweep.csv").set_index("row_id")
    rows = re.findall(r"\| [^|]+ \| [^|]+ \| ([-\d.e]+) ± [^|]+ \|.*\| (c00/\w+/train/l1) \|", text)
    assert len(rows) == 8
    for value, row_id in rows:
        assert float(value) == pytest.approx(sweep.at[row_id, "mean"], rel=5e-3)


@pytest.mark.parametrize("args,message", [
    (["--inputs", "gaussian", "cauchy"], "invalid choice: 'cauchy'"),
    (["--shape", "64x64x3@16"], "is not of the form OxCxKxK@H"),
    (["--train-inputs", "1", "x"], "--train-inputs must be an integer from 1 to 4096, got 'x'"),
    (["--inputs", "gaussian", "gaussian"], "error: --inputs needs a non-empty tuple of distinct values"),
    (["--crosses", "inputs"], "a cross is AXIS:AXIS, got 'inputs'"),
    (["--train-inputs", "0"], "error: --train-inputs must be an integer from 1 to"),
    (["--crosses", "inputs:colour"], "--crosses must be pairs of distinct axes"),
    (["--trials", "0"], "error: --trials must be an integer from 1 to"),
    (["--fit-lr", "-1"], "error: --fit-lr must be a number in (0, 100], got '-1'"),
    (["--fit-patience", "0"], "error: --fit-patience must be an integer from 1 to"),
    (["--trials", "two"], "--trials must be an integer from 1 to 100000, got 'two'"),
    (["--threads", "0"], "error: --threads must be an integer from 1 to"),
    (["--out", "/proc/xnorpp-no-such-folder"], "cannot write there"),
])
def test_bad_options_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        protocol_sweep.main(["--out", str(out)] + args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_the_command_line_entry_point(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "studies.protocol_sweep", "--out", str(out), "--shape", "64x64x3@16"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("python -m studies.protocol_sweep: error: --shape '64x64x3@16' is not of the form")
    assert not out.exists()


# --- every finding of the analysis is chosen by the numbers: reverse the numbers, the sentence reverses ---


@pytest.fixture(scope="module")
def tables(tiny_run):
    config = protocol_sweep.parse_args(TINY + ["--out", str(tiny_run)])[0]
    run_info = json.loads((tiny_run / "run.json").read_text())
    return [pd.read_csv(tiny_run / name) for name in ("sweep.csv", "claims.csv", "cells.csv")] + [config, run_info]


def _text(sweep, claims, cells, config, run_info):
    return analysis(sweep, claims, cells, config, run_info)


def _set(frame, key, value, column, new):
    frame = frame.copy()
    frame.loc[frame[key] == value, column] = new
    return frame


def test_the_ratio_finding_follows_the_ratios(tables):
    sweep, claims, cells, config, run_info = tables
    assert "XNOR / Case 1 of 2.5: not reproduced in any cell" in _text(*tables)
    raised = _set(claims, "claim_id", "c00/heldout/l1", "xnor_over_case1", 3.0)
    assert "XNOR / Case 1 of 2.5: reached in 1 of" in _text(sweep, raised, cells, config, run_info)


def test_the_case2_finding_follows_its_distance(tables):
    sweep, claims, cells, config, run_info = tables
    assert "reproduces Y on the single input it is fitted to" in _text(*tables)
    worse = _set(sweep, "row_id", "c00/case2/train/l1", "rel", 0.5)
    assert "does not reproduce Y even on the input it is fitted to" in _text(worse, claims, cells, config, run_info)


def test_the_uniform_finding_follows_its_interval(tables):
    sweep, claims, cells, config, run_info = tables
    uni = cells[cells.inputs == "uniform"].cell_id.iloc[0]
    sure = _set(_set(claims, "claim_id", f"{uni}/train/l1", "xnor_over_case1", 1.5), "claim_id",
                f"{uni}/train/l1", "xnor_over_case1_std", 0.01)
    assert "break the equality" in _text(sweep, sure, cells, config, run_info)
    unsure = _set(sure, "claim_id", f"{uni}/train/l1", "xnor_over_case1", 1.0)
    text = _text(sweep, unsure, cells, config, run_info)
    assert "break the equality" not in text and "do not put XNOR-Net above Case 1 here" in text


def test_the_case3_finding_follows_the_fits(tables):
    sweep, claims, cells, config, run_info = tables
    rows = {f"c00/{m}/{s}/l1": v for m, s, v in (("case3", "train", 1.0), ("case1", "train", 2.0),
                                                  ("case3", "heldout", 3.0), ("case1", "heldout", 2.5))}
    beats = sweep.copy()
    for row_id, v in rows.items():
        beats.loc[beats.row_id == row_id, "mean"] = v
    assert "Case 3 beats Case 1 only on the input it was fitted to" in _text(beats, claims, cells, config, run_info)
    beats.loc[beats.row_id == "c00/case3/heldout/l1", "mean"] = 2.0  # now better held out too
    text = _text(beats, claims, cells, config, run_info)
    assert "only on the input it was fitted to" not in text and "Case 3 against Case 1: 1 against 2" in text


def test_the_evidence_findings_follow_the_gaps(tables):
    sweep, claims, cells, config, run_info = tables
    search = sweep.evidence.astype(str).str.startswith("best of")
    above, below = sweep.copy(), sweep.copy()
    above.loc[search, "gap_min"] = 1e-5
    below.loc[search, "gap_min"] = -1e-3
    assert "Adam never ends below the best start." in _text(above, claims, cells, config, run_info)
    text = _text(below, claims, cells, config, run_info)
    assert "Adam never ends below" not in text and "the alternating search stalls above Adam's loss" in text
    outside = sweep.copy()
    outside.loc[sweep.row_id == "c00/case1/train/l1", "within_tolerance"] = False
    n = int(sweep.evidence.eq("exact").sum())
    assert f"Fits: {n} of {n} Case 1-2 fits within" in _text(*tables)
    assert f"Fits: {n - 1} of {n} Case 1-2 fits within" in _text(outside, claims, cells, config, run_info)
def test_ratio_figure_names_the_conditions(tiny_run, tmp_path):
    from xnorpp_core.report.protocol_analysis import figures

    config, _, _ = protocol_sweep.parse_args(TINY + ["--out", str(tmp_path / "unused")])
    frames = [pd.read_csv(tiny_run / f"{name}.csv") for name in ("sweep", "claims", "cells")]
    fig = figures(*frames, config)["xnor_over_case1.png"]
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    cells = frames[2]
    assert len(labels) == len(cells) and labels[0].startswith("base")
    assert any(label.startswith("weights small") for label in labels) and any("shape 8x8x1x1@6" in label
                                                                               for label in labels)

"""``python -m studies.protocol_sweep`` on a tiny grid: outputs, citations, certificates, bad options."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from studies import protocol_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--shape", "8x8x3x3@6", "8x8x1x1@6", "--inputs", "gaussian", "uniform", "--padding", "0", "--losses", "l1",
        "--weights", "unit", "small", "--train-inputs", "1", "3", "--trials", "3", "--heldout-inputs", "2",
        "--restarts", "2", "--crosses", "weights:shape"]


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


def test_every_fit_is_certified(tiny_run):
    sweep = pd.read_csv(tiny_run / "sweep.csv")
    fits = sweep[sweep.gap_max.notna()]
    assert len(fits) == 4 * sweep.cell_id.nunique()
    assert (fits.gap_max <= 1e-3).all() and fits.certified.all()


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
    (["--train-inputs", "1", "x"], "argument --train-inputs: invalid int value: 'x'"),
    (["--inputs", "gaussian", "gaussian"], "needs a non-empty tuple of distinct values"),
    (["--crosses", "inputs"], "a cross is AXIS:AXIS, got 'inputs'"),
    (["--train-inputs", "0"], "train_inputs must be a positive integer"),
    (["--crosses", "inputs:colour"], "a cross is a pair of distinct axes"),
    (["--trials", "0"], "trials must be a positive integer"),
    (["--fit-lr", "-1"], "invalid FitConfig"),
    (["--trials", "two"], "invalid int value"),
    (["--threads", "0"], "--threads: must be a positive integer"),
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
    assert proc.stderr.startswith("python -m studies.protocol_sweep: error: shape '64x64x3@16' is not of the form")
    assert not out.exists()


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

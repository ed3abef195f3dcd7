import json
import subprocess
import sys

import pandas as pd
import pytest

from studies import reconstruction as study
import numpy as np
import torch

from xnorpp_core.reconstruction import RECONSTRUCTION_METHODS
from xnorpp_core.reconstruction.table2 import ReconstructionConfig, bound_note, score_trials, summarize

SMALL = ["--trials", "3", "--out-channels", "4", "--in-channels", "6", "--input-size", "8"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("table2")
    study.main(SMALL + ["--out", str(out)])
    return out


def test_small_run_writes_well_formed_files(small_run):
    table = pd.read_csv(small_run / "table2.csv")
    for column in ("method", "l1_mean", "l1_std", "rel_l1_mean", "steps_mean", "evidence", "gap_min", "gap_max",
                   "starts", "starts_near_best_min", "lower_bound_mean", "gap_to_bound_min", "paper_l1_mean",
                   "paper_l1_std"):
        assert column in table.columns
    assert list(table.method) == list(RECONSTRUCTION_METHODS)
    by = table.set_index("method")
    assert by.loc["case1", "paper_l1_mean"] == 0.038
    assert pd.isna(by.loc["case2", "paper_l1_mean"]) and pd.isna(by.loc["xnor_alpha", "paper_l1_mean"])
    learned = ["case1", "case2", "case3", "case4"]
    assert (by.loc[learned, "gap_max"] < 1e-3).all() and (by.loc[["case1", "case2"], "gap_min"] >= -1e-6).all()
    assert list(by.loc[learned, "evidence"]) == ["exact"] * 2 + [
        "best of 8 independent starts; lower bound from Case 2"] * 2
    assert by.loc[["direct", "xnor", "xnor_alpha"], "evidence"].isna().all()
    # on this seed Adam ends below every alternating start in some Case 3 trial: the gap is not clamped at 0
    assert by.loc["case3", "gap_min"] < 0
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
    ["--padding", "1-reflect"], ["--device", "tpu"], ["--kernel-size", "0"], ["--bogus", "1"],
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


# --- every column against an independent computation on hand-built trials ----------------------------


def _conv(x, w):
    """Cross-correlation by loops: x (c, H, W), w (o, c, k, k) -> (o, H - k + 1, W - k + 1)."""
    o, _, k, _ = w.shape
    h, v = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((o, h, v))
    for f, i, j in np.ndindex(o, h, v):
        out[f, i, j] = (x[:, i:i + k, j:j + k] * w[f]).sum()
    return out


def _sign(a):
    return np.where(a >= 0, 1.0, -1.0)


def _best_l1(c, y):
    """min_a sum |c a - y| over the data ratios (c != 0), plus sum |y| where c = 0."""
    nz = c != 0
    return min(np.abs(c * a - y).sum() for a in y[nz] / c[nz]) if nz.any() else np.abs(y).sum()


@pytest.fixture(scope="module")
def hand_built():
    rng = np.random.default_rng(7)
    w, x = rng.normal(size=(2, 2, 4, 3, 3)), rng.normal(size=(2, 4, 5, 5))  # 36 signs: B can be 0
    config = ReconstructionConfig(trials=2, out_channels=2, in_channels=4, input_size=5)
    trials, _ = score_trials(torch.tensor(w, dtype=torch.float32), torch.tensor(x, dtype=torch.float32), config,
                             progress=False)
    return w, x, trials.set_index(["trial", "method"])


def test_every_column_on_hand_built_trials(hand_built):
    w, x, trials = hand_built
    for t in range(2):
        y, b = _conv(x[t], w[t]), _conv(_sign(x[t]), _sign(w[t]))  # (2, 3, 3)
        alpha = np.abs(w[t]).mean((1, 2, 3))[:, None, None]  # (o, 1, 1)
        k = _conv(np.abs(x[t]).mean(0, keepdims=True), np.full((1, 1, 3, 3), 1 / 9))  # (1, 3, 3)
        mean_abs_y = np.abs(y).mean()
        for method, pred in (("direct", b), ("xnor", b * alpha * k), ("xnor_alpha", b * alpha)):
            row = trials.loc[(t, method)]
            assert row.l1 == pytest.approx(np.abs(pred - y).mean(), rel=1e-5)
            assert row.rel_l1 == pytest.approx(np.abs(pred - y).mean() / mean_abs_y, rel=1e-5)
            assert row.steps == 0 and pd.isna(row.gap) and pd.isna(row.evidence)
        case1 = sum(_best_l1(b[f].ravel(), y[f].ravel()) for f in range(2)) / y.size
        case2 = np.abs(y[b == 0]).sum() / y.size  # every output with B != 0 is reproduced exactly
        assert (b == 0).any(), "the hand-built trial should have outputs no Gamma reaches"
        row = trials.loc[(t, "case1")]
        assert row.steps > 0 and row.evidence == "exact"
        assert row.reference == pytest.approx(case1, rel=1e-6)
        assert row.gap == pytest.approx((row.l1 - case1) / case1, abs=1e-5)  # the L1 fit: l1 is Adam's loss
        assert row.rel_l1 == pytest.approx(row.l1 / mean_abs_y, rel=1e-6)
        assert trials.loc[(t, "case2")].reference == pytest.approx(case2, rel=1e-6)
        for method in ("case3", "case4"):
            row = trials.loc[(t, method)]
            assert row.lower_bound == pytest.approx(case2, rel=1e-6) and row.starts == 8
            assert row.gap_to_bound == pytest.approx((row.l1 - case2) / case2, rel=1e-5)
            assert row.gap == pytest.approx((row.l1 - row.reference) / row.reference, abs=1e-5)
            assert 1 <= row.starts_near_best <= 8


def test_the_summary_of_hand_built_trials(hand_built):
    _, _, trials = hand_built
    table = summarize(trials.reset_index()).set_index("method")
    for method in ("case1", "case3"):
        rows = trials.xs(method, level="method")
        assert table.at[method, "gap_min"] == rows.gap.min() and table.at[method, "gap_max"] == rows.gap.max()
        assert table.at[method, "rel_l1_mean"] == pytest.approx(rows.rel_l1.mean())
        assert table.at[method, "lower_bound_mean"] == pytest.approx(rows.lower_bound.mean())
    assert table.at["case3", "starts_near_best_min"] == trials.xs("case3", level="method").starts_near_best.min()


def test_table2_page_states_how_far_the_lower_bound_is_below_adam():
    table = pd.DataFrame({"method": ["case1", "case3", "case4"], "gap_to_bound_mean": [5e-8, 28.6, 0.5]})
    note = bound_note(table)
    assert "29.6x the bound for case3 and 1.5x the bound for case4" in note
    assert "case1" not in note
    assert bound_note(table.drop(columns="gap_to_bound_mean")) == ""

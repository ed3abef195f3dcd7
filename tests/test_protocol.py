"""The protocol grid, one cell's run, the evidence on its fits and its tidy rows."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from xnorpp_core.reconstruction.protocol import (LEARNED, METHODS, PAPER_ORDER, Cell, SweepConfig, _draw, cell_rows, claim_rows,
                                  parse_padding, parse_shape, run_cell)
from xnorpp_core.reconstruction import FitConfig, layer_outputs

TINY = dict(shape=("8x6x3x3@6",), trials=3, heldout_inputs=2, starts=2)


def _tiny(**changes):
    return SweepConfig(**{**TINY, "crosses": (), **changes})


def test_parsers():
    assert parse_shape("64x64x3x3@16") == (64, 64, 3, 16)
    assert parse_padding("0") == (0, "zero") and parse_padding("1-minus_one") == (1, "minus_one")
    for bad in ("64x64x3@16", "64x64x3x5@16", "64x64x3x3", "axbxcxd@3", "8x8x9x9@4"):
        with pytest.raises(ValueError, match="shape"):
            parse_shape(bad)
    with pytest.raises(ValueError, match="unknown padding '2'"):
        parse_padding("2")


@pytest.mark.parametrize("field,value,message", [
    ("weights", "xavier", "unknown weight scale"), ("inputs", "cauchy", "unknown input distribution"),
    ("fit_loss", "huber", "unknown fit loss"), ("train_inputs", 0, "train_inputs must be"),
    ("padding", "2-zero", "unknown padding"), ("shape", "8x8x7x7@6", "shape")])
def test_cell_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        Cell(**{field: value})


@pytest.mark.parametrize("changes,message", [
    ({"inputs": ()}, "non-empty tuple"), ({"inputs": ("gaussian", "gaussian")}, "distinct"),
    ({"inputs": ("gaussian", "cauchy")}, "unknown input"),
    ({"crosses": (("inputs", "colour"),)}, "crosses must be pairs of distinct"),
    ({"trials": 0}, "trials"), ({"seed": -1}, "seed"), ({"tolerance": 0.0}, "tolerance"), ({"fit": 0.1}, "FitConfig"),
    ({"starts": 0}, "starts")])
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError, match=message):
        SweepConfig(**changes)


def test_star_and_crosses():
    config = SweepConfig(weights=("unit", "he"), inputs=("gaussian", "relu", "uniform"), padding=("0",),
                         fit_loss=("l1", "l2"), shape=("8x6x3x3@6",), train_inputs=(1, 2),
                         crosses=(("inputs", "fit_loss"),))
    cells = config.cells()
    assert cells[0] == config.base == Cell(shape="8x6x3x3@6")
    assert len(cells) == len(set(cells))
    star = 1 + 1 + 2 + 1 + 1  # base + the other value of each axis
    assert len(cells) == star + 3 * 2 - 1 - 2 - 1  # the cross minus cells already in the star
    assert {(c.inputs, c.fit_loss) for c in cells if c.weights == "unit" and c.train_inputs == 1} == {
        (i, f) for i in ("gaussian", "relu", "uniform") for f in ("l1", "l2")}


def test_cells_share_their_draws():
    """Held-out inputs do not depend on N, and the first training input does not either."""
    config = _tiny()
    w1, train1, held1 = _draw(Cell(shape="8x6x3x3@6", train_inputs=1), config)
    w3, train3, held3 = _draw(Cell(shape="8x6x3x3@6", train_inputs=3), config)
    torch.testing.assert_close(w1, w3)
    torch.testing.assert_close(held1, held3)
    torch.testing.assert_close(train1[:, 0], train3[:, 0])


@pytest.fixture(scope="module")
def base_result():
    config = _tiny()
    return config, run_cell(config.base, config)


def test_run_cell_scores_every_method(base_result):
    config, result = base_result
    d = result["distance"]
    assert {m for m, _, _ in d} == set(METHODS)
    w, train, held = _draw(config.base, config)
    y, b, alpha, k = layer_outputs(w, held)
    np.testing.assert_allclose(d[("zero", "heldout", "l1")], y.abs().mean((1, 2, 3, 4)), rtol=1e-6)
    np.testing.assert_allclose(d[("xnor", "heldout", "l2")], (b * alpha * k - y).square().mean((1, 2, 3, 4)),
                               rtol=1e-5)


def _brute_case1(b, y):
    """Exact L1 Case 1 optimum by numpy: per (trial, channel), the best of the ratios y / b."""
    b = b.double().numpy().transpose(0, 2, 1, 3, 4).reshape(b.shape[0], b.shape[2], -1)
    y = y.double().numpy().transpose(0, 2, 1, 3, 4).reshape(b.shape)
    best = np.zeros(b.shape[:2])
    for i, j in np.ndindex(*best.shape):
        nz = b[i, j] != 0
        best[i, j] = min(np.abs(b[i, j] * a - y[i, j]).sum() for a in y[i, j][nz] / b[i, j][nz])
    return best.sum(1) / y[0].size


def test_evidence_on_a_tiny_grid(base_result):
    config, result = base_result
    for case in LEARNED:
        e = result["evidence"][case]
        assert (e["gap"] <= config.tolerance).all(), case
        torch.testing.assert_close(e["gap_to_bound"] >= -1e-6, torch.ones_like(e["gap"], dtype=torch.bool))
    for case in ("case1", "case2"):
        assert (result["evidence"][case]["gap"] >= -1e-6).all()  # nothing beats an exact optimum
    w, train, _ = _draw(config.base, config)
    y, b, _, _ = layer_outputs(w, train)
    np.testing.assert_allclose(result["evidence"]["case1"]["reference"], _brute_case1(b, y), rtol=1e-5)
    np.testing.assert_allclose(result["distance"][("case1", "train", "l1")], _brute_case1(b, y), rtol=1e-3)
    # Adam's loss in the evidence is the distance of its Gamma, in the units of Y
    np.testing.assert_allclose(result["evidence"]["case3"]["adam"], result["distance"][("case3", "train", "l1")],
                               rtol=1e-5)


def test_an_unconverged_fit_is_outside_the_tolerance_with_its_signed_gap():
    config = _tiny(fit=FitConfig(max_steps=3))
    result = run_cell(config.base, config)
    rows = pd.DataFrame(cell_rows("c00", config.base, result, config))
    fits = rows.dropna(subset=["gap_max"])
    assert len(fits) == len(LEARNED) and (fits.within_tolerance == False).all()  # noqa: E712
    assert (fits.gap_min > config.tolerance).all()  # three Adam steps from Gamma = 1: above every reference


@pytest.mark.parametrize("weights", ["he", "small"])
def test_scaled_methods_are_equivariant_direct_is_not(base_result, weights):
    config, unit = base_result
    cell = dataclasses.replace(config.base, weights=weights)
    scaled = run_cell(cell, config)
    std = {"he": (2 / 54) ** 0.5, "small": 0.01}[weights]
    for m in ("zero", "xnor", "xnor_alpha") + LEARNED:
        for split in ("train", "heldout"):
            ratio = scaled["distance"][(m, split, "l1")] / unit["distance"][(m, split, "l1")]
            np.testing.assert_allclose(ratio, std, rtol=2e-3, err_msg=f"{m} {split}")
    ratio = scaled["distance"][("direct", "train", "l1")] / unit["distance"][("direct", "train", "l1")]
    assert (ratio > 2 * std).all()


def test_rows_are_tidy_and_carry_the_evidence(base_result):
    config, result = base_result
    rows = pd.DataFrame(cell_rows("c00", config.base, result, config))
    assert rows.row_id.is_unique and len(rows) == len(METHODS) * 2 * 2
    fits = rows[rows.gap_max.notna()].set_index("method")
    assert sorted(fits.index) == sorted(LEARNED) and (fits.split == "train").all() and (fits.metric == "l1").all()
    assert (fits.within_tolerance == True).all()  # noqa: E712
    assert list(fits.evidence) == ["exact", "exact"] + ["best of 2 independent starts; lower bound from Case 2"] * 2
    assert fits.starts.isna().tolist() == [True, True, False, False]
    assert (fits.loc[["case3", "case4"], "starts"] == 2).all()
    for case in LEARNED:
        e = result["evidence"][case]
        assert fits.at[case, "gap_min"] == e["gap"].min().item() and fits.at[case, "gap_max"] == e["gap"].max().item()
        assert fits.at[case, "lower_bound"] == pytest.approx(e["lower_bound"].mean().item())
    # the lower bound of Cases 3-4 is the exact Case 2 optimum on the same inputs
    assert fits.at["case3", "lower_bound"] == pytest.approx(fits.at["case2", "reference"], rel=1e-12)
    zero = rows[rows.method == "zero"]
    assert np.allclose(zero.rel, 1) and rows.expected.notna().sum() > 20


def test_claims_on_hand_made_distances():
    t = 4
    d = {}
    for split in ("train", "heldout"):
        for metric in ("l1", "l2"):
            for m in METHODS:
                d[(m, split, metric)] = torch.full((t,), 1.0)
            for i, m in enumerate(PAPER_ORDER):  # direct 5 > xnor 4 > case1 3 > case3 2 > case4 1
                d[(m, split, metric)] = torch.full((t,), 5.0 - i)
    d[("case3", "train", "l1")] = torch.tensor([2.0, 2.0, 0.5, 0.5])  # broken in 2 trials of 4, not in the mean
    d[("case4", "train", "l2")] = torch.full((t,), 2.5)  # broken in every trial
    claims = {r["claim_id"]: r for r in claim_rows("c07", Cell(), {"distance": d})}
    assert claims["c07/heldout/l1"]["paper_order"] and claims["c07/heldout/l1"]["paper_order_trials"] == 1
    assert claims["c07/train/l1"]["paper_order"] and claims["c07/train/l1"]["paper_order_trials"] == 0.5
    assert claims["c07/train/l1"]["order"] == "direct > xnor > case1 > case3 > case4"  # mean 1.25 > 1
    assert not claims["c07/train/l2"]["paper_order"] and claims["c07/train/l2"]["paper_order_trials"] == 0
    assert claims["c07/train/l2"]["order"] == "direct > xnor > case1 > case4 > case3"
    assert claims["c07/train/l2"]["xnor_over_case1"] == pytest.approx(4 / 3)
    assert claims["c07/train/l1"]["xnor_over_case1_expected"] == pytest.approx(1.0)

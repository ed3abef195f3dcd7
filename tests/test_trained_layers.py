"""Table 2 on trained layers: the recorded activations, a layer with a known answer, the verdicts, the command."""

import json
import math

import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from studies import trained_layers
from xnorpp_core import paper
from xnorpp_core.models import BinaryResNet, build_model
from xnorpp_core.reconstruction.fit import FitConfig, RECONSTRUCTION_METHODS
from xnorpp_core.reconstruction.trained import (PAIRS, TrainedLayersConfig, claim_rows, claims_from_images,
                                                convolutions, image_rows, order_outcome, record_inputs, score_layer)
from xnorpp_core.report.findings import read_trained_layers
from xnorpp_core.report.verdicts import verdict_trained_order, verdict_trained_ratio
from xnorpp_core.training import TrainConfig
from xnorpp_core.training.checkpoint import seal

PAPER_RATIO = paper.TABLE2["xnor"][0] / paper.TABLE2["case1"][0]
FAST = TrainedLayersConfig(fit_images=3, heldout_images=4, starts=2, sweeps=20, fit=FitConfig(lr=0.3, max_steps=3000))


def tiny_resnet():
    torch.manual_seed(0)
    model = BinaryResNet((1, 1), (4, 8), "case4", num_classes=3, input_size=8, small_input=True).eval()
    with torch.no_grad():  # BN statistics away from their initial values, so that BN is not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    return model


def hand_run(model, x):
    """Each convolution's input in a forward pass written out by hand (``tiny_resnet``'s layout)."""
    b0, b1 = model.blocks
    with torch.no_grad():
        inputs = {"stem.0": x}
        s = model.stem(x)
        inputs["blocks.0.unit1.conv"] = b0.unit1.bn(s)
        h = b0.unit1.relu(b0.unit1.conv(inputs["blocks.0.unit1.conv"]))
        inputs["blocks.0.unit2.conv"] = b0.unit2.bn(h)
        s = s + b0.unit2.relu(b0.unit2.conv(inputs["blocks.0.unit2.conv"]))
        inputs["blocks.1.shortcut.0"] = s
        inputs["blocks.1.unit1.conv"] = b1.unit1.bn(s)
        h = b1.unit1.relu(b1.unit1.conv(inputs["blocks.1.unit1.conv"]))
        inputs["blocks.1.unit2.conv"] = b1.unit2.bn(h)
    return inputs


def test_hooks_record_the_inputs_of_a_hand_run_forward_pass():
    model = tiny_resnet()
    x = torch.randn(5, 3, 8, 8)
    batches = [hand_run(model, x[i:i + 2]) for i in range(0, 5, 2)]  # the batches record_inputs runs
    expected = {name: torch.cat([b[name] for b in batches]) for name in batches[0]}
    layers = convolutions(model, x[:2])
    assert [l.name for l in layers] == list(expected)  # forward order
    assert [l.binarized for l in layers] == [False, True, True, False, True, True]
    recorded = record_inputs(model, x, [l.module for l in layers], batch_size=2)
    for layer, got in zip(layers, recorded):
        torch.testing.assert_close(got, expected[layer.name], rtol=0, atol=0, msg=layer.name)


def test_a_model_without_a_convolution_is_an_error():
    with pytest.raises(ValueError, match="no convolution"):
        convolutions(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), torch.zeros(1, 3, 2, 2))


def known_layer(stride):
    """A layer whose real output is exactly 2 alpha_o times its binary output: weights alpha_o * (+-1), inputs
    2 * (+-1), no padding. Returns the layer, fit and held-out inputs, and each method's known L1 per image."""
    g = torch.Generator().manual_seed(1)
    o, c, k = 6, 5, 3
    alpha = torch.linspace(0.2, 1.4, o)
    sign_w = torch.randint(0, 2, (o, c, k, k), generator=g).float() * 2 - 1
    conv = nn.Conv2d(c, o, k, stride, 0, bias=False)
    with torch.no_grad():
        conv.weight.copy_(alpha[:, None, None, None] * sign_w)
    x = 2 * (torch.randint(0, 2, (7, c, 9, 9), generator=g).float() * 2 - 1)
    b = F.conv2d(x.sign(), sign_w, stride=stride)  # (N, o, h, w), the reference binary output
    a = alpha[None, :, None, None]
    known = {"direct": (b * (1 - 2 * a)).abs().mean((1, 2, 3)),  # Y = 2 alpha B
             "xnor": torch.zeros(7),  # alpha K = alpha * 2
             "xnor_alpha": (b * a).abs().mean((1, 2, 3)),  # |alpha B - 2 alpha B|
             **{case: torch.zeros(7) for case in ("case1", "case2", "case3", "case4")}}  # Gamma = 2 alpha fits
    return conv, x[:3], x[3:], known


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("method", RECONSTRUCTION_METHODS)
def test_every_method_reaches_the_known_distance(method, stride):
    conv, x_fit, x_held, known = known_layer(stride)
    result = score_layer(conv, x_fit, x_held, FAST)
    scale = result["mean_abs_y"]["train"].mean().item()
    for split, images in (("train", slice(0, 3)), ("heldout", slice(3, 7))):
        got = result["l1"][(method, split)]
        assert torch.allclose(got, known[method][images].double(), rtol=1e-5, atol=1e-4 * scale), (method, split)


def fake_result(xnor_over_case1, order_gap):
    """A ``score_layer`` result with chosen per-image distances (float32 values, as ``score_layer`` computes
    them): Case 1 = 1, XNOR-Net = the ratio, and each step of Table 2's order ``order_gap`` apart (negative: the
    step reversed)."""
    n = 6
    wobble = torch.linspace(-0.01, 0.01, n, dtype=torch.float64)
    values = {"case1": torch.ones(n, dtype=torch.float64) + wobble, "case2": torch.full((n,), 0.1, dtype=torch.float64)}
    values["xnor"] = values["case1"] * xnor_over_case1 * (1 + wobble)  # per-image ratios around it
    values["direct"] = values["xnor"] + order_gap
    values["xnor_alpha"] = values["xnor"]
    values["case3"] = values["case1"] - order_gap
    values["case4"] = values["case3"] - order_gap
    l1 = {(m, s): v.float().double() for m, v in values.items() for s in ("train", "heldout")}
    return {"l1": l1, "mean_abs_y": {s: torch.full((n,), 2.0, dtype=torch.float64) for s in ("train", "heldout")}}


class _Layer:
    name, depth, binarized = "blocks.0.unit1.conv", 2, True

    def describe(self):
        return "4x4x3x3/1"


def write_trained(folder, rows, images):
    """claims.csv and per_image.csv of ``rows`` (claim rows) and ``images`` (image rows) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "claims.csv", index=False)
    pd.DataFrame(images).to_csv(folder / "per_image.csv", index=False)
    return folder


@pytest.mark.parametrize("ratio,gap,outcome", [(3.0, 0.5, "holds"), (1.01, -0.5, "reversed")])
def test_claim_rows_and_verdicts_follow_the_numbers(tmp_path, ratio, gap, outcome):
    result = fake_result(ratio, gap)
    rows = claim_rows("m", _Layer(), result)
    row = rows[1]
    assert row["split"] == "heldout" and row["xnor_over_case1"] == pytest.approx(ratio)
    assert row["xnor_over_case1_low"] < ratio < row["xnor_over_case1_high"]
    assert row["paper_order"] == outcome
    holds = outcome == "holds"
    ratio_text = verdict_trained_ratio([(row["xnor_over_case1_low"], row["xnor_over_case1_high"])] * 3, PAPER_RATIO,
                                       "layers")
    assert ratio_text.startswith("**holds**" if holds else "**not reproduced**")
    steps = {f"{a} > {b}": (3 * int(row[f"{a}_minus_{b}_low"] > 0), 3 * int(row[f"{a}_minus_{b}_high"] < 0))
             for a, b in PAIRS}
    order_text = verdict_trained_order([row["paper_order"]] * 3, steps, "layers")
    assert order_text.startswith("**holds** on all 3" if holds else "**holds** on 0, **reversed** on 3")
    assert ("reversed on 3" in order_text) is not holds
    # the report reads the same verdicts from the files, after recomputing every interval from the images
    write_trained(tmp_path / "reconstruction" / "trained", rows, image_rows("m", _Layer(), result, list(range(12))))
    ratio_finding, order_finding = read_trained_layers(tmp_path)
    assert ("**holds**" in ratio_finding.verdict) is holds
    assert ("**holds** on all" in order_finding.verdict) is holds


def test_the_report_recomputes_claims_from_the_images(tmp_path):
    """A claims.csv that per_image.csv does not give back (one interval end moved, the order word changed, a
    layer missing), or no per_image.csv at all, is an error naming it; the per-image rows give back exactly the
    claims computed in memory."""
    result = fake_result(1.3, 0.2)
    rows, images = claim_rows("m", _Layer(), result), image_rows("m", _Layer(), result, list(range(12)))
    again = claims_from_images(pd.DataFrame(images))
    for mine, theirs in zip(rows, again):
        for key, value in theirs.items():
            assert mine[key] == value or (isinstance(value, float) and math.isnan(value) and math.isnan(mine[key]))
    folder = tmp_path / "reconstruction" / "trained"
    for column, value in (("case3_minus_case4_low", rows[1]["case3_minus_case4_low"] * (1 + 1e-6)),
                          ("paper_order", "not separable")):
        bad = [dict(r) for r in rows]
        bad[1][column] = value
        write_trained(folder, bad, images)
        with pytest.raises(ValueError, match=column):
            read_trained_layers(tmp_path)
    write_trained(folder, rows[:1], images)
    with pytest.raises(ValueError, match="different layers"):
        read_trained_layers(tmp_path)
    (folder / "per_image.csv").unlink()
    with pytest.raises(ValueError, match="per_image.csv is missing"):
        read_trained_layers(tmp_path)


@pytest.mark.parametrize("steps,outcome", [
    ([(0.1, 0.2), (0.3, 0.4)], "holds"),
    ([(0.0, 0.2), (0.3, 0.4)], "not separable"),  # an interval touching zero from above separates nothing
    ([(-0.2, 0.0), (0.3, 0.4)], "not separable"),  # nor one touching it from below
    ([(-0.2, -1e-300), (0.3, 0.4)], "reversed"),  # below zero by the least amount
    ([(5e-324, 0.1), (0.3, 0.4)], "holds"),  # above zero by the least amount
    ([(-0.2, -0.1), (-0.1, 0.1)], "reversed"),  # one step reversed and another not separable
    ([(-0.1, 0.1), (-0.2, -0.1)], "reversed"),  # the same, in the other order
    ([(-0.2, -0.1), (0.1, 0.2)], "reversed"),  # one step reversed, the other above zero
    ([(math.nan, math.nan), (0.1, 0.2)], "not separable"),  # one image: no interval
    ([], "not separable"),
])
def test_order_outcome_at_its_edges(steps, outcome):
    assert order_outcome(steps) == outcome


def test_order_verdict_counts_each_outcome():
    outcomes = ["holds"] * 10 + ["reversed"] + ["not separable"] * 5
    steps = {"direct > xnor": (16, 0), "case1 > case3": (15, 0), "case3 > case4": (10, 1)}
    text = verdict_trained_order(outcomes, steps, "layers")
    assert text.startswith("**holds** on 10, **reversed** on 1, **not separable** on 5 of the 16 layers")
    assert "case1 > case3 not separable on 1; case3 > case4 reversed on 1, not separable on 5" in text
    assert "direct > xnor" not in text
    assert verdict_trained_order(["holds"] * 4, {"a > b": (4, 0)}, "layers") == "**holds** on all 4 layers"
    assert verdict_trained_order(["not separable", "holds"], {"a > b": (1, 0)}, "layers").startswith(
        "**holds** on 1, **reversed** on 0, **not separable** on 1 of the 2 layers")


def test_ratio_verdict_counts_each_side():
    text = verdict_trained_ratio([(2.6, 3.0), (1.1, 1.2), (0.8, 0.9), (0.95, 1.05)], 2.5, "layers")
    assert text.startswith("**holds on 1 of 4**")
    assert "closer than XNOR-Net on 2, farther on 1, not separable on 1" in text


# ---------------------------------------------------------------- the command
def checkpoint(path, arch="resnet18"):
    """A checkpoint in the format of studies.train: an untrained ResNet-18 for 8x8 digits."""
    config = TrainConfig(input_size=8).to_dict()
    config["arch"] = arch
    model = build_model("resnet18", "case4", 10, 8, small_input=True)
    torch.save(seal({"config": config, "model": model.state_dict(), "history": [{"val_top1": 12.5}]}), path)
    return path


FAST_FLAGS = ["--fit-images", "2", "--heldout-images", "2", "--starts", "1", "--sweeps", "2", "--fit-max-steps", "5",
              "--threads", "1"]


@pytest.mark.parametrize("bad", ["missing", "corrupt", "other_arch", "no_config", "no_convolution"])
def test_bad_input_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, monkeypatch, bad):
    path = tmp_path / "checkpoint.pt"
    if bad == "corrupt":
        path.write_bytes(b"not a checkpoint")
    elif bad == "other_arch":
        checkpoint(path, arch="vgg16")
    elif bad == "no_config":
        torch.save({"model": nn.Linear(2, 2).state_dict()}, path)
    elif bad == "no_convolution":
        checkpoint(path)
        monkeypatch.setattr(trained_layers, "load_checkpoint",
                            lambda prog, p: (nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), "mlp",
                                             {"input_size": 8}, None))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        trained_layers.main(["--checkpoints", str(path), "--out", str(out), *FAST_FLAGS])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err
    assert not out.exists()


def test_a_checkpoint_gives_every_file(tmp_path):
    path = checkpoint(tmp_path / "checkpoint.pt")
    out = tmp_path / "out"
    layers, claims = trained_layers.main(["--checkpoints", str(path), "--out", str(out), *FAST_FLAGS])
    assert sorted(p.name for p in out.iterdir()) == ["claims.csv", "layers.csv", "per_image.csv", "run.json",
                                                     "trained_layers.md", "trained_layers.png"]
    assert layers.layer.nunique() == 20 and set(layers.method) == set(RECONSTRUCTION_METHODS)
    assert len(claims) == 40 and claims.xnor_over_case1.notna().all()
    assert set(claims.paper_order) <= {"holds", "reversed", "not separable"}
    images = pd.read_csv(out / "per_image.csv")  # 20 layers, 2 + 2 images each, every claim recomputes from them
    assert len(images) == 80 and set(images.image) == set(json.loads((out / "run.json").read_text())
                                                                ["models"][0]["images"])
    again = pd.DataFrame(claims_from_images(images))
    written = pd.read_csv(out / "claims.csv")
    for column in again.columns:
        if column in ("model", "split", "paper_order"):
            assert list(again[column]) == list(written[column]), column
        else:
            assert (again[column].to_numpy() == written[column].to_numpy()).all(), column
    run = json.loads((out / "run.json").read_text())
    assert run["models"][0]["val_top1"] == 12.5 and run["models"][0]["layers"] == 20
    assert not math.isnan(layers[layers.evidence != ""].gap.max())

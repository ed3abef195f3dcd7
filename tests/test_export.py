"""The packed model file: round trip for every method, its size, and the export / evaluate commands."""

import io
import json

import pytest
import torch

from studies import evaluate, export
from xnorpp_core import packed
from xnorpp_core.deploy.whole_network import trained_like
from xnorpp_core.models import build_model
from xnorpp_core.packed.model_file import (FORMAT, ModelFileError, export_bytes, load_model, load_network,
                                           size_budget, unpack_weight)
from xnorpp_core.packed.network import fused_emulation
from xnorpp_core.scales import LearnedScale
from xnorpp_core.training import TrainConfig
from xnorpp_core.training.checkpoint import seal

KWARGS = {"num_classes": 10, "input_size": 12, "pad_mode": "zero", "small_input": True}


def _model(method, seed=0):
    return trained_like(build_model("resnet18", method, **KWARGS), torch.Generator().manual_seed(seed))


def test_unpack_weight_inverts_pack_weight():
    w = torch.randn(5, 70, 3, 2)
    signs = unpack_weight(packed.pack_weight(w, "numpy"), 70)
    assert torch.equal(signs, torch.where(w > 0, 1.0, -1.0))


@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
def test_round_trip_gives_the_fused_emulation_logits(tmp_path, method):
    model = _model(method)
    data = export_bytes(model, "resnet18", KWARGS)
    path = tmp_path / "m.xnorpp"
    path.write_bytes(data)
    payload = torch.load(io.BytesIO(data.partition(b"\n")[2]), weights_only=True)  # plain containers and tensors
    assert payload["format"] == FORMAT
    stored = set(payload["state"])
    assert not any(k.endswith("conv.weight") for k in stored)  # binary weights only as bits
    assert not any("gamma" in k and payload["state"][k].dim() == 3 and payload["state"][k].shape[1] > 1
                   for k in stored if method == "case4")  # Case 4: factors, no fused dense Gamma
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(load_network(path)(x), fused_emulation(model)(x))
    assert len(data) <= 1.15 * size_budget(model)["total"]


def test_case4_file_is_smaller_than_a_dense_gamma_would_make_it(tmp_path):
    model = _model("case4")
    dense = sum(m.fused().numel() * 4 for m in model.modules() if isinstance(m, LearnedScale))
    factors = sum(p.numel() * 4 for m in model.modules() if isinstance(m, LearnedScale) for p in m.parameters())
    assert dense > factors
    budget = size_budget(model)
    assert len(export_bytes(model, "resnet18", KWARGS)) < budget["packed_weights"] + budget[
        "real_layers_and_factors"] - factors + dense


def test_bad_files_raise(tmp_path):
    (tmp_path / "junk").write_bytes(b"not a torch file")
    with pytest.raises(ModelFileError, match="junk is not an xnorpp model file"):
        load_model(tmp_path / "junk")
    buffer = io.BytesIO()
    torch.save({"format": "something else"}, buffer)
    (tmp_path / "other").write_bytes(buffer.getvalue())
    with pytest.raises(ModelFileError, match="other is a PyTorch file but not an xnorpp model file"):
        load_model(tmp_path / "other")
    with pytest.raises(ModelFileError, match="has no packed form"):
        export_bytes(build_model("resnet18", "xnor", **KWARGS), "resnet18", KWARGS)


# ---------------------------------------------------------------- the commands


def _checkpoint(tmp_path, method):
    config = TrainConfig(method=method, input_size=12).to_dict()
    path = tmp_path / f"{method}.pt"
    torch.save(seal({"format": "x", "model": _model(method).state_dict(), "config": config}), path)
    return path


def test_export_then_evaluate_on_the_digits(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "case3")
    stats = export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "m")])
    assert "file / that" in capsys.readouterr().out and stats["file_bytes"] <= 1.15 * stats["total"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.xnorpp"]
    result = evaluate.main(["--model", str(tmp_path / "m" / "model.xnorpp"), "--checkpoint", str(ckpt),
                            "--batch-size", "128", "--out", str(tmp_path / "ev")])
    assert result["images"] == 360 and result["packed_top1"] == result["float_top1"]
    assert result["agree_logits_equal"] == 360 and result["agree_float"] == 360
    assert json.loads((tmp_path / "ev" / "evaluation.json").read_text())["packed_top5"] == result["packed_top5"]
    export.main(["--checkpoint", str(ckpt)])  # --out defaults to the checkpoint's folder
    assert (tmp_path / "model.xnorpp").read_bytes() == (tmp_path / "m" / "model.xnorpp").read_bytes()


@pytest.mark.parametrize("argv,message", [
    (["--checkpoint", "/nonexistent.pt", "--out", "{tmp}/m"], "does not exist"),
    (["--checkpoint", "{ckpt}", "--out", "/proc/forbidden/m"], "cannot write"),
    (["--checkpoint", "{ckpt}", "--out", "{tmp}/junk"], "exists and is not a folder"),
    (["--checkpoint", "{xnor}", "--out", "{tmp}/m"], "has no packed form"),
    (["--checkpoint", "{tmp}/junk", "--out", "{tmp}/m"], "junk is not a PyTorch file"),
])
def test_export_errors_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "junk").write_bytes(b"junk")
    subst = {"tmp": tmp_path, "ckpt": _checkpoint(tmp_path, "direct") if "{ckpt}" in argv else "",
             "xnor": _checkpoint(tmp_path, "xnor") if "{xnor}" in argv else ""}
    with pytest.raises(SystemExit) as exit_:
        export.main([a.format(**subst) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_evaluate_refuses_a_bad_model_file(tmp_path, capsys):
    (tmp_path / "junk").write_bytes(b"junk")
    for argv in (["--model", str(tmp_path / "junk")], ["--model", str(tmp_path / "none")]):
        with pytest.raises(SystemExit) as exit_:
            evaluate.main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "junk is not an xnorpp model file" in err and "none does not exist" in err

"""The packed model file: round trip for every method and real-layer option, its size, files it refuses, and the
export / evaluate commands."""

import hashlib
import io
import json

import numpy as np
import pytest
import torch

from studies import evaluate, export
from xnorpp_core import packed
from xnorpp_core.deploy.whole_network import trained_like
from xnorpp_core.models import build_model
from xnorpp_core.packed.model_file import (FORMAT, VERSION, ModelFileError, export_bytes, load_model, load_network,
                                           size_budget, unpack_weight)
from xnorpp_core.packed.network import REAL_LAYERS, PackedNetwork, fused_emulation
from xnorpp_core.scales import LearnedScale
from xnorpp_core.training import TrainConfig
from xnorpp_core.training.checkpoint import load_checkpoint as training_checkpoint
from xnorpp_core.training.checkpoint import seal
from xnorpp_core.training.data import CALIBRATION_IMAGES, calibration_images

KWARGS = {"num_classes": 10, "input_size": 12, "pad_mode": "zero", "small_input": True}
CALIBRATION = torch.randn(12, 3, 12, 12, generator=torch.Generator().manual_seed(5))


def _model(method, seed=0):
    return trained_like(build_model("resnet18", method, **KWARGS), torch.Generator().manual_seed(seed))


def _export(model, calibration=CALIBRATION):
    return export_bytes(model, "resnet18", KWARGS, calibration=calibration, calibration_data="N(0, 1) draws")


def _payload(data):
    """The payload of model-file bytes, read as plain containers and tensors (``weights_only=True``)."""
    return torch.load(io.BytesIO(data.partition(b"\n")[2]), weights_only=True)


def _sealed(payload, version=VERSION):
    """Model-file bytes of ``payload`` with a header of ``version`` and a valid digest (the format, written out
    here independently of ``export_bytes``)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    head = f"xnorpp-packed-model {version} bytes={len(body)} sha256=".encode()
    return head + hashlib.sha256(head + body).hexdigest().encode() + b"\n" + body


def test_unpack_weight_inverts_pack_weight():
    w = torch.randn(5, 70, 3, 2)
    signs = unpack_weight(packed.pack_weight(w, "numpy"), 70)
    assert torch.equal(signs, torch.where(w > 0, 1.0, -1.0))


@pytest.mark.parametrize("real_layers", REAL_LAYERS)
@pytest.mark.parametrize("method", packed.SUPPORTED_METHODS)
def test_round_trip_gives_the_logits_of_the_network_it_was_exported_from(tmp_path, method, real_layers):
    model = _model(method)
    data = _export(model)
    path = tmp_path / "m.xnorpp"
    path.write_bytes(data)
    assert path.read_bytes() == data  # no byte flipped on the way
    payload = _payload(data)
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    stored = set(payload["state"])
    assert not any(k.endswith("conv.weight") for k in stored)  # binary weights only as bits
    assert not any("gamma" in k and payload["state"][k].dim() == 3 and payload["state"][k].shape[1] > 1
                   for k in stored if method == "case4")  # Case 4: factors, no fused dense Gamma
    assert payload["int8"]["calibration_images"] == len(CALIBRATION)
    # the network it was exported from: int8 real layers calibrated on the same images
    source = PackedNetwork(model, real_layers=real_layers,
                           calibration=CALIBRATION if real_layers == "int8" else None)
    loaded = load_network(path, real_layers=real_layers)
    assert loaded.real_layers == real_layers
    x = torch.cat([torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1)), CALIBRATION[:2]])
    with torch.no_grad():
        logits = loaded(x)
        assert torch.equal(logits, source(x))
        assert torch.equal(logits, source.reference(x))
        assert torch.equal(loaded.reference(x), source.reference(x))
        if real_layers == "float":
            assert torch.equal(logits, fused_emulation(model)(x))
        else:  # the int8 layers did run: not the float real layers' logits
            assert not torch.equal(logits, fused_emulation(model)(x))
    assert len(data) <= 1.15 * size_budget(model, payload["int8"]["layers"])["total"]


def test_round_trip_with_the_imagenet_stem(tmp_path):
    # a 7x7/2 stem with its ReLU and max pooling: one int8 module (its pooling stored), fused with the signs
    kwargs = {**KWARGS, "input_size": 32, "small_input": False}
    model = trained_like(build_model("resnet18", "case4", **kwargs), torch.Generator().manual_seed(3))
    calibration = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    data = export_bytes(model, "resnet18", kwargs, calibration=calibration)
    assert _payload(data)["int8"]["layers"]["stem.0"]["pool"] == (3, 3, 2, 2, 1, 1)  # (kh, kw, sh, sw, ph, pw)
    (tmp_path / "m.xnorpp").write_bytes(data)
    source = PackedNetwork(model, real_layers="int8", calibration=calibration)
    loaded = load_network(tmp_path / "m.xnorpp")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x)) and torch.equal(loaded(x), source.reference(x))


def test_the_default_option_is_the_int8_one(tmp_path):
    model = _model("case1")
    (tmp_path / "m.xnorpp").write_bytes(_export(model))
    x = torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(load_network(tmp_path / "m.xnorpp", "numpy")(x),
                           PackedNetwork(model, "numpy", real_layers="int8", calibration=CALIBRATION)(x))


def test_int8_states_hold_what_rebuilds_each_layer():
    model = _model("case4")
    payload = _payload(_export(model))
    layers = payload["int8"]["layers"]
    assert sorted(layers) == ["blocks.2.shortcut.0", "blocks.4.shortcut.0", "blocks.6.shortcut.0", "fc", "stem.0"]
    stem, fc = layers["stem.0"], layers["fc"]
    assert stem["kind"] == "conv" and stem["relu"] and stem["pool"] is None  # small input: no pooling
    assert stem["weight_codes"].dtype == torch.int8 and stem["weight_codes"].shape == (64, 3, 3, 3)
    assert fc["kind"] == "gemm" and fc["weight_codes"].shape == (10, 512) and fc["weight_scales"].shape == (10,)
    assert layers["blocks.2.shortcut.0"]["stride"] == (2, 2)
    # the codes are the weights over their scales, rounded (the classifier has no batch norm to fold)
    fc_weight = model.fc.weight.detach()
    assert torch.equal(fc["weight_codes"],
                       torch.clamp(torch.round(fc_weight / fc["weight_scales"][:, None]), -128, 127).to(torch.int8))
    assert 0 <= stem["in_zero_point"] <= 255 and stem["in_scale"] > 0


def test_case4_file_is_smaller_than_a_dense_gamma_would_make_it(tmp_path):
    model = _model("case4")
    dense = sum(m.fused().numel() * 4 for m in model.modules() if isinstance(m, LearnedScale))
    factors = sum(p.numel() * 4 for m in model.modules() if isinstance(m, LearnedScale) for p in m.parameters())
    assert dense > factors
    data = _export(model)
    budget = size_budget(model, _payload(data)["int8"]["layers"])
    assert budget["scales"] == factors
    assert len(data) < budget["total"] - factors + dense


def test_size_budget_counts_the_tensors_of_the_file():
    model = _model("xnor_alpha")
    payload = _payload(_export(model))
    budget = size_budget(model, payload["int8"]["layers"])
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    assert budget["packed_weights"] == nbytes(b["bits"] for b in payload["binary"].values())
    assert budget["scales"] == nbytes(payload["alpha"].values()) > 0
    assert budget["real_layers"] == nbytes(payload["state"].values())
    assert budget["int8_real_layers"] == nbytes(v for s in payload["int8"]["layers"].values() for v in s.values()
                                                if isinstance(v, torch.Tensor))
    assert budget["total"] == sum(v for k, v in budget.items() if k != "total")


def test_the_file_does_not_depend_on_the_thread_count():
    model, previous = _model("case4"), torch.get_num_threads()
    try:
        files = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            files.append(_export(model))
    finally:
        torch.set_num_threads(previous)
    assert files[0] == files[1]


def test_calibration_images_of_another_shape_are_refused():
    for bad in (CALIBRATION[:, :, :8], CALIBRATION.double(), CALIBRATION[:0], CALIBRATION[0]):
        with pytest.raises(ModelFileError, match=r"calibration images must be float32 \(N, 3, 12, 12\)"):
            _export(_model("case1"), bad)


# ---------------------------------------------------------------- files the toolkit refuses


def _refused(path, match, real_layers="int8"):
    with pytest.raises(ModelFileError) as err:
        load_network(path, "numpy", real_layers)
    assert len(str(err.value).splitlines()) == 1
    assert match in str(err.value), str(err.value)


@pytest.mark.parametrize("version", [1, 2])
def test_a_file_of_an_older_format_is_refused_in_one_line(tmp_path, version):
    payload = _payload(_export(_model("case1")))
    payload.update(version=version)
    del payload["int8"]
    path = tmp_path / "old.xnorpp"
    if version == 1:  # format 1: the payload alone, no header line
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        path.write_bytes(buffer.getvalue())
    else:
        path.write_bytes(_sealed(payload, version))
    for real_layers in REAL_LAYERS:
        _refused(path, f"model file {path} has format version {version}; this toolkit reads version {VERSION} "
                       "(export it again with python -m studies.export)", real_layers)


def _edited(tmp_path, edit):
    payload = _payload(_export(_model("case4")))
    edit(payload["int8"]["layers"])
    path = tmp_path / "edited.xnorpp"
    path.write_bytes(_sealed(payload))
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda layers: layers.pop("fc"), "no int8 state for the real layer 'fc'"),
    (lambda layers: layers.pop("stem.0"), "no int8 state for the real layer 'stem.0'"),
    (lambda layers: layers.update(extra=layers["fc"]), "int8 state for 'extra', which is not a real layer"),
    (lambda layers: layers["fc"].update(weight_codes=layers["fc"]["weight_codes"][:, :-1]),
     "the int8 state of 'fc' does not rebuild it: ValueError: weight codes (10, 511), where the layer has "
     "weights (10, 512)"),
    (lambda layers: layers["blocks.2.shortcut.0"].update(weight_scales=torch.ones(3)),
     "the int8 state of 'blocks.2.shortcut.0' does not rebuild it: ValueError: weight_scales must be "
     "torch.float32 (128,)"),
    (lambda layers: layers["stem.0"].update(bias=torch.ones(64, dtype=torch.float64)),
     "the int8 state of 'stem.0' does not rebuild it: ValueError: bias must be torch.float32 (64,)"),
    (lambda layers: layers["stem.0"].pop("in_zero_point"), "the int8 state of 'stem.0' does not rebuild it: "
                                                            "TypeError"),
    (lambda layers: layers["stem.0"].update(relu=False),
     "the int8 state of 'stem.0' does not rebuild it: ValueError: (relu, pooling) (False, None), where the "
     "network has (True, None)"),
    (lambda layers: layers["stem.0"].update(pool=(2, 2, 2, 2, 0, 0)),
     "the int8 state of 'stem.0' does not rebuild it: ValueError: (relu, pooling) (True, (2, 2, 2, 2, 0, 0)), where "
     "the network has (True, None)"),
    (lambda layers: layers["fc"].update(kind="conv"),
     "the int8 state of 'fc' does not rebuild it: ValueError: kind 'conv', where the network has 'gemm'"),
])
def test_int8_states_that_do_not_fit_are_refused_in_one_line(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    _refused(path, f"model file {path} does not match its own architecture: {message}")
    load_network(path, "numpy", "float")  # the float option does not read them


def test_a_file_without_int8_states_is_refused(tmp_path):
    payload = _payload(_export(_model("case1")))
    del payload["int8"]
    (tmp_path / "m.xnorpp").write_bytes(_sealed(payload))
    for real_layers in REAL_LAYERS:
        _refused(tmp_path / "m.xnorpp", "does not match its own architecture: it holds no int8 real layers",
                 real_layers)


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
        _export(build_model("resnet18", "xnor", **KWARGS))


# ---------------------------------------------------------------- the commands


def _checkpoint(tmp_path, method, data=None):
    config = TrainConfig(method=method, input_size=12).to_dict() | {"data": data}
    path = tmp_path / f"{method}.pt"
    torch.save(seal({"format": "x", "model": _model(method).state_dict(), "config": config}), path)
    return path


def _image_folder(root, classes=10, per_class=2):
    """``root/train``: ``classes`` class folders of ``per_class`` random 14x16 images each."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (14, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "train" / f"c{c}" / f"{i}.png")
    return root


def test_export_then_evaluate_on_the_digits(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path, "case3")
    stats = export.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "m")])
    assert "file / that" in capsys.readouterr().out and stats["file_bytes"] <= 1.15 * stats["total"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.xnorpp"]
    data = (tmp_path / "m" / "model.xnorpp").read_bytes()
    int8 = _payload(data)["int8"]
    assert int8["calibration_images"] == CALIBRATION_IMAGES == 32
    assert int8["calibration_data"] == "the embedded digits' training split"
    # calibrated on the digits' training images as evaluation input: the same file as exported from them here
    model, _, kwargs, classes = training_checkpoint(ckpt)
    assert data == export_bytes(model, "resnet18", kwargs, classes, calibration=calibration_images(None, 12)[0],
                                calibration_data=int8["calibration_data"])
    for real_layers in REAL_LAYERS:
        argv = ["--model", str(tmp_path / "m" / "model.xnorpp"), "--checkpoint", str(ckpt), "--batch-size", "128",
                "--out", str(tmp_path / real_layers), "--real-layers", real_layers]
        result = evaluate.main(argv)
        assert result["images"] == 360 and result["real_layers"] == real_layers
        assert result["agree_logits_equal"] == 360  # the packed network equals its emulation from the checkpoint
        assert result["int8_calibration"]["calibration_images"] == 32
        if real_layers == "float":
            assert result["packed_top1"] == result["float_top1"] and result["agree_float"] == 360
        written = json.loads((tmp_path / real_layers / "evaluation.json").read_text())
        assert written["packed_top5"] == result["packed_top5"] and written["real_layers"] == real_layers
    export.main(["--checkpoint", str(ckpt)])  # --out defaults to the checkpoint's folder
    assert (tmp_path / "model.xnorpp").read_bytes() == data


def test_export_of_an_imagefolder_run_calibrates_on_its_training_images(tmp_path, capsys):
    root = _image_folder(tmp_path / "data")
    ckpt = _checkpoint(tmp_path, "case1", data=str(root))
    export.main(["--checkpoint", str(ckpt), "--data", str(root), "--out", str(tmp_path / "m")])
    int8 = _payload((tmp_path / "m" / "model.xnorpp").read_bytes())["int8"]
    assert int8["calibration_images"] == 20 and int8["calibration_data"] == f"the training split of {root}"  # all 20 (< 32)
    images, classes = calibration_images(root, 12, 256)
    assert images.shape == (20, 3, 12, 12) and classes == [f"c{c}" for c in range(10)]


def test_calibration_images_of_the_digits_are_training_images_as_evaluation_input():
    from xnorpp_core.training.data import digits_splits

    images, classes = calibration_images(None, 16)
    train, val, _ = digits_splits(16)
    assert images.shape == (CALIBRATION_IMAGES, 3, 16, 16) and images.dtype == torch.float32 and len(classes) == 10
    as_input = lambda i: val.transform(train.images[i].expand(3, -1, -1))  # noqa: E731
    assert torch.equal(images[0], as_input(0)) and torch.equal(images[-1], as_input(len(train) - 1))
    step = (len(train) - 1) / (CALIBRATION_IMAGES - 1)
    assert torch.equal(images[5], as_input(round(5 * step)))
    assert calibration_images(None, 16, count=len(train) + 5)[0].shape[0] == len(train)  # all of them, no more


@pytest.mark.parametrize("argv,message", [
    (["--checkpoint", "/nonexistent.pt", "--out", "{tmp}/m"], "does not exist"),
    (["--checkpoint", "{ckpt}", "--out", "/proc/forbidden/m"], "cannot write"),
    (["--checkpoint", "{ckpt}", "--out", "{tmp}/junk"], "exists and is not a folder"),
    (["--checkpoint", "{xnor}", "--out", "{tmp}/m"], "has no packed form"),
    (["--checkpoint", "{tmp}/junk", "--out", "{tmp}/m"], "junk is not a PyTorch file"),
    (["--checkpoint", "{ckpt}", "--data", "{tmp}/data", "--out", "{tmp}/m"],
     "was trained on the embedded digits, whose training images calibrate the int8 real layers: --data does "
     "not apply"),
    (["--checkpoint", "{folder_ckpt}", "--out", "{tmp}/m"],
     "was trained on {tmp}/data: give it as --data (its training images calibrate"),
    (["--checkpoint", "{folder_ckpt}", "--data", "{tmp}/none", "--out", "{tmp}/m"], "none does not exist"),
    (["--checkpoint", "{folder_ckpt}", "--data", "{tmp}/three", "--out", "{tmp}/m"],
     "three has 3 classes (c0, c1, c2); checkpoint {tmp}/case1.pt was trained on 10"),
])
def test_export_errors_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "junk").write_bytes(b"junk")
    subst = {"tmp": tmp_path, "ckpt": _checkpoint(tmp_path, "direct") if "{ckpt}" in argv else "",
             "xnor": _checkpoint(tmp_path, "xnor") if "{xnor}" in argv else "",
             "folder_ckpt": (_checkpoint(tmp_path, "case1", data=str(tmp_path / "data"))
                             if "{folder_ckpt}" in argv else "")}
    _image_folder(tmp_path / "three", classes=3, per_class=1)
    with pytest.raises(SystemExit) as exit_:
        export.main([a.format(**subst) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message.format(**subst) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_evaluate_refuses_a_bad_model_file(tmp_path, capsys):
    (tmp_path / "junk").write_bytes(b"junk")
    for argv in (["--model", str(tmp_path / "junk")], ["--model", str(tmp_path / "none")]):
        with pytest.raises(SystemExit) as exit_:
            evaluate.main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "junk is not an xnorpp model file" in err and "none does not exist" in err


def test_the_network_and_the_model_file_are_importable_from_the_package():
    from xnorpp_core.packed import PackedNetwork, load_network
    from xnorpp_core.packed import model_file, network

    assert PackedNetwork is network.PackedNetwork and load_network is model_file.load_network

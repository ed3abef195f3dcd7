"""A newcomer's mistakes: each gives one line naming the flag or file and the cause, exit code 2, and
nothing written. Also: a model file changed anywhere after export is refused on load."""

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from studies import (_cli, bench_inference, deploy_tradeoff, evaluate, export, kernel_bench, notebooks,
                     protocol_sweep, reconstruction, train, trained_layers)
from xnorpp_core.deploy.whole_network import trained_like
from xnorpp_core.models import build_model
from xnorpp_core.packed.model_file import VERSION, ModelFileError, export_bytes, load_model
from xnorpp_core.training import TrainConfig
from xnorpp_core.training.checkpoint import seal
from xnorpp_core.training.loop import CHECKPOINT_FORMAT

KWARGS = {"num_classes": 10, "input_size": 12, "pad_mode": "zero", "small_input": True}
DIGITS = [str(d) for d in range(10)]
CALIBRATION = torch.randn(8, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def _model(seed=0, arch="resnet18", **kwargs):
    kwargs = {**KWARGS, **kwargs}
    return trained_like(build_model(arch, "case4", **kwargs), torch.Generator().manual_seed(seed))


def _checkpoint(path, model, classes=DIGITS, **config):
    """A training checkpoint of ``model`` with its digest, as ``training.train`` writes one (its parts that the
    readers of a trained model use)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(method="case4", **{"input_size": 12, **config}).to_dict()
    torch.save(seal({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "classes": list(classes),
                     "config": config}), path)


def _image_folders(root, classes, splits=("val",), corrupt=None):
    """An ImageFolder tree with one small image per class in each split; ``corrupt``: a class whose image is not
    a picture at all."""
    for split in splits:
        for c in classes:
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((14, 14, 3), np.uint8)).save(root / split / c / "0.png")
    if corrupt is not None:
        (root / splits[-1] / corrupt / "1.png").write_bytes(b"not a picture")


def _export(model):
    return export_bytes(model, "resnet18", KWARGS, DIGITS, calibration=CALIBRATION)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model file, the checkpoint it came from, and a few broken or foreign files."""
    root = tmp_path_factory.mktemp("files")
    model = _model()
    data = _export(model)
    (root / "model.xnorpp").write_bytes(data)
    _checkpoint(root / "checkpoint.pt", model)
    _checkpoint(root / "other_run" / "checkpoint.pt", _model(seed=1))  # the same configuration, another run
    _checkpoint(root / "alexnet" / "checkpoint.pt", _model(arch="alexnet", input_size=32), arch="alexnet",
                input_size=32)
    _checkpoint(root / "letters" / "checkpoint.pt", _model(input_size=16), classes="abcdefghij", input_size=16)
    (root / "older").mkdir()
    torch.save({"format": 1, "model": model.state_dict(), "classes": DIGITS,  # no digest: an older checkpoint
                "config": TrainConfig(method="case4", input_size=12).to_dict()}, root / "older" / "checkpoint.pt")
    _image_folders(root / "corrupt", DIGITS, corrupt="3")
    _image_folders(root / "seven", DIGITS[:7], splits=("train", "val"))
    (root / "empty").write_bytes(b"")
    (root / "random").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "truncated.xnorpp").write_bytes(data[: len(data) // 2])
    checkpoint = (root / "checkpoint.pt").read_bytes()
    (root / "truncated.pt").write_bytes(checkpoint[: len(checkpoint) // 2])
    (root / "a_folder").mkdir()
    for name, classes in (("three", ("a", "b", "c")), ("renamed", [f"n{d}" for d in range(10)])):
        for c in classes:  # val/ only: evaluate reads nothing else
            (root / name / "val" / c).mkdir(parents=True)
            Image.fromarray(np.zeros((14, 14, 3), np.uint8)).save(root / name / "val" / c / "0.png")
    (root / "runs" / "x" / "checkpoint.pt").parent.mkdir(parents=True)
    torch.save(seal({"format": CHECKPOINT_FORMAT, "classes": ["a", "b", "c"], "identity": {}}),
               root / "runs" / "x" / "checkpoint.pt")
    return root


def _tree(root):
    """Every path under ``root`` with its files' modification times (a folder's own time changes when a study
    probes that it can write there, leaving nothing behind)."""
    return sorted((str(p.relative_to(root)), 0 if p.is_dir() else p.stat().st_mtime_ns) for p in root.rglob("*"))


CASES = {  # name: (study, argv with {f} for the files' folder, what the one line says)
    "empty model file": (evaluate, "--model {f}/empty", "model file {f}/empty is empty"),
    "random bytes as model file": (evaluate, "--model {f}/random", "{f}/random is not an xnorpp model file"),
    "truncated model file": (evaluate, "--model {f}/truncated.xnorpp",
                             "model file {f}/truncated.xnorpp is corrupt: "),
    "folder as model file": (evaluate, "--model {f}/a_folder", "model file {f}/a_folder is a folder, not a file"),
    "missing model file": (evaluate, "--model {f}/none", "model file {f}/none does not exist"),
    "checkpoint as --model": (evaluate, "--model {f}/checkpoint.pt",
                              "{f}/checkpoint.pt is a training checkpoint, not a model file: use --checkpoint"),
    "model file as --checkpoint": (evaluate, "--model {f}/model.xnorpp --checkpoint {f}/model.xnorpp",
                                   "{f}/model.xnorpp is a packed model file, not a training checkpoint (python -m "
                                   "studies.evaluate --model runs it)"),
    "truncated checkpoint": (evaluate, "--model {f}/model.xnorpp --checkpoint {f}/truncated.pt",
                             "checkpoint {f}/truncated.pt is truncated or damaged"),
    "empty checkpoint": (export, "--checkpoint {f}/empty", "checkpoint {f}/empty is empty"),
    "random checkpoint": (export, "--checkpoint {f}/random", "checkpoint {f}/random is not a PyTorch file"),
    "folder as checkpoint": (export, "--checkpoint {f}/a_folder", "checkpoint {f}/a_folder is a folder, not a file"),
    "model file exported again": (export, "--checkpoint {f}/model.xnorpp --out {f}/new", "is a packed model file, "
                                  "not a training checkpoint (python -m studies.evaluate --model runs it)"),
    "other class count": (evaluate, "--model {f}/model.xnorpp --data {f}/three",
                          "--data {f}/three has 3 classes (a, b, c); model file {f}/model.xnorpp was trained on 10"),
    "other class names": (evaluate, "--model {f}/model.xnorpp --data {f}/renamed",
                          "--data {f}/renamed has 10 classes (n0, n1, n2, n3, n4, ... 5 more); model file "
                          "{f}/model.xnorpp was trained on 10 (0, 1, 2, 3, 4, ... 5 more)"),
    "data without val/": (evaluate, "--model {f}/model.xnorpp --data {f}/runs", "missing split folder {f}/runs/val"),
    "resume on other classes": (train, "--out {f}/runs/x --resume --epochs 1 --limit-batches 1 --input-size 12",
                                "the embedded digits has 10 classes (0, 1, 2, 3, 4, ... 5 more); checkpoint "
                                "{f}/runs/x/checkpoint.pt was trained on 3 (a, b, c)"),
    "fit learning rate": (reconstruction, "--fit-lr -1 --out {f}/new",
                          "error: --fit-lr must be a number in (0, 100], got '-1'"),
    "kernel size": (reconstruction, "--kernel-size 0 --out {f}/new",
                    "error: --kernel-size must be an integer from 1 to 31"),
    "trials": (reconstruction, "--trials 0 --out {f}/new",
               "error: --trials must be an integer from 1 to 100000, got '0'"),
    "padding": (reconstruction, "--padding 1-reflect --out {f}/new", "error: unknown --padding '1-reflect'"),
    "notebooks, no rows": (notebooks, "table1 --archs alexnet --out {f}/TYPO",
                           "--archs alexnet: table1 has no rows of that architecture"),
    "notebooks, mistyped --out": (notebooks, "all --out {f}/TYPO",
                                  "--out {f}/TYPO: no runs there yet; pass --train to start training"),
    # data and checkpoints checked against each other wherever they meet
    "corrupt image, evaluate": (evaluate, "--model {f}/model.xnorpp --data {f}/corrupt --resize 12 --backend numpy "
                                          "--out {f}/new", "cannot read image {f}/corrupt/val/3/1.png"),
    "another run as --checkpoint": (evaluate, "--model {f}/model.xnorpp --checkpoint {f}/other_run/checkpoint.pt",
                                    "checkpoint {f}/other_run/checkpoint.pt is not the run of model file "
                                    "{f}/model.xnorpp: their weights differ"),
    "an AlexNet as --checkpoint": (evaluate, "--model {f}/model.xnorpp --checkpoint {f}/alexnet/checkpoint.pt",
                                   "checkpoint {f}/alexnet/checkpoint.pt is not the run of model file "
                                   "{f}/model.xnorpp (alexnet, case4"),
    "checkpoint of other classes, deploy_tradeoff": (
        deploy_tradeoff, "--checkpoints {f}/letters/checkpoint.pt --out {f}/new",
        "the embedded digits has 10 classes (0, 1, 2, 3, 4, ... 5 more); checkpoint {f}/letters/checkpoint.pt was "
        "trained on 10 (a, b, c, d, e, ... 5 more)"),
    "data of other classes, trained_layers": (
        trained_layers, "--checkpoints {f}/checkpoint.pt --data {f}/seven --out {f}/new",
        "--data {f}/seven has 7 classes (0, 1, 2, 3, 4, ... 2 more); checkpoint {f}/checkpoint.pt was trained on 10"),
    # a model file where a checkpoint belongs: no study tells the user to use a flag it does not have
    "model file to trained_layers": (trained_layers, "--checkpoints {f}/model.xnorpp --out {f}/new",
                                     "{f}/model.xnorpp is a packed model file, not a training checkpoint (python -m "
                                     "studies.evaluate --model runs it)"),
    "model file to deploy_tradeoff": (deploy_tradeoff, "--checkpoints {f}/model.xnorpp --out {f}/new",
                                      "{f}/model.xnorpp is a packed model file, not a training checkpoint (python "
                                      "-m studies.evaluate --model runs it)"),
    # the integrity chain
    "export over an existing model file": (export, "--checkpoint {f}/checkpoint.pt",
                                           "{f}/model.xnorpp exists: pass --force to replace it"),
    "checkpoint without a digest, export": (export, "--checkpoint {f}/older/checkpoint.pt",
                                            "checkpoint {f}/older/checkpoint.pt has no digest (an older version of "
                                            "this toolkit wrote it), so its weights cannot be checked: train it again"),
    "checkpoint without a digest, resume": (train, "--out {f}/older --resume --epochs 1 --limit-batches 1 "
                                                   "--input-size 12",
                                            "checkpoint {f}/older/checkpoint.pt has no digest"),
    # values at the extremes
    "--fit-lr inf, reconstruction": (reconstruction, "--fit-lr inf --out {f}/new",
                                     "error: --fit-lr must be a number in (0, 100], got 'inf'"),
    "--fit-lr inf, trained_layers": (trained_layers, "--fit-lr inf --out {f}/new",
                                     "error: --fit-lr must be a number in (0, 100], got 'inf'"),
    "--fit-lr inf, protocol_sweep": (protocol_sweep, "--fit-lr inf --out {f}/new",
                                     "error: --fit-lr must be a number in (0, 100], got 'inf'"),
    "--min-run-time inf": (kernel_bench, "--min-run-time inf --out {f}/new",
                           "error: --min-run-time must be a number in (0, 60], got 'inf'"),
    "huge --input-size, train": (train, "--input-size 100000 --out {f}/new",
                                 "error: --input-size must be an integer from 1 to 4096, got '100000'"),
    "huge --input-size, reconstruction": (reconstruction, "--input-size 100000 --out {f}/new",
                                          "error: --input-size must be an integer from 1 to 4096, got '100000'"),
    "huge --resize, evaluate": (evaluate, "--model {f}/model.xnorpp --resize 1000000000",
                                "error: --resize must be an integer from 1 to 4096, got '1000000000'"),
    "huge --seed": (train, "--seed 1180591620717411303424 --out {f}/new",
                    "error: --seed must be an integer from 0 to 2**63 - 1, got '1180591620717411303424'"),
    "--threads 100000, evaluate": (evaluate, "--model {f}/model.xnorpp --threads 100000",
                                   "error: --threads must be an integer from 1 to"),
    "--threads 1000000000, evaluate": (evaluate, "--model {f}/model.xnorpp --threads 1000000000",
                                       "error: --threads must be an integer from 1 to"),
    "--threads 100000, bench_inference": (bench_inference, "--threads 100000 --out {f}/new",
                                          "error: --threads must be an integer from 1 to"),
    "trials beyond memory, reconstruction": (reconstruction, "--trials 100000 --in-channels 4096 --out {f}/new",
                                             "error: --trials 100000 of a 64x4096x3x3 layer on 16x16 inputs needs at "
                                             "least"),
}


@pytest.mark.parametrize("case", CASES)
def test_mistake_gives_one_line_exit_2_and_writes_nothing(case, files, capsys):
    study, argv, message = CASES[case]
    before = _tree(files)
    with pytest.raises(SystemExit) as exit_:
        study.main(argv.format(f=files).split())
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert message.format(f=files) in err, err
    assert _tree(files) == before


def test_train_without_out_refuses_to_overwrite_a_finished_run(tmp_path, monkeypatch, capsys):
    done = tmp_path / "results" / "train" / "digits-resnet18-case4"
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    monkeypatch.setattr(_cli, "REPO", tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        train.main(["--epochs", "1", "--limit-batches", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "results/train/digits-resnet18-case4 (the default --out) holds a finished run: pass --out DIR" in err
    assert _tree(tmp_path) == before


def test_evaluate_reads_only_val(files, capsys):
    """An ImageFolder tree with val/ alone evaluates (the model's classes and names match)."""
    root = files.parent / "val_only"
    for c in DIGITS:
        (root / "val" / c).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((14, 14, 3), 9 * int(c), np.uint8)).save(root / "val" / c / "0.png")
    result = evaluate.main(["--model", str(files / "model.xnorpp"), "--data", str(root), "--resize", "12",
                            "--backend", "numpy"])
    assert result["images"] == 10


# ---------------------------------------------------------------- every byte of a model file counts


def _offsets(data):
    """Byte offsets in each part of an exported file: header, metadata (the pickle), binary weights, real
    weights, int8 weights and their scales, and the archive's directory."""
    body_start = data.index(b"\n") + 1
    payload = torch.load(io.BytesIO(data[body_start:]), weights_only=True)
    bits = next(iter(payload["binary"].values()))["bits"].numpy().tobytes()
    real = payload["state"]["fc.weight"].numpy().tobytes()
    int8 = payload["int8"]["layers"]["fc"]
    codes, scales = int8["weight_codes"].numpy().tobytes(), int8["weight_scales"].numpy().tobytes()
    names = zipfile.ZipFile(io.BytesIO(data[body_start:])).namelist()
    pickle_name = next(n for n in names if n.endswith("data.pkl"))
    pickle_at = data.index(pickle_name.encode(), body_start) + len(pickle_name) + 100
    return {"header: format": 3, "header: version": data.index(f" {VERSION} ".encode()) + 1,
            "header: length": data.index(b"bytes=") + 7, "header: digest": data.index(b"sha256=") + 20,
            "header: newline": body_start - 1,
            "metadata": data.index(b"model_kwargs", body_start), "metadata: pickle": pickle_at,
            "binary weights": data.index(bits) + len(bits) // 2, "real weights": data.index(real) + 5,
            "int8 weights": data.index(codes) + 7, "int8 scales": data.index(scales) + 2,
            "archive directory": len(data) - 30, "last byte": len(data) - 1}


@pytest.fixture(scope="module")
def exported():
    return _export(_model())


@pytest.mark.parametrize("part", ["header: format", "header: version", "header: length", "header: digest",
                                  "header: newline", "metadata", "metadata: pickle", "binary weights",
                                  "real weights", "int8 weights", "int8 scales", "archive directory",
                                  "last byte"])
@pytest.mark.parametrize("mask", [0x40, 0xFF, 0x01])
def test_a_flipped_byte_anywhere_is_refused(exported, tmp_path, part, mask):
    at = _offsets(exported)[part]
    changed = bytearray(exported)
    changed[at] ^= mask
    path = tmp_path / "flipped.xnorpp"
    path.write_bytes(bytes(changed))
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    message = str(err.value)
    assert f"model file {path} is corrupt: " in message and "\n" not in message, message


def test_intact_file_loads_and_records_its_digest(exported, tmp_path):
    header, _, body = exported.partition(b"\n")
    head = f"xnorpp-packed-model {VERSION} bytes={len(body)} sha256="
    assert header.decode() == head + hashlib.sha256(head.encode() + body).hexdigest()
    (tmp_path / "m.xnorpp").write_bytes(exported)
    _, payload = load_model(tmp_path / "m.xnorpp")
    assert payload["classes"] == DIGITS and payload["version"] == VERSION == 3


def test_other_format_version_is_named(exported, tmp_path):
    body = exported.partition(b"\n")[2]
    head = f"xnorpp-packed-model 9 bytes={len(body)} sha256=".encode()
    path = tmp_path / "v9.xnorpp"
    path.write_bytes(head + hashlib.sha256(head + body).hexdigest().encode() + b"\n" + body)
    with pytest.raises(ModelFileError, match=f"model file {path} has format version 9; this toolkit reads "
                                             "version 3"):
        load_model(path)



# ---------------------------------------------------------------- the kernel build: visible, one per install


def test_each_install_builds_in_its_own_folder(monkeypatch, tmp_path):
    from xnorpp_core.packed import backend

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    here = backend.build_directory()
    assert here.parent == tmp_path and here.name.startswith("xnorpp_packed_conv-")
    assert backend.build_directory() == here  # stable
    monkeypatch.setattr(backend.sys, "prefix", "/another/venv")
    other_venv = backend.build_directory()
    monkeypatch.setattr(backend, "__file__", "/site-packages/xnorpp_core/packed/backend.py")
    assert len({here, other_venv, backend.build_directory()}) == 3


def test_the_build_says_once_that_it_is_building(monkeypatch, tmp_path, capsys):
    from xnorpp_core.packed import backend

    cpp_extension = backend._cpp_extension()

    def fake_load(name, build_directory, **kwargs):
        (Path(build_directory) / f"{name}.so").write_bytes(b"")
        return "module"

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", fake_load)
    try:
        for expected in (1, 0):  # a build, then a load from the install's folder
            backend._compiled.cache_clear()
            assert backend._compiled() == ("module", "")
            err = capsys.readouterr().err
            assert err.count("building the packed C++ kernel (about 40 s, once per install)") == expected, err
            assert err.count("\n") == expected
    finally:
        backend._compiled.cache_clear()


def test_no_cuda_notice_from_a_cpu_kernel_build(tmp_path):
    """torch prints "No CUDA runtime is found, using CUDA_HOME=..." on importing its extension builder where a
    CUDA build of torch finds no GPU; the packed kernel is CPU code, so the notice is dropped."""
    import subprocess
    import sys

    import torch

    if not (torch.version.cuda and torch.cuda._is_compiled()):
        pytest.skip("torch without CUDA: no notice to silence")
    env = {"PATH": "/usr/bin:/bin", "CUDA_HOME": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    root = Path(__file__).parents[1]
    plain = subprocess.run([sys.executable, "-c", "import torch.utils.cpp_extension"], env=env, cwd=root,
                           capture_output=True, text=True)
    ours = subprocess.run([sys.executable, "-c", "from xnorpp_core.packed.backend import _cpp_extension; "
                                                 "_cpp_extension()"], env=env, cwd=root, capture_output=True, text=True)
    assert "No CUDA runtime is found" in plain.stderr  # the notice exists here ...
    assert ours.returncode == 0 and "No CUDA runtime" not in ours.stderr, ours.stderr  # ... and we drop it


# ---------------------------------------------------------------- the integrity chain from checkpoint to model file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained by ``studies.train`` (one short epoch) and its exported model file."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train.main(["--out", str(run), "--epochs", "1", "--limit-batches", "1", "--input-size", "12", "--quiet"])
    export.main(["--checkpoint", str(run / "checkpoint.pt")])
    return run


def _flipped(run, folder):
    """A copy of ``run``'s checkpoint in ``folder`` with one byte of a weight tensor flipped (torch still reads it)."""
    data = bytearray((run / "checkpoint.pt").read_bytes())
    weight = torch.load(run / "checkpoint.pt", weights_only=True)["model"]["fc.weight"]
    at = bytes(data).index(weight.numpy().tobytes()) + 7
    data[at] ^= 0x10
    path = folder / "checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    changed = torch.load(path, weights_only=True)["model"]["fc.weight"]  # loads: only the digest can tell
    assert not torch.equal(changed, weight)
    return path


@pytest.mark.parametrize("command", ["export", "evaluate --checkpoint", "train --resume"])
def test_a_checkpoint_with_one_flipped_byte_is_refused(trained, tmp_path, capsys, command):
    path = _flipped(trained, tmp_path / "flipped")
    argv = {"export": (export, ["--checkpoint", str(path)]),
            "evaluate --checkpoint": (evaluate, ["--model", str(trained / "model.xnorpp"), "--checkpoint", str(path),
                                                 "--backend", "numpy"]),
            "train --resume": (train, ["--out", str(path.parent), "--resume", "--epochs", "2", "--limit-batches", "1",
                                       "--input-size", "12", "--quiet"])}
    study, args = argv[command]
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        study.main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1, err
    assert f"checkpoint {path} is corrupt: digest mismatch (it changed after training wrote it)" in err, err
    assert _tree(tmp_path) == before


def test_the_intact_chain_exports_evaluates_and_resumes(trained, tmp_path, capsys):
    """The same commands on the intact checkpoint: export (asked to replace the file), evaluate with the
    checkpoint (every image's logits equal to the fused emulation's), resume one more epoch."""
    export.main(["--checkpoint", str(trained / "checkpoint.pt"), "--out", str(tmp_path), "--force"])
    assert (tmp_path / "model.xnorpp").read_bytes() == (trained / "model.xnorpp").read_bytes()  # deterministic
    result = evaluate.main(["--model", str(trained / "model.xnorpp"), "--checkpoint", str(trained / "checkpoint.pt"),
                            "--backend", "numpy"])
    assert result["agree_logits_equal"] == result["images"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((trained / "checkpoint.pt").read_bytes())
    summary = train.main(["--out", str(run), "--resume", "--epochs", "2", "--limit-batches", "1", "--input-size",
                          "12", "--quiet"])
    assert summary["epochs_completed"] == 2

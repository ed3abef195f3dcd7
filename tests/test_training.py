"""Training: configuration, one-epoch runs for every model, resume equality, torchrun, ImageFolder, bad input."""

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from studies import train as cli
from xnorpp_core.training.data import digits_splits
from xnorpp_core.layers import METHODS
from xnorpp_core.models import build_model
from xnorpp_core.training import loop as training
from xnorpp_core.training.checkpoint import seal
from xnorpp_core.training import METRICS_COLUMNS, TrainConfig, accuracy, train

REPO = Path(__file__).resolve().parents[1]
EXACT = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"]  # all but timings
TINY = ["--input-size", "8", "--batch-size", "16", "--limit-batches", "3", "--quiet"]  # digits, ResNet-18


def tiny(out, **kw):
    return TrainConfig(**{"input_size": 8, "batch_size": 16, "limit_batches": 3, "quiet": True, "out": str(out),
                          "epochs": 1, **kw})


def subprocess_env():
    """The test process's thread count, so that subprocess runs compute bit-for-bit like each other."""
    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(REPO)}


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "studies.train", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=300, **kw)


# --- configuration and helpers ----------------------------------------------------------------------


def test_recipe_defaults():
    digits, resnet, alexnet = TrainConfig(), TrainConfig(data="/x"), TrainConfig(data="/x", arch="alexnet")
    assert (resnet.epochs, resnet.lr_step, resnet.batch_size, resnet.input_size, resnet.small_input) == (
        80, 25, 256, 224, False)  # Section 5.1.3
    assert (alexnet.batch_size, alexnet.input_size, alexnet.resize) == (400, 227, 256)
    assert (resnet.lr, resnet.weight_decay, resnet.lr_gamma) == (1e-3, 1e-5, 0.1)
    assert (digits.dataset, digits.small_input, digits.lr, digits.weight_decay) == ("digits", True, 1e-3, 1e-5)


@pytest.mark.parametrize("kw, match", [
    ({"arch": "vgg"}, "unknown arch"), ({"method": "case5"}, "unknown method"),
    ({"epochs": 0}, "epochs must be an integer from 1"), ({"epochs": -3}, "epochs must be an integer from 1"),
    ({"batch_size": 0}, "batch_size must be an integer from 1"), ({"batch_size": -1}, "batch_size must be an integer"),
    ({"seed": -1}, "seed must be an integer from 0 to 2\\*\\*63 - 1"), ({"lr": float("nan")}, "lr must be a number"),
    ({"workers": 10 ** 6}, "workers must be an integer from 0 to"), ({"input_size": 10 ** 5}, "input_size must be"),
    ({"lr": 0.0}, "lr must be a number in \\(0, 10\\]"), ({"lr_gamma": 1.5}, "lr_gamma"), ({"workers": -1}, "workers"),
    ({"device": "tpu"}, "unknown device"), ({"pad_mode": "one"}, "unknown pad_mode"),
    ({"limit_batches": 0}, "limit_batches"), ({"input_size": 4}, "digits need"),
    ({"data": "/x", "input_size": 300}, "resize"),
])
def test_config_rejects(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_accuracy_against_hand_counts():
    output = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.2, 0.3]])
    target = torch.tensor([1, 1, 0, 2])  # ranks of the target: 1st, 2nd, 3rd, 2nd
    assert accuracy(output, target, (1, 2, 3, 5)) == [1, 3, 4, 4]


def test_digits_split_is_fixed_and_stratified():
    train_a, val_a, classes = digits_splits(8)
    train_b, val_b, _ = digits_splits(8)
    assert len(train_a) + len(val_a) == 1797 and classes == [str(i) for i in range(10)]
    assert torch.equal(val_a.images, val_b.images)
    counts = np.bincount(val_a.labels.numpy(), minlength=10) / len(val_a)
    full = np.bincount(np.concatenate([train_a.labels.numpy(), val_a.labels.numpy()]), minlength=10) / 1797
    assert np.abs(counts - full).max() < 0.01
    assert train_a[0][0].shape == (3, 8, 8)


# --- one-epoch runs --------------------------------------------------------------------------------


@pytest.mark.parametrize("arch, size", [("resnet18", 8), ("alexnet", 16)])
@pytest.mark.parametrize("method", METHODS)
def test_one_epoch_every_model(tmp_path, arch, size, method):
    summary = train(tiny(tmp_path, arch=arch, method=method, input_size=size, batch_size=8, limit_batches=2))
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert tuple(metrics.columns) == METRICS_COLUMNS and len(metrics) == 1
    assert np.isfinite(metrics.to_numpy()).all()
    assert summary["final"]["val_top1"] == metrics["val_top1"].iloc[0]
    assert summary["protocol"]["config"]["method"] == method
    if method == "case2":  # the checkpoint holds this very architecture, spatial scales included
        model = build_model(arch, method, 10, size, small_input=True)
        model.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True)["model"])
    (tmp_path / "checkpoint.pt").unlink()  # up to 0.3 GB for AlexNet


# --- resume ----------------------------------------------------------------------------------------


def read_metrics(out):
    return pd.read_csv(Path(out) / "metrics.csv")[EXACT]


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    """1 epoch, then --resume to 2, equals 2 straight epochs: metrics and weights, bit for bit."""
    straight = train(tiny(tmp_path / "a", epochs=2))
    train(tiny(tmp_path / "b", epochs=1))
    resumed = train(tiny(tmp_path / "b", epochs=2, resume=True))
    pd.testing.assert_frame_equal(read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b"), check_exact=True)
    assert {k: straight["final"][k] for k in EXACT} == {k: resumed["final"][k] for k in EXACT}
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in "ab")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["rng"][0][k], b["rng"][0][k]) for k in ("torch",))
    # The test can fail: without restoring the RNG state, the augmentation of epoch 2 differs.
    monkeypatch.setattr(training, "_set_rng_state", lambda state: None)
    (tmp_path / "b" / "checkpoint.pt").unlink()
    train(tiny(tmp_path / "b", epochs=1))
    train(tiny(tmp_path / "b", epochs=2, resume=True))
    assert not read_metrics(tmp_path / "a").equals(read_metrics(tmp_path / "b"))


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    """A subprocess killed (SIGKILL) after its first checkpoint, then resumed, ends like a straight run."""
    args = [*TINY, "--epochs", "3", "--limit-batches", "5", "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "studies.train", *args], cwd=REPO, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics, deadline = tmp_path / "metrics.csv", time.time() + 240
    while not metrics.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()
    assert 1 <= len(pd.read_csv(metrics)) < 3  # killed mid-run
    assert run_cli(*args, "--resume").returncode == 0
    train(tiny(tmp_path / "straight", epochs=3, limit_batches=5))  # in this process, same thread count
    pd.testing.assert_frame_equal(read_metrics(tmp_path), read_metrics(tmp_path / "straight"), check_exact=True)


# --- many processes, ImageFolder -------------------------------------------------------------------


def test_torchrun_two_processes_on_gloo(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "studies.train", *TINY, "--limit-batches", "2", "--epochs", "2", "--out", str(out)]
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = pd.read_json(out / "summary.json", typ="series")
    assert summary["protocol"]["processes"] == 2 and len(pd.read_csv(out / "metrics.csv")) == 2
    # Validation is sharded over the processes and summed: 2 processes x 2 batches of 8 images are the
    # first 32 validation images, which one process evaluates here with the checkpoint's weights.
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    model = build_model("resnet18", "case4", 10, 8, small_input=True)
    model.load_state_dict(ckpt["model"])
    _, val, _ = digits_splits(8)
    x, y = zip(*(val[i] for i in range(32)))
    with torch.no_grad():
        output = model.eval()(torch.stack(x))
    y = torch.tensor(y)
    last = ckpt["history"][-1]
    assert last["val_top1"] == pytest.approx(100 * accuracy(output, y)[0] / 32)
    assert last["val_loss"] == pytest.approx(torch.nn.functional.cross_entropy(output, y).item(), rel=1e-5)
    assert len(ckpt["rng"]) == 2  # one RNG state per process


def image_tree(root, classes=("cat", "dog"), train=6, val=3, size=40):
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / c / f"{i}.png")
    return root


def test_imagefolder_tree_through_the_imagenet_path(tmp_path):
    data = image_tree(tmp_path / "data")
    out = tmp_path / "run"
    summary = cli.main(["--data", str(data), "--input-size", "32", "--resize", "36", "--batch-size", "4",
                        "--epochs", "2", "--workers", "2", "--quiet", "--out", str(out)])
    assert summary["protocol"]["dataset"] == {"name": "imagefolder", "classes": 2, "train": 12, "val": 6}
    assert summary["protocol"]["config"]["small_input"] is False  # the ImageNet stem
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2] and (metrics["val_top5"] == 100).all()  # 2 classes


def test_the_recipe_loader_workers_are_at_most_the_cpus_of_each_process(monkeypatch):
    """The ImageFolder recipe's 8 loader workers, but never more than the CPUs of each process (on 2 CPUs the
    DataLoader warned, once per loader, that 8 workers exceed them); the digits load in the main process."""
    for cpus, processes, workers in ((2, None, 2), (64, None, 8), (16, "4", 4), (2, "4", 1)):
        monkeypatch.setattr("xnorpp_core.limits.usable_cpus", lambda: cpus)
        monkeypatch.setattr(training, "usable_cpus", lambda: cpus)
        if processes is None:
            monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        else:
            monkeypatch.setenv("LOCAL_WORLD_SIZE", processes)
        assert TrainConfig(data="/data/imagenet").workers == workers, (cpus, processes)
        assert TrainConfig().workers == 0
    with pytest.raises(ValueError, match="workers must be an integer from 0 to 2, got 3"):
        TrainConfig(data="/data/imagenet", workers=3)


def test_the_imagefolder_loaders_do_not_warn_about_their_workers(tmp_path):
    import warnings

    config = TrainConfig(data=str(image_tree(tmp_path / "data", train=2, val=1)), input_size=32, resize=36,
                         batch_size=2, out=str(tmp_path / "out"))
    train_set, val_set, _ = training.datasets.imagefolder_splits(config.data, 32, 36)
    loaders = training._loaders(config, train_set, val_set, training._Process())[:2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for loader in loaders:
            next(iter(loader))
    assert not [w for w in caught if "worker processes" in str(w.message)], [str(w.message) for w in caught]


# --- bad input: one line, exit 2, nothing written --------------------------------------------------


def fails(capsys, argv, match, out):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("python -m studies.train: error: "), err
    assert match in err, err
    return err


@pytest.mark.parametrize("argv, match", [
    (["--arch", "vgg"], "invalid choice: 'vgg'"), (["--method", "case9"], "invalid choice: 'case9'"),
    (["--epochs", "0"], "--epochs must be an integer from 1 to"), (["--epochs", "-2"], "--epochs must be an integer"),
    (["--batch-size", "0"], "--batch-size must be an integer from 1"),
    (["--batch-size", "x"], "--batch-size must be an integer from 1 to 65536, got 'x'"),
    (["--input-size", "100000"], "--input-size must be an integer from 1 to 4096, got '100000'"),
    (["--seed", "1180591620717411303424"], "--seed must be an integer from 0 to 2**63 - 1"),
    (["--input-size", "4096", "--batch-size", "64"],
     "a batch of 64 images of 4096x4096 through resnet18 needs at least"),
    (["--batch-size", "4096"], "error: --batch-size 4096 is larger than the training split"),
])
def test_bad_options(tmp_path, capsys, argv, match):
    fails(capsys, argv, match, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(tmp_path, capsys):
    fails(capsys, [*TINY, "--device", "cuda"], "CUDA is not available", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, match", [
    ("missing", "data folder"), ("no_val", "missing split folder"), ("classless", "Couldn't find any class folder"),
    ("empty", "Found no valid file"), ("different_classes", "different class folders"),
])
def test_bad_data_folders(tmp_path, capsys, case, match):
    data = tmp_path / "data"
    if case == "no_val":
        image_tree(data, train=1, val=1)
        shutil.rmtree(data / "val")
    elif case == "classless":
        (data / "train").mkdir(parents=True)
        (data / "val").mkdir()
    elif case == "empty":
        image_tree(data, train=1, val=1)
        (data / "val" / "cat" / "0.png").unlink()
    elif case == "different_classes":
        image_tree(data, train=1, val=2)
        (data / "val" / "bird").mkdir()
        (data / "val" / "cat" / "0.png").rename(data / "val" / "bird" / "0.png")
    err = fails(capsys, ["--data", str(data), "--input-size", "32", "--resize", "36"], match, tmp_path / "out")
    assert not (tmp_path / "out").exists(), err


@pytest.mark.parametrize("workers", [0, 2])
def test_corrupt_image_is_named(tmp_path, capsys, workers):
    data = image_tree(tmp_path / "data", train=2, val=1)
    bad = data / "train" / "dog" / "1.png"
    bad.write_bytes(b"not a png at all")
    fails(capsys, ["--data", str(data), "--input-size", "32", "--resize", "36", "--batch-size", "4",
                   "--workers", str(workers), "--quiet"], f"cannot read image {bad}", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_checkpoint_from_another_configuration_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    cli.main([*TINY, "--epochs", "1", "--out", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fails(capsys, [*TINY, "--epochs", "2", "--method", "case1", "--resume"], "another configuration (method: "
          "'case4' there, 'case1' here)", out)
    fails(capsys, [*TINY, "--epochs", "2", "--arch", "alexnet", "--input-size", "16", "--resume"],
          "another configuration (arch: 'resnet18' there, 'alexnet' here", out)
    fails(capsys, [*TINY, "--epochs", "2"], "pass --resume to continue it", out)
    (out / "checkpoint.pt").write_bytes(b"garbage")
    fails(capsys, [*TINY, "--epochs", "2", "--resume"], "checkpoint.pt is not a PyTorch file", out)
    before["checkpoint.pt"] = b"garbage"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing was touched


def test_the_command_line_exits_2_with_one_line(tmp_path):
    done = run_cli("--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "does not exist" in done.stderr
    assert not (tmp_path / "out").exists()


def test_every_option_is_documented_once():
    """Every flag has its help text in --help (from TrainConfig); the docstring does not list them again."""
    for action in cli.build_parser()._actions:
        assert action.help, action.option_strings
        for flag in action.option_strings:
            assert flag not in ("--arch", "--epochs", "--lr-step") or flag + " " not in cli.__doc__.split("\n\n", 2)[2]


# --- the choices of docs/models.md: every flag changes the model or the recipe ----------------------


def doc_flags():
    """The flags named in the Flag column of docs/models.md's tables, e.g. ``"--resize-mode square"``."""
    import re

    flags = []
    for line in (REPO / "docs" / "models.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 6 and cells[0] not in ("Choice", "---"):
            flags += re.findall(r"`(--[a-z-]+(?: [a-z_0-9]+)?)`", cells[5])
    return flags


def config_of(argv):
    from studies._cli import config_from_args

    return config_from_args(cli.PROG, TrainConfig, cli.build_parser().parse_args(argv))


def built(config, seed=0):
    torch.manual_seed(seed)
    return build_model(config.arch, config.method, 10, config.input_size, **config.model_options()).eval()


def model_differs(default, flagged):
    """Different parameters or buffers (names or shapes), or different outputs from the same seed."""
    a, b = built(default), built(flagged)
    shapes = [{k: v.shape for k, v in m.state_dict().items()} for m in (a, b)]
    x = torch.randn(2, 3, default.input_size, default.input_size)
    with torch.no_grad():
        return shapes[0] != shapes[1] or not torch.equal(a(x), b(x))


def transform_output_sizes(config, tmp_path):
    """The (width, height) of a 40x48 image after each split's first transform (the resize)."""
    from xnorpp_core.training.data import imagefolder_splits

    data = image_tree(tmp_path / "data", train=1, val=1)
    train_set, val_set, _ = imagefolder_splits(data, config.input_size, config.resize_to, config.hflip)
    image = Image.new("RGB", (48, 40))
    return [s.transform.transforms[0](image).size for s in (train_set, val_set)]


def weights_seen_in_training(config, tmp_path, monkeypatch):
    """The first binary conv's initial weights (scaled beyond [-1, 1]) and its weights at the first training
    forward."""
    from xnorpp_core.layers import BinaryConv2d

    seen, build = [], training.build_model

    def build_and_watch(*args, **kw):
        model = build(*args, **kw)
        conv = next(m for m in model.modules() if isinstance(m, BinaryConv2d))
        if conv.weight.is_meta:  # the size check's model, built on the meta device
            return model
        with torch.no_grad():
            conv.weight.mul_(50)
        seen.append(conv.weight.detach().clone())
        conv.register_forward_pre_hook(lambda m, a: seen.append(m.weight.detach().clone()) if m.training else None)
        return model

    monkeypatch.setattr(training, "build_model", build_and_watch)
    train(dataclasses.replace(config, out=str(tmp_path), epochs=1, limit_batches=1, batch_size=8, quiet=True))
    return seen[0], seen[1]  # (o, c, kh, kw) each


BASE = {"--alexnet-widths": ["--arch", "alexnet", "--input-size", "16"]}  # default: ResNet-18 on 8x8 digits


@pytest.mark.parametrize("flag", doc_flags())
def test_every_flag_of_the_models_doc_changes_the_model_or_the_recipe(flag, tmp_path, monkeypatch):
    name = flag.split()[0]
    argv = BASE.get(name, ["--input-size", "8"])
    default, flagged = config_of(argv), config_of(argv + flag.split())
    assert default != flagged, flag
    if name in ("--alexnet-widths", "--resnet-shortcut", "--no-bn-affine", "--pad-mode"):
        assert model_differs(default, flagged), flag
    elif name in ("--resize-mode", "--no-hflip"):
        default, flagged = (dataclasses.replace(c, data="/x", input_size=32, resize=36) for c in (default, flagged))
        if name == "--resize-mode":  # shorter side 40 -> 36 keeps the aspect ratio; the square does not
            assert transform_output_sizes(default, tmp_path) == [(43, 36)] * 2
            assert transform_output_sizes(flagged, tmp_path / "b") == [(36, 36)] * 2
        else:
            from xnorpp_core.training.data import imagefolder_splits

            data = image_tree(tmp_path / "data", train=1, val=1)
            kinds = [{type(t).__name__ for t in imagefolder_splits(data, 32, 36, c.hflip)[0].transform.transforms}
                     for c in (default, flagged)]
            assert kinds[0] - kinds[1] == {"RandomHorizontalFlip"}
    elif name == "--clamp-weights":
        w0, w = weights_seen_in_training(flagged, tmp_path / "on", monkeypatch)
        expect = np.clip(w0.numpy() - w0.numpy().mean(axis=1, keepdims=True), -1, 1)  # centred over c, clamped
        np.testing.assert_allclose(w.numpy(), expect, rtol=1e-6, atol=1e-6)
        w0, w = weights_seen_in_training(default, tmp_path / "off", monkeypatch)
        assert torch.equal(w, w0) and w.abs().max() > 1
    else:
        pytest.fail(f"docs/models.md names {flag}, which this test does not check")


def test_the_models_doc_names_the_choice_flags():
    flags = {f.split()[0] for f in doc_flags()}
    assert {"--alexnet-widths", "--resnet-shortcut", "--no-bn-affine", "--clamp-weights",
            "--resize-mode"} <= flags


def test_default_alexnet_is_the_papers_and_options_need_their_arch():
    config = TrainConfig(arch="alexnet")
    assert config.alexnet_widths == "paper" and config.model_options()["widths"] == "paper"
    assert TrainConfig().model_options()["shortcut"] == "conv"  # ResNet-18's default is unchanged
    assert "widths" not in TrainConfig().model_options()
    with pytest.raises(ValueError, match="alexnet_widths needs arch alexnet"):
        TrainConfig(alexnet_widths="torchvision")
    with pytest.raises(ValueError, match="resnet_shortcut needs arch resnet18"):
        TrainConfig(arch="alexnet", resnet_shortcut="binary")
    with pytest.raises(ValueError, match="unknown resize_mode"):
        TrainConfig(resize_mode="stretch")


def test_checkpoint_of_the_torchvision_alexnet_is_refused(tmp_path, capsys):
    """A checkpoint of the former default (torchvision's widths, or written before the field existed)
    cannot be resumed with the paper's AlexNet: the differing field is named."""
    out = tmp_path / "out"
    alexnet = ["--arch", "alexnet", "--input-size", "16", "--batch-size", "8", "--limit-batches", "1", "--quiet"]
    cli.main([*alexnet, "--alexnet-widths", "torchvision", "--epochs", "1", "--out", str(out)])
    fails(capsys, [*alexnet, "--epochs", "2", "--resume"],
          "another configuration (--alexnet-widths: 'torchvision' there, 'paper' here)", out)
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    del ckpt["identity"]["alexnet_widths"]  # as written before the field existed (with its own digest)
    torch.save(seal(ckpt), out / "checkpoint.pt")
    fails(capsys, [*alexnet, "--epochs", "2", "--resume"], "--alexnet-widths: None there, 'paper' here", out)


# --- the recipe as applied, read back from a real run ------------------------------------------------


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory):
    """Two tiny epochs with a drop after each: what the run wrote, not what the config says."""
    out = tmp_path_factory.mktemp("recipe")
    config = TrainConfig(input_size=8, batch_size=16, limit_batches=2, quiet=True, out=str(out), epochs=2,
                         lr_step=1, lr=2e-3, lr_gamma=0.5, weight_decay=3e-4)
    train(config)
    return config, pd.read_csv(out / "metrics.csv"), torch.load(out / "checkpoint.pt", weights_only=True)


def test_the_learning_rate_drops_on_schedule(two_epoch_run):
    config, metrics, ckpt = two_epoch_run
    # the lr each epoch trained with: 2e-3, then 2e-3 x 0.5 after the drop at the end of epoch 1
    np.testing.assert_allclose(metrics["lr"], [2e-3, 1e-3], rtol=1e-12)
    assert ckpt["scheduler"]["last_epoch"] == 2
    assert [g["lr"] for g in ckpt["optimizer"]["param_groups"]] == pytest.approx([5e-4])  # after the second drop


def test_the_optimizer_applies_the_weight_decay(two_epoch_run):
    config, _, ckpt = two_epoch_run
    groups = ckpt["optimizer"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [3e-4]
    assert sum(len(g["params"]) for g in groups) == len(ckpt["model"]) - sum(
        1 for k in ckpt["model"] if "running_" in k or "num_batches_tracked" in k)  # every parameter decays
    assert all(len(s) > 0 for s in ckpt["optimizer"]["state"].values())  # and was stepped
@pytest.fixture
def no_data_loading(monkeypatch):
    """Bad options must be refused before any data is loaded."""
    def refuse(*args, **kwargs):
        raise AssertionError("data was loaded before the options were checked")

    monkeypatch.setattr(training.datasets, "digits_splits", refuse)
    monkeypatch.setattr(training.datasets, "imagefolder_splits", refuse)


@pytest.mark.parametrize("argv, match", [
    (["--input-size", "8", "--no-small-input"], "--input-size 8 is too small for resnet18"),
    (["--data", "IMAGES", "--input-size", "3", "--resize", "8", "--small-input"], "--input-size 3 is too small"),
    (["--arch", "alexnet", "--input-size", "8"], "--input-size 8 is too small for alexnet"),
    (["--data", "IMAGES", "--input-size", "7", "--resize", "8"], "--input-size 7 is too small for resnet18"),
])
def test_input_too_small_for_the_network(tmp_path, capsys, no_data_loading, argv, match):
    argv = [str(tmp_path) if a == "IMAGES" else a for a in argv]
    fails(capsys, ["--quiet", *argv], match, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_refused_before_any_data(tmp_path, capsys, no_data_loading):
    existing = tmp_path / "a_file"
    existing.write_text("keep me")
    fails(capsys, TINY, "exists and is not a folder", existing)
    assert existing.read_text() == "keep me"
    fails(capsys, TINY, "cannot write", existing / "run")  # a file where a folder should be
    fails(capsys, TINY, "cannot write", Path("/proc/xnorpp-no-such-run"))  # not writable, even by root


def test_data_that_is_a_file_is_named_as_such(tmp_path, capsys):
    data = tmp_path / "data.tar"
    data.write_bytes(b"")
    fails(capsys, ["--data", str(data)], f"data folder {data} is a file, not a folder", tmp_path / "out")


def test_resume_with_fewer_epochs_than_completed_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    cli.main([*TINY, "--epochs", "2", "--out", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    fails(capsys, [*TINY, "--epochs", "1", "--resume"], "has completed 2 epochs, more than --epochs 1", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_config_json_records_only_what_applies(tmp_path):
    import json

    cli.main([*TINY, "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["amp"] is False  # no mixed precision on a CPU
    assert config["resize"] is None and config["hflip"] is None  # ImageFolder options, not the digits'
    assert config["input_size"] == 8 and config["method"] == "case4"

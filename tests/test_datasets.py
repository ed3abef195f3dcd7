"""Fashion-MNIST and CIFAR-10: the readers on tiny files in the exact formats (and on damaged ones), the
transforms against hand computations, and training through ``studies.train``.

The files are built byte by byte (``tests/datafiles.py``: idx headers, pickled batches), so every test runs on
any machine; the one test that reads Debian's Fashion-MNIST files runs where the package is installed.
"""

import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision import datasets as tv_datasets

from datafiles import CIFAR, FASHION, cifar_files, fashion_files, idx
from studies import train as cli
from xnorpp_core.models import build_model
from xnorpp_core.training import accuracy, data
from xnorpp_core.training import readers

REPO = Path(__file__).resolve().parents[1]
RUN = ["--epochs", "1", "--batch-size", "4", "--limit-batches", "2", "--quiet"]


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fashion")
    return folder, fashion_files(folder)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar") / readers.CIFAR10_FOLDER
    return folder, cifar_files(folder)


# --- the readers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_files_read_as_written(tmp_path, gz):
    arrays = fashion_files(tmp_path, gz=gz)
    train, val, classes = data.splits(f"fashion-mnist:{tmp_path}", 28)
    assert classes == list(tv_datasets.FashionMNIST.classes) and len(classes) == 10
    for split, got in (("train", train), ("val", val)):
        images, labels = arrays[split]
        assert got.images.dtype == torch.uint8 and tuple(got.images.shape) == (len(images), 1, 28, 28)
        assert np.array_equal(got.images[:, 0].numpy(), images) and np.array_equal(got.labels.numpy(), labels)


def test_cifar10_batches_read_as_written(cifar, tmp_path):
    folder, batches = cifar
    for root, written in ((folder, batches), (folder.parent, batches),  # the batches' folder or the one above it
                          (tmp_path, cifar_files(tmp_path, seed=1, keys=lambda s: s.encode()))):
        train, val, classes = data.splits(f"cifar10:{root}", 32)
        assert classes[:2] == ["airplane", "automobile"] and len(classes) == 10
        expected = np.concatenate([written[n]["data" if "data" in written[n] else b"data"]
                                   for n in readers.CIFAR10_FILES["train"]])
        assert tuple(train.images.shape) == (5 * CIFAR["train"], 3, 32, 32) and len(val) == CIFAR["val"]
        # data row = the red, green and blue 32x32 planes, row-major
        assert np.array_equal(train.images.numpy().reshape(len(expected), -1), expected)
        assert train.images[1, 2, 0, 5].item() == expected[1, 2 * 1024 + 0 * 32 + 5]


def test_a_pickle_naming_a_function_is_refused_without_calling_it(cifar, tmp_path):
    folder, _ = cifar
    for p in folder.iterdir():
        (tmp_path / p.name).write_bytes(p.read_bytes())
    marker = tmp_path / "called"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "data_batch_2").write_bytes(pickle.dumps({"data": Payload()}, protocol=2))
    with pytest.raises(data.DataError, match="data_batch_2 is not a CIFAR-10 python batch: UnpicklingError: it names "
                                             "io.open, which a CIFAR-10 batch does not hold"):
        data.splits(f"cifar10:{tmp_path}", 32)
    assert not marker.exists()


def damage_fashion(folder, case):
    """Damage the tiny Fashion-MNIST in ``folder`` (gzipped files) as ``case`` says; returns the file hit."""
    name = {"missing file": "t10k-labels-idx1-ubyte.gz", "wrong magic": "train-images-idx3-ubyte.gz",
            "label out of range": "train-labels-idx1-ubyte.gz"}.get(case, "train-images-idx3-ubyte.gz")
    path = folder / name
    raw = gzip.decompress(path.read_bytes())
    images = np.zeros((3, 28, 28), np.uint8)
    writes = {
        "wrong magic": gzip.compress(idx(np.zeros((3, 28), np.uint8))),  # labels-like: 2 dimensions
        "truncated": gzip.compress(raw[:-5]),
        "trailing bytes": gzip.compress(raw + b"\0"),
        "short header": gzip.compress(raw[:10]),
        "other type": gzip.compress(idx(images, magic=bytes([0, 0, 9, 3]))),  # signed bytes
        "wrong image size": gzip.compress(idx(np.zeros((FASHION["train"], 27, 27), np.uint8))),
        "wrong count": gzip.compress(idx(np.zeros((FASHION["train"] - 1, 28, 28), np.uint8))),
        "no image": gzip.compress(idx(np.zeros((0, 28, 28), np.uint8))),
        "label out of range": gzip.compress(idx(np.full(FASHION["train"], 10, np.uint8))),
        "bad gzip": path.read_bytes()[:40],
    }
    if case == "missing file":
        path.unlink()
    else:
        path.write_bytes(writes[case])
    return path


FASHION_DAMAGE = {
    "missing file": "missing {folder}/t10k-labels-idx1-ubyte (or t10k-labels-idx1-ubyte.gz)",
    "wrong magic": "{path} is not an idx file of unsigned bytes in 3 dimension(s) (magic number 00000802",
    "truncated": "{path} holds 18811 bytes after its header, which announces 24x28x28 = 18816: truncated",
    "trailing bytes": "{path} holds 18817 bytes after its header, which announces 24x28x28 = 18816: trailing",
    "short header": "{path} is truncated: 10 bytes, shorter than its 16-byte header",
    "other type": "(magic number 00000903, expected 00000803)",
    "wrong image size": "{path} holds 27x27 images, expected 28x28",
    "wrong count": "{path} holds 23 images but {folder}/train-labels-idx1-ubyte.gz 24 labels",
    "no image": "{path} holds 0 images but",
    "label out of range": "{path} has label 10, outside 0-9 (10 classes)",
    "bad gzip": "{path} is a damaged gzip file",
}


def test_an_empty_fashion_mnist_split_is_named(tmp_path):
    folder = tmp_path / "fashion"
    fashion_files(folder)
    for name in readers.FASHION_MNIST_FILES["val"]:
        (folder / f"{name}.gz").write_bytes(gzip.compress(idx(np.zeros((0,) + ((28, 28) if "images" in name
                                                                                  else ()), np.uint8))))
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz holds no image"):
        data.splits(f"fashion-mnist:{folder}", 28)


def damage_cifar(folder, case):
    path = folder / {"missing meta": readers.CIFAR10_META, "nine class names": readers.CIFAR10_META,
                     "test batch": "test_batch"}.get(case, "data_batch_3")
    batch = pickle.loads((folder / ("test_batch" if case == "test batch" else "data_batch_3")).read_bytes())
    rng = np.random.default_rng(0)
    writes = {
        "bad pickle": b"this is not a pickle",
        "truncated pickle": path.read_bytes()[:100],
        "not a dict": pickle.dumps([1, 2, 3], protocol=2),
        "data of another shape": pickle.dumps({**batch, "data": batch["data"][:, :3071]}, protocol=2),
        "data of another type": pickle.dumps({**batch, "data": batch["data"].astype(np.float32)}, protocol=2),
        "no data": pickle.dumps({"labels": batch["labels"]}, protocol=2),
        "wrong count": pickle.dumps({**batch, "labels": batch["labels"][:-1]}, protocol=2),
        "test batch": pickle.dumps({**batch, "labels": [10] + batch["labels"][1:]}, protocol=2),
        "labels not indices": pickle.dumps({**batch, "labels": ["a"] * len(batch["labels"])}, protocol=2),
        "nine class names": pickle.dumps({"label_names": [f"c{i}" for i in range(9)]}, protocol=2),
        "random bytes": rng.integers(0, 256, 300, dtype=np.uint8).tobytes(),
    }
    if case in ("missing batch", "missing meta"):
        path.unlink()
    else:
        path.write_bytes(writes[case])
    return path


CIFAR_DAMAGE = {
    "missing batch": "missing {path}: CIFAR-10 needs data_batch_1, data_batch_2",
    "missing meta": "missing {path}: CIFAR-10 needs",
    "bad pickle": "{path} is not a CIFAR-10 python batch: UnpicklingError",
    "truncated pickle": "{path} is not a CIFAR-10 python batch:",
    "random bytes": "{path} is not a CIFAR-10 python batch:",
    "not a dict": "{path} is not a CIFAR-10 python batch: it holds a list, not a dict",
    "data of another shape": "{path}: data is uint8 (4, 3071), expected uint8 (N, 3072)",
    "data of another type": "{path}: data is float32 (4, 3072), expected uint8",
    "no data": "{path}: data is NoneType, expected uint8 (N, 3072)",
    "wrong count": "{path} holds 4 images but 3 labels",
    "test batch": "{path} has label 10, outside 0-9 (10 classes)",
    "labels not indices": "{path}: labels are not a list of class indices",
    "nine class names": "{path} has no list of 10 class names (label_names)",
}


DAMAGE = {"fashion-mnist": (fashion_files, damage_fashion, FASHION_DAMAGE),
          "cifar10": (cifar_files, damage_cifar, CIFAR_DAMAGE)}


@pytest.mark.parametrize("dataset, case", [(d, c) for d, (_, _, cases) in DAMAGE.items() for c in cases])
def test_damaged_files_exit_2_in_one_line(tmp_path, capsys, dataset, case):
    write, damage, messages = DAMAGE[dataset]
    folder = tmp_path / dataset
    write(folder)
    path = damage(folder, case)
    err = fails(capsys, ["--data", f"{dataset}:{folder}", *RUN], tmp_path / "out")
    assert messages[case].format(path=path, folder=folder) in err


@pytest.mark.parametrize("argv, match", [
    (["--data", "cifar10"], "cifar10 needs the folder of its python batches: --data cifar10:DIR"),
    (["--data", "cifar10:"], "cifar10 needs the folder"),
    (["--data", "cifar10:/no/such/folder"], "CIFAR-10 folder /no/such/folder does not exist"),
    (["--data", "fashion-mnist:/no/such/folder"], "Fashion-MNIST folder /no/such/folder does not exist"),
    (["--data", "fashion-mnist:FASHION", "--input-size", "32"], "fashion-mnist images are 28x28: --input-size must "
                                                                "be 28, got 32"),
])
def test_bad_data_options_exit_2_in_one_line(fashion, tmp_path, capsys, argv, match):
    argv = [a.replace("FASHION", str(fashion[0])) for a in argv]
    fails(capsys, [*argv, *RUN], tmp_path / "out", match)


def test_debian_path_is_named_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "FASHION_MNIST_ROOT", str(tmp_path / "absent"))
    with pytest.raises(data.DataError, match=r"absent does not exist \(install Debian's package "
                                             r"dataset-fashion-mnist, or pass --data fashion-mnist:DIR\)"):
        data.fashion_mnist_splits(data.FASHION_MNIST_ROOT)


def test_the_data_vocabulary():
    assert data.parse_data(None) == data.DataSource("digits")
    assert data.parse_data("fashion-mnist") == data.DataSource("fashion-mnist", data.FASHION_MNIST_ROOT)
    assert data.parse_data("fashion-mnist:/d") == data.DataSource("fashion-mnist", "/d")
    assert data.parse_data("cifar10:rel/d") == data.DataSource("cifar10", "rel/d")
    assert data.parse_data("./fashion-mnist") == data.DataSource("imagefolder", "./fashion-mnist")
    assert data.parse_data(Path("/data/imagenet")).name == "imagenet"


# --- the transforms --------------------------------------------------------------------------------


def by_hand(image, train_images):
    """The validation transform of one uint8 image (C, H, W), in numpy: scaled to [0, 1], minus the training
    images' per-channel mean over all pixels, over their standard deviation; grey repeated to 3 channels."""
    mean = train_images.mean(axis=(0, 2, 3), dtype=np.float64)  # (C,), in bytes
    mean_square = np.square(train_images.astype(np.uint16)).mean(axis=(0, 2, 3), dtype=np.float64)
    std = np.sqrt(mean_square - mean ** 2)
    x = (image - mean[:, None, None]) / std[:, None, None]  # the 1/255 of both cancels
    return np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_validation_transform_equals_a_hand_computation(fashion, cifar, dataset):
    folder, size = (fashion[0], 28) if dataset == "fashion-mnist" else (cifar[0], 32)
    train, val, _ = data.splits(f"{dataset}:{folder}", size)
    assert (val.shift, val.hflip) == (0, False)  # nothing random
    expected = by_hand(val.images[3].numpy(), train.images.numpy())
    torch.manual_seed(0)
    first = val[3][0]
    torch.manual_seed(1)
    assert torch.equal(val[3][0], first)
    np.testing.assert_allclose(first.numpy(), expected, rtol=0, atol=1e-5)
    # the loader of the training loop: the same images, in order
    loader = data.InMemoryLoader(val, torch.utils.data.BatchSampler(range(len(val)), 5, False))
    x, y = next(iter(loader))
    np.testing.assert_allclose(x[3].numpy(), expected, rtol=0, atol=1e-5)
    assert torch.equal(y, val.labels[:5])


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_training_augmentation_shifts_and_flips_each_image(fashion, cifar, dataset):
    """Each augmented image is its own shift by (dy, dx) of at most ``size // 8`` (zero border) and its own
    flip, redrawn here from a copy of the generator and applied by hand."""
    folder, size = (fashion[0], 28) if dataset == "fashion-mnist" else (cifar[0], 32)
    train, _, _ = data.splits(f"{dataset}:{folder}", size)
    s = size // 8
    assert (train.shift, train.hflip) == (s, True)
    images = train.images[:8]
    generator = torch.Generator().manual_seed(5)
    copy = torch.Generator().set_state(generator.get_state())
    out = train.transform(images, generator).numpy()
    offsets = torch.randint(0, 2 * s + 1, (8, 2), generator=copy).numpy()
    flips = (torch.rand(8, generator=copy) < 0.5).numpy()
    train_images = train.images.numpy()
    for i, ((dy, dx), flip) in enumerate(zip(offsets, flips)):
        padded = np.pad(images[i].numpy(), ((0, 0), (s, s), (s, s)))
        crop = padded[:, dy:dy + size, dx:dx + size]
        np.testing.assert_allclose(out[i], by_hand(crop[:, :, ::-1] if flip else crop, train_images), atol=1e-5)
    assert len({tuple(o) for o in offsets}) > 1 and 0 < flips.sum() < 8  # each image its own draw
    many = torch.randint(0, 2 * s + 1, (4000, 2), generator=torch.Generator().manual_seed(0))
    assert len(np.unique(many.numpy(), axis=0)) == (2 * s + 1) ** 2
    no_flip = data.splits(f"{dataset}:{folder}", size, hflip=False)[0]
    assert not no_flip.hflip


def test_statistics_are_those_of_the_training_split(fashion):
    train, val, _ = data.splits(f"fashion-mnist:{fashion[0]}", 28)
    scaled = fashion[1]["train"][0] / 255
    assert val.mean == train.mean and np.isclose(train.mean[0], scaled.mean(), atol=1e-12)
    assert np.isclose(train.std[0], scaled.std(), atol=1e-12)


# --- training --------------------------------------------------------------------------------------


def fails(capsys, argv, out, match=""):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("python -m studies.train: error: "), err
    assert match in err, err
    assert not Path(out).exists()
    return err


@pytest.mark.parametrize("dataset", ["fashion-mnist", "cifar10"])
def test_one_epoch_through_the_command_line(fashion, cifar, tmp_path, dataset):
    folder = fashion[0] if dataset == "fashion-mnist" else cifar[0]
    out = tmp_path / "run"
    summary = cli.main(["--data", f"{dataset}:{folder}", *RUN, "--out", str(out)])
    sizes = FASHION if dataset == "fashion-mnist" else {"train": 5 * CIFAR["train"], "val": CIFAR["val"]}
    assert summary["protocol"]["dataset"] == {"name": dataset, "classes": 10, **sizes}
    config = json.loads((out / "config.json").read_text())
    assert (config["input_size"], config["small_input"], config["hflip"], config["resize"], config["lr_step"]) == (
        data.NATIVE_SIZE[dataset], True, True, None, 10)
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 1 and np.isfinite(metrics.drop(columns="lr").to_numpy()).all()


def test_resumed_run_equals_an_uninterrupted_one(fashion, tmp_path):
    argv = ["--data", f"fashion-mnist:{fashion[0]}", "--batch-size", "4", "--limit-batches", "1", "--quiet",
            "--lr-step", "1"]
    cli.main([*argv, "--epochs", "2", "--out", str(tmp_path / "straight")])
    cli.main([*argv, "--epochs", "1", "--out", str(tmp_path / "resumed")])
    cli.main([*argv, "--epochs", "2", "--resume", "--out", str(tmp_path / "resumed")])
    columns = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5"]
    straight, resumed = (pd.read_csv(tmp_path / r / "metrics.csv")[columns] for r in ("straight", "resumed"))
    pd.testing.assert_frame_equal(straight, resumed)
    assert straight.train_loss.iloc[0] != straight.train_loss.iloc[1]


def test_torchrun_shards_the_images_held_in_memory(fashion, tmp_path):
    """Two processes on gloo: validation is sharded (rank r takes images r, r + 2, ...) and summed, so with 1 batch
    of 4 images per process it scores the first 8 validation images, as one process does here."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "studies.train", "--data", f"fashion-mnist:{fashion[0]}", "--epochs", "1", "--batch-size", "8",
           "--limit-batches", "1", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    model = build_model("resnet18", "case4", 10, 28, small_input=True)
    model.load_state_dict(ckpt["model"])
    _, val, _ = data.splits(f"fashion-mnist:{fashion[0]}", 28)
    with torch.no_grad():
        output = model.eval()(torch.stack([val[i][0] for i in range(8)]))
    assert ckpt["history"][-1]["val_top1"] == pytest.approx(100 * accuracy(output, val.labels[:8])[0] / 8)
    assert ckpt["history"][-1]["val_loss"] == pytest.approx(
        torch.nn.functional.cross_entropy(output, val.labels[:8]).item(), rel=1e-5)


@pytest.mark.skipif(not Path(data.FASHION_MNIST_ROOT).is_dir(), reason="Debian's dataset-fashion-mnist is not "
                    "installed (the tiny files above cover the same code)")
def test_trains_from_debians_fashion_mnist(tmp_path):
    out = tmp_path / "run"
    summary = cli.main(["--data", "fashion-mnist", *RUN, "--out", str(out)])
    assert summary["protocol"]["dataset"] == {"name": "fashion-mnist", "classes": 10, "train": 60000, "val": 10000}
    assert json.loads((out / "config.json").read_text())["data"] == "fashion-mnist"  # no machine path recorded
    train, val, _ = data.splits("fashion-mnist", 28)
    with gzip.open(Path(data.FASHION_MNIST_ROOT) / "t10k-images-idx3-ubyte.gz") as f:
        first = np.frombuffer(f.read(16 + 784), np.uint8, offset=16).reshape(1, 28, 28)
    np.testing.assert_allclose(val[0][0].numpy(), by_hand(first, train.images.numpy()), atol=1e-5)

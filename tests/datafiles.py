"""Tiny Fashion-MNIST and CIFAR-10 files in their exact formats (idx headers, pickled python batches), for the
tests of the readers, the training loop and the grids: they need no dataset installed."""

import gzip
import pickle
import struct

import numpy as np

from xnorpp_core.training import readers

FASHION = {"train": 24, "val": 12}  # images per split of the tiny Fashion-MNIST
CIFAR = {"train": 4, "val": 10}  # images per data batch (5 of them) and in the test batch


def idx(array, magic=None):
    """The idx file of a uint8 ``array``: the big-endian header (magic, then each size), then the bytes."""
    magic = bytes([0, 0, 8, array.ndim]) if magic is None else magic
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def fashion_files(folder, gz=True, seed=0):
    """The four Fashion-MNIST idx files (``FASHION`` images per split) in ``folder``; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, (image_name, label_name) in readers.FASHION_MNIST_FILES.items():
        images = rng.integers(0, 256, (FASHION[split], 28, 28), dtype=np.uint8)
        labels = np.arange(FASHION[split], dtype=np.uint8) % 10
        for name, array in ((image_name, images), (label_name, labels)):
            raw = idx(array)
            (folder / (f"{name}.gz" if gz else name)).write_bytes(gzip.compress(raw) if gz else raw)
        arrays[split] = (images, labels)
    return arrays


def cifar_batch(n, rng, keys=str):
    return {keys("batch_label"): keys("batch"), keys("labels"): [int(v) for v in rng.integers(0, 10, n)],
            keys("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8), keys("filenames"): [keys("x.png")] * n}


def cifar_files(folder, seed=0, keys=str):
    """CIFAR-10's python batches in ``folder`` (``keys=bytes``: as pickled from python 3 with bytes keys)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in (*readers.CIFAR10_FILES["train"], *readers.CIFAR10_FILES["val"]):
        batches[name] = cifar_batch(CIFAR["val" if name == "test_batch" else "train"], rng, keys)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    meta = {keys("label_names"): [keys(c) for c in ("airplane", "automobile", "bird", "cat", "deer", "dog",
                                                     "frog", "horse", "ship", "truck")]}
    (folder / readers.CIFAR10_META).write_bytes(pickle.dumps(meta, protocol=2))
    return batches

"""The files of Fashion-MNIST (idx) and CIFAR-10 (python batches), read and checked.

Fashion-MNIST (Xiao et al., 2017) ships as four idx files, the format of LeCun's
MNIST: a big-endian header (two zero bytes, the element type ``0x08`` for
unsigned bytes, the number of dimensions ``d``; then ``d`` sizes as 4-byte
integers) followed by the elements in row-major order. Images have ``d = 3``
(count x 28 x 28), labels ``d = 1``. Each file may be gzipped (``NAME.gz``, as
distributed) or not (``NAME``).

CIFAR-10 (Krizhevsky, 2009) ships as python pickles: ``data_batch_1`` ..
``data_batch_5`` (training) and ``test_batch``, each a dict whose ``data`` is a
``(count, 3072)`` uint8 array (the red, green and blue 32x32 planes of each
image, row-major) and whose ``labels`` is a list of ``count`` class indices;
``batches.meta`` holds the class names (``label_names``). A pickle can name
any function to call, so the unpickler accepts only what these files hold
(dicts, lists, strings, numbers and numpy arrays) and refuses any other global.

torchvision's own readers are not used: ``datasets.mnist.read_image_file``
reads uncompressed files only and checks the header with ``assert`` (no file
named, nothing checked under ``python -O``, the byte count not compared with
the header), and ``datasets.CIFAR10`` wants its download folder and checksums
and reports any problem as "Dataset not found or corrupted". Here every problem
is a ``DataError`` that names the file and what is wrong with it, in one line.
"""

import codecs
import gzip
import math
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from torchvision import datasets

from .data import DataError

try:  # numpy's array reconstructors live in numpy._core since numpy 2, in numpy.core before
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # pragma: no cover (numpy 1)
    from numpy.core import multiarray as _multiarray, numeric as _numeric

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "CIFAR10_FILES", "read_idx", "read_fashion_mnist",
           "read_cifar10"]

FASHION_MNIST_CLASSES = tuple(datasets.FashionMNIST.classes)  # T-shirt/top, Trouser, ..., Ankle boot
# split -> (images, labels); each NAME or NAME.gz
FASHION_MNIST_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                       "val": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "val": ("test_batch",)}
CIFAR10_META = "batches.meta"
CIFAR10_FOLDER = "cifar-10-batches-py"  # what cifar-10-python.tar.gz extracts to


def _read_bytes(path):
    """The bytes of ``path``, gunzipped when they start with gzip's magic number."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a damaged gzip file ({e})") from None
    return raw


def read_idx(path, dims):
    """The unsigned bytes of the idx file ``path`` as an array of ``dims`` dimensions (see the module
    docstring); ``DataError`` when its header is not that of ``dims`` dimensions of unsigned bytes, or when
    its length differs from what the header announces."""
    data = _read_bytes(path)
    magic, header = bytes([0, 0, 8, dims]), 4 + 4 * dims
    if data[:4] != magic:
        raise DataError(f"{path} is not an idx file of unsigned bytes in {dims} dimension(s) (magic number "
                        f"{data[:4].hex() or 'missing'}, expected {magic.hex()})")
    if len(data) < header:
        raise DataError(f"{path} is truncated: {len(data)} bytes, shorter than its {header}-byte header")
    shape = struct.unpack(f">{dims}I", data[4:header])
    body, expected = len(data) - header, math.prod(shape)
    if body != expected:
        raise DataError(f"{path} holds {body} bytes after its header, which announces {'x'.join(map(str, shape))} "
                        f"= {expected}: {'truncated' if body < expected else 'trailing bytes'}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find(folder, name):
    """``folder/name`` or ``folder/name.gz``, whichever exists (the first), else ``DataError``."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"missing {folder / name} (or {name}.gz): Fashion-MNIST needs "
                    f"{', '.join(n for pair in FASHION_MNIST_FILES.values() for n in pair)}, gzipped or not")


def _check_labels(labels, classes, path):
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        bad = labels[(labels < 0) | (labels >= classes)][0]
        raise DataError(f"{path} has label {int(bad)}, outside 0-{classes - 1} ({classes} classes)")


def read_fashion_mnist(folder, split, size=28):
    """``(images (N, 1, size, size) uint8, labels (N,) int64)`` of ``split`` ("train" or "val", the 10,000
    test images) from the idx files in ``folder``; ``DataError`` naming the file on any problem."""
    folder = Path(folder)
    image_path, label_path = (_find(folder, name) for name in FASHION_MNIST_FILES[split])
    images, labels = read_idx(image_path, 3), read_idx(label_path, 1).astype(np.int64)
    if images.shape[1:] != (size, size):
        raise DataError(f"{image_path} holds {images.shape[1]}x{images.shape[2]} images, expected {size}x{size}")
    if len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images)} images but {label_path} {len(labels)} labels")
    if not len(images):
        raise DataError(f"{image_path} holds no image")
    _check_labels(labels, len(FASHION_MNIST_CLASSES), label_path)
    return images[:, None], labels


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays; any other global is refused."""

    ALLOWED = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode,  # bytes pickled by python 3 with protocol 2
               **{(f"numpy.{core}.multiarray", "_reconstruct"): _multiarray._reconstruct for core in ("core", "_core")},
               **{(f"numpy.{core}.numeric", "_frombuffer"): _numeric._frombuffer for core in ("core", "_core")}}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch does not hold")


def _unpickle(path):
    """The dict pickled in ``path`` (string keys), or ``DataError``."""
    try:
        with open(path, "rb") as f:
            obj = _BatchUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise DataError(f"missing {path}: CIFAR-10 needs {', '.join(sum(CIFAR10_FILES.values(), ()))} and "
                        f"{CIFAR10_META} (the folder {CIFAR10_FOLDER} of cifar-10-python.tar.gz)") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    except Exception as e:  # a damaged pickle fails in many ways: truncated, garbage opcodes, a refused global
        raise DataError(f"{path} is not a CIFAR-10 python batch: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch: it holds a {type(obj).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def cifar10_folder(root):
    """The folder of CIFAR-10's batches: ``root`` itself, or ``root/cifar-10-batches-py`` when that exists."""
    root = Path(root)
    return root / CIFAR10_FOLDER if (root / CIFAR10_FOLDER).is_dir() else root


def read_cifar10(root, split):
    """``(images (N, 3, 32, 32) uint8, labels (N,) int64, classes)`` of ``split`` ("train": the five data
    batches, "val": the test batch) from ``root`` (see ``cifar10_folder``); ``DataError`` naming the file on
    any problem."""
    folder = cifar10_folder(root)
    meta_path = folder / CIFAR10_META
    names = _unpickle(meta_path).get("label_names")
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (str, bytes)) for n in names):
        raise DataError(f"{meta_path} has no list of 10 class names (label_names)")
    classes = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    images, labels = [], []
    for name in CIFAR10_FILES[split]:
        path = folder / name
        batch = _unpickle(path)
        data, batch_labels = batch.get("data"), batch.get("labels")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataError(f"{path}: data is {found}, expected uint8 (N, 3072), the 32x32 RGB planes of N images")
        try:
            batch_labels = np.asarray(batch_labels, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise DataError(f"{path}: labels are not a list of class indices") from None
        if len(batch_labels) != len(data):
            raise DataError(f"{path} holds {len(data)} images but {len(batch_labels)} labels")
        _check_labels(batch_labels, len(classes), path)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    images, labels = np.concatenate(images), np.concatenate(labels)
    if not len(images):
        raise DataError(f"{folder} holds no {split} image")
    return images, labels, classes

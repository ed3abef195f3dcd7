"""Datasets for training: ImageFolder trees (ImageNet's layout), Fashion-MNIST, CIFAR-10, or the embedded digits.

What ``--data`` names (``parse_data``; one vocabulary in every command):

    (absent)             the embedded digits
    fashion-mnist        Fashion-MNIST from Debian's package dataset-fashion-mnist (``FASHION_MNIST_ROOT``)
    fashion-mnist:DIR    Fashion-MNIST from the four idx files in DIR, gzipped or not
    cifar10:DIR          CIFAR-10 from its python batches in DIR (or in DIR/cifar-10-batches-py)
    DIR                  an ImageFolder tree with DIR/train and DIR/val (``./fashion-mnist`` for a folder of that name)

ImageFolder (Section 5.1.3 of the paper). ``root/train`` and ``root/val`` each
hold one folder per class. Training images are resized (shorter side) to
``resize`` (256) and randomly cropped to ``input_size`` (224 for ResNet, 227
for AlexNet), optionally flipped horizontally; validation images are resized
and centre-cropped. Both are normalised with ImageNet's channel statistics.

Fashion-MNIST and CIFAR-10 (``InMemorySplit``; the files are read by
``xnorpp_core.training.readers``). The training split (60,000 and 50,000
images) trains, the test split (10,000 each) validates. The images stay at
their own size (28x28 grey, 32x32 colour), held as one uint8 tensor on the
training device and transformed a batch at a time there: scaled to [0, 1];
in training shifted at random by up to ``input_size // 8`` pixels (zero
padding, then a random crop back to the original size) and, unless
``hflip=False``, flipped horizontally with probability 1/2 (a mirrored garment
or object is the same class), each image its own draw; normalised with the
training split's mean and standard deviation per channel (over all its
pixels); a grey image repeated over 3 channels. Validation images are only
scaled and normalised: nothing random.

Embedded digits. scikit-learn's 8x8 handwritten digits (1,797 images, 10
classes; they ship inside the package, nothing is downloaded) are upscaled
bilinearly to ``input_size``, repeated over 3 channels, and split once into a
fixed stratified 80/20 train/validation split (``random_state=0``,
independent of the run's seed). Training images are shifted at random by up
to ``input_size // 8`` pixels (zero padding then a random crop); they are not
flipped (a mirrored digit is another symbol). Both are normalised with the
training split's mean and standard deviation.

Calibration (``calibration_images``): ``CALIBRATION_IMAGES`` training images,
evenly spaced over the training split, transformed as the validation images
are (no random crop or flip), observe the ranges of a network's int8 layers.

Every problem with the data raises ``DataError`` with a one-line message that
names the folder or file.
"""

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision import transforms as T

__all__ = ["DataError", "DataSource", "InMemorySplit", "InMemoryLoader", "IMAGENET_MEAN", "IMAGENET_STD",
           "FASHION_MNIST_ROOT", "NATIVE_SIZE", "DATA_HELP", "parse_data", "splits", "val_split", "check_input_size",
           "describe_classes", "check_classes", "load_image", "imagefolder_splits", "imagefolder_val", "digits_splits",
           "fashion_mnist_splits", "cifar10_splits", "CALIBRATION_IMAGES", "calibration_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist
NATIVE_SIZE = {"fashion-mnist": 28, "cifar10": 32}  # the in-memory datasets' image sizes
DATA_HELP = ("an ImageFolder root with train/ and val/ class folders, fashion-mnist (Debian's dataset-fashion-mnist; "
             "fashion-mnist:DIR for the four idx files in DIR) or cifar10:DIR (its python batches)")
CALIBRATION_IMAGES = 32  # training images that calibrate int8 layers (a model file's, the real network's int8 forms)


class DataError(ValueError):
    """A problem with the data (missing folder, empty split, unreadable image), in one line.

    A DataLoader worker re-raises an exception as ``type(e)(traceback text)``;
    the original one-line message is recovered from the traceback's last line.
    """

    def __init__(self, message):
        match = re.search(r"DataError: (.+)\s*$", str(message))
        super().__init__(match.group(1).strip() if match else str(message))


@dataclass(frozen=True)
class DataSource:
    """What ``--data`` names: ``kind`` ("digits", "imagefolder", "fashion-mnist", "cifar10") and its folder."""

    kind: str
    path: str | None = None

    @property
    def name(self):
        """A short name for run folders: the kind, or an ImageFolder's folder name."""
        return Path(self.path).name if self.kind == "imagefolder" else self.kind


def parse_data(spec):
    """The ``DataSource`` that ``spec`` (a ``--data`` value, or None) names; see the module docstring. Reads no
    file; ``DataError`` for ``cifar10`` without a folder."""
    if spec is None:
        return DataSource("digits")
    spec = str(spec)
    kind, colon, path = spec.partition(":")
    if kind == "fashion-mnist":
        return DataSource(kind, path if colon else FASHION_MNIST_ROOT)
    if kind == "cifar10":
        if not (colon and path):
            raise DataError("cifar10 needs the folder of its python batches: --data cifar10:DIR")
        return DataSource(kind, path)
    return DataSource("imagefolder", spec)


def describe_classes(classes, shown=5):
    """Class names for a one-line message: the first ``shown``, then how many more."""
    classes = list(classes)
    return ", ".join(classes[:shown]) + (f", ... {len(classes) - shown} more" if len(classes) > shown else "")


def check_classes(data, classes, source, trained_on):
    """``DataError`` unless the class folders ``classes`` of ``data`` (its name in the message) are those that
    ``source`` (a checkpoint, a model file) was trained on, ``trained_on`` (their names; their number, an int,
    where only that is known), in the same order."""
    count = trained_on if isinstance(trained_on, int) else len(trained_on)
    if len(classes) != count or (not isinstance(trained_on, int) and list(trained_on) != list(classes)):
        known = "" if isinstance(trained_on, int) else f" ({describe_classes(trained_on)})"
        raise DataError(f"{data} has {len(classes)} classes ({describe_classes(classes)}); {source} was trained "
                        f"on {count}{known}")


def load_image(path):
    """An RGB PIL image, or a ``DataError`` naming the file when it cannot be decoded."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"cannot read image {path}: {e}") from None


def _image_folder(root, transform):
    if not root.is_dir():
        raise DataError(f"missing split folder {root}")
    try:
        return datasets.ImageFolder(str(root), transform=transform, loader=load_image)
    except FileNotFoundError as e:  # no class folder, or class folders without any image
        raise DataError(f"empty split {root}: {e}") from None


def _data_root(root):
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"data folder {root} is a file, not a folder")
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    return root


def _normalize():
    return [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def _eval_transform(input_size, resize):
    return T.Compose([T.Resize(resize), T.CenterCrop(input_size)] + _normalize())


def imagefolder_val(root, input_size, resize=256):
    """``(val, classes)`` from ``root/val`` alone (one folder per class; ``root/train`` is not read), resized
    and centre-cropped as in ``imagefolder_splits``."""
    val = _image_folder(_data_root(root) / "val", _eval_transform(input_size, resize))
    return val, val.classes


def imagefolder_splits(root, input_size, resize=256, hflip=True):
    """``(train, val, classes)`` from ``root/train`` and ``root/val`` (one folder per class).

    ``resize`` is ``torchvision.transforms.Resize``'s size: an int resizes the shorter side, ``(h, w)``
    the whole image.
    """
    root = _data_root(root)
    train_tf = [T.Resize(resize), T.RandomCrop(input_size)] + ([T.RandomHorizontalFlip()] if hflip else [])
    train = _image_folder(root / "train", T.Compose(train_tf + _normalize()))
    val, _ = imagefolder_val(root, input_size, resize)
    if train.classes != val.classes:
        raise DataError(f"train and val of {root} have different class folders "
                        f"({len(train.classes)} vs {len(val.classes)})")
    return train, val, train.classes


class TensorImages(Dataset):
    """Images held in one tensor ``(N, 1, H, W)``, repeated to 3 channels, with a transform."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i].expand(3, -1, -1)), int(self.labels[i])


def digits_splits(input_size=16, val_fraction=0.2):
    """``(train, val, classes)`` of scikit-learn's digits, upscaled to ``input_size`` (see the module docstring)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0  # (1797, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(input_size, input_size), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target)
    train_idx, val_idx = train_test_split(torch.arange(len(labels)).numpy(), test_size=val_fraction,
                                          stratify=labels.numpy(), random_state=0)
    mean, std = images[train_idx].mean().item(), images[train_idx].std().item()
    normalize = T.Normalize((mean,) * 3, (std,) * 3)
    train_tf = T.Compose([T.RandomCrop(input_size, padding=input_size // 8), normalize])
    train = TensorImages(images[train_idx], labels[train_idx], train_tf)
    val = TensorImages(images[val_idx], labels[val_idx], normalize)
    return train, val, [str(c) for c in digits.target_names]


def splits(spec, input_size, resize=256, hflip=True):
    """``(train, val, classes)`` of what ``spec`` names (``parse_data``); ``resize`` applies to ImageFolder
    trees, ``hflip`` to all but the digits."""
    source = parse_data(spec)
    if source.kind == "digits":
        return digits_splits(input_size)
    if source.kind == "imagefolder":
        return imagefolder_splits(source.path, input_size, resize, hflip)
    check_input_size(source.kind, input_size)
    reader = fashion_mnist_splits if source.kind == "fashion-mnist" else cifar10_splits
    return reader(source.path, hflip)


def val_split(spec, input_size, resize=256):
    """``(val, classes)`` of what ``spec`` names; of an ImageFolder tree only ``root/val`` is read."""
    source = parse_data(spec)
    if source.kind == "imagefolder":
        return imagefolder_val(source.path, input_size, resize)
    _, val, classes = splits(spec, input_size, resize)
    return val, classes


def check_input_size(kind, input_size):
    """``DataError`` when ``kind`` is held at its own size (``NATIVE_SIZE``) and ``input_size`` is another."""
    size = NATIVE_SIZE.get(kind, input_size)
    if input_size != size:
        raise DataError(f"{kind} images are {size}x{size}: input_size must be {size}, got {input_size}")


# ---------------------------------------------------------------- in memory: Fashion-MNIST, CIFAR-10
def _channel_statistics(images):
    """Per-channel mean and standard deviation (over all pixels, population) of uint8 ``images`` (N, C, H, W)
    scaled to [0, 1], exactly, from each channel's histogram of the 256 byte values."""
    values = np.arange(256) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        counts = np.bincount(np.ascontiguousarray(images[:, c]).reshape(-1), minlength=256)
        m = float(counts @ values / counts.sum())
        mean.append(m)
        std.append(float(np.sqrt(counts @ (values - m) ** 2 / counts.sum())))
    return tuple(mean), tuple(std)


@dataclass(frozen=True, eq=False)
class InMemorySplit(Dataset):
    """A split held as one uint8 tensor ``images`` (N, C, H, W) with ``labels`` (N,), transformed a batch at a
    time on whatever device holds it (see the module docstring).

    ``transform(x, generator)``: uint8 (B, C, H, W) -> float32 (B, 3, H, W). ``shift`` (pixels) and ``hflip``
    are the training augmentation (0 and False: the deterministic validation transform); their draws come
    from the CPU ``generator`` (None: torch's global one), so a run draws the same on any device.
    """

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple
    std: tuple
    shift: int = 0
    hflip: bool = False

    def __len__(self):
        return len(self.labels)

    def to(self, device):
        """This split with its tensors on ``device``."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))

    def transform(self, x, generator=None):
        b, c, h, w = x.shape
        x = x.float().div_(255)  # (B, C, H, W) in [0, 1]
        if self.shift:
            s = self.shift
            offsets = torch.randint(0, 2 * s + 1, (b, 2), generator=generator).to(x.device)  # (B, 2): dy, dx
            rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
            cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
            padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s), zero border
            x = padded[torch.arange(b, device=x.device)[:, None, None, None],
                       torch.arange(c, device=x.device)[None, :, None, None],
                       rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)
        if self.hflip:
            flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)  # (B,)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x = T.functional.normalize(x, self.mean, self.std)
        return x.expand(-1, 3, -1, -1) if c == 1 else x

    def __getitem__(self, i):
        return self.transform(self.images[i:i + 1])[0], int(self.labels[i])


class InMemoryLoader:
    """A DataLoader's place for an ``InMemorySplit``: the index batches of ``batch_sampler``, gathered from the
    split's tensors and transformed on their device, with the augmentation drawn from ``generator``."""

    def __init__(self, split, batch_sampler, generator=None):
        self.split, self.batch_sampler, self.generator = split, batch_sampler, generator

    def __len__(self):
        return len(self.batch_sampler)

    @property
    def sampler(self):
        """The sampler of the index batches (a ``DistributedSampler`` under torchrun), as a DataLoader has it."""
        return self.batch_sampler.sampler

    def __iter__(self):
        for indices in self.batch_sampler:
            i = torch.as_tensor(indices, device=self.split.images.device)
            yield self.split.transform(self.split.images[i], self.generator), self.split.labels[i]


def _in_memory(train_images, train_labels, val_images, val_labels, classes, hflip):
    """``(train, val, classes)``: the training split augmented, both normalised with its statistics."""
    mean, std = _channel_statistics(train_images)
    common = dict(mean=mean, std=std)
    size = train_images.shape[-1]
    as_tensor = torch.from_numpy
    train = InMemorySplit(as_tensor(np.array(train_images)), as_tensor(train_labels), **common, shift=size // 8,
                          hflip=hflip)
    val = InMemorySplit(as_tensor(np.array(val_images)), as_tensor(val_labels), **common)
    return train, val, list(classes)


def fashion_mnist_splits(root=FASHION_MNIST_ROOT, hflip=True):
    """``(train, val, classes)`` of Fashion-MNIST from the idx files in ``root`` (see the module docstring)."""
    from . import readers

    root = Path(root)
    if not root.is_dir():
        hint = (" (install Debian's package dataset-fashion-mnist, or pass --data fashion-mnist:DIR)"
                if str(root) == FASHION_MNIST_ROOT else "")
        raise DataError(f"Fashion-MNIST folder {root} does not exist{hint}")
    train = readers.read_fashion_mnist(root, "train")
    val = readers.read_fashion_mnist(root, "val")
    return _in_memory(*train, *val, readers.FASHION_MNIST_CLASSES, hflip)


def cifar10_splits(root, hflip=True):
    """``(train, val, classes)`` of CIFAR-10 from its python batches in ``root`` (see the module docstring)."""
    from . import readers

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"CIFAR-10 folder {root} does not exist (extract cifar-10-python.tar.gz there)")
    train_images, train_labels, classes = readers.read_cifar10(root, "train")
    val_images, val_labels, _ = readers.read_cifar10(root, "val")
    return _in_memory(train_images, train_labels, val_images, val_labels, classes, hflip)

def calibration_images(spec, input_size, resize=256, count=CALIBRATION_IMAGES):
    """``(images, classes)``: ``count`` training images (all of them when there are fewer), evenly spaced over
    the training split and transformed as the validation images are, float32 ``(n, 3, H, W)``, of the data
    ``spec`` names (``parse_data``: None for the embedded digits; an ImageFolder tree's ``train/``, ``resize``
    as in ``imagefolder_splits``)."""
    source = parse_data(spec)
    if source.kind == "digits":
        train, val, classes = digits_splits(input_size)
        split = TensorImages(train.images, train.labels, val.transform)
    elif source.kind == "imagefolder":
        split = _image_folder(_data_root(source.path) / "train", _eval_transform(input_size, resize))
        classes = split.classes
    else:  # held in memory: the training images through the validation transform
        train, val, classes = splits(spec, input_size, resize)
        picked = torch.linspace(0, len(train) - 1, min(count, len(train))).round().long()
        return val.transform(train.images[picked]).float(), classes
    n = min(count, len(split))
    picked = torch.linspace(0, len(split) - 1, n).round().long().tolist()
    return torch.stack([split[i][0] for i in picked]).float(), classes

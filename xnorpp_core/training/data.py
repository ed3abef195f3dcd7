"""Datasets for training: any ImageFolder tree (ImageNet's layout), or the embedded digits.

ImageFolder (Section 5.1.3 of the paper). ``root/train`` and ``root/val`` each
hold one folder per class. Training images are resized (shorter side) to
``resize`` (256) and randomly cropped to ``input_size`` (224 for ResNet, 227
for AlexNet), optionally flipped horizontally; validation images are resized
and centre-cropped. Both are normalised with ImageNet's channel statistics.

Embedded digits. scikit-learn's 8x8 handwritten digits (1,797 images, 10
classes; they ship inside the package, nothing is downloaded) are upscaled
bilinearly to ``input_size``, repeated over 3 channels, and split once into a
fixed stratified 80/20 train/validation split (``random_state=0``,
independent of the run's seed). Training images are shifted at random by up
to ``input_size // 8`` pixels (zero padding then a random crop); they are not
flipped (a mirrored digit is another symbol). Both are normalised with the
training split's mean and standard deviation.

Every problem with the data raises ``DataError`` with a one-line message that
names the folder or file.
"""

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision import transforms as T

__all__ = ["DataError", "IMAGENET_MEAN", "IMAGENET_STD", "describe_classes", "check_classes", "load_image",
           "imagefolder_splits", "imagefolder_val", "digits_splits"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(ValueError):
    """A problem with the data (missing folder, empty split, unreadable image), in one line.

    A DataLoader worker re-raises an exception as ``type(e)(traceback text)``;
    the original one-line message is recovered from the traceback's last line.
    """

    def __init__(self, message):
        match = re.search(r"DataError: (.+)\s*$", str(message))
        super().__init__(match.group(1).strip() if match else str(message))


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


def imagefolder_val(root, input_size, resize=256):
    """``(val, classes)`` from ``root/val`` alone (one folder per class; ``root/train`` is not read), resized
    and centre-cropped as in ``imagefolder_splits``."""
    val = _image_folder(_data_root(root) / "val", T.Compose([T.Resize(resize), T.CenterCrop(input_size)]
                                                            + _normalize()))
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

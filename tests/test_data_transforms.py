"""The transforms of every dataset against a hand computation: evaluation deterministic and exact, training
augmentation within its stated bounds.

Each dataset's validation split is what every validation number of Tables 1 and 3 is computed on: its transform
must not draw anything (the same image under any seed), and must equal the stated pipeline computed here by hand
in numpy on a known image. ``EVALUATION`` holds, per dataset, the validation split of a known tree and the
expected tensor of its first item.
"""

import numpy as np
import pytest
import torch

from xnorpp_core.training.data import IMAGENET_MEAN, IMAGENET_STD, digits_splits, imagefolder_splits, imagefolder_val

SEEDS = range(8)


def _bilinear_upscale(image, size):
    """Half-pixel bilinear resampling (``align_corners=False``) of a 2-D array to ``size`` x ``size``, by hand."""
    n = image.shape[0]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, None)  # source coordinate of each output pixel
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    w = src - lo
    rows = image[lo] * (1 - w)[:, None] + image[hi] * w[:, None]
    return rows[:, lo] * (1 - w)[None] + rows[:, hi] * w[None]


def _digits(size=16):
    """The digits' validation split and, by hand, its first item: the 8x8 image (values 0..16) upscaled, scaled
    to [0, 1], normalised with the training split's mean and standard deviation, repeated over 3 channels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_idx, val_idx = train_test_split(np.arange(len(digits.target)), test_size=0.2, stratify=digits.target,
                                          random_state=0)
    up = np.stack([_bilinear_upscale(im / 16.0, size) for im in digits.images])
    mean, std = up[train_idx].mean(), up[train_idx].std(ddof=1)
    expected = np.repeat(((up[val_idx[0]] - mean) / std)[None], 3, 0)
    _, val, _ = digits_splits(size)
    assert int(val[0][1]) == digits.target[val_idx[0]]
    return val, expected


def _known_tree(tmp_path, height=6, width=8):
    """An ImageFolder tree with one known RGB image per split; returns its root and the image (H, W, 3) uint8."""
    from PIL import Image

    pixels = (np.arange(height * width * 3).reshape(height, width, 3) * 5 % 256).astype(np.uint8)
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        Image.fromarray(pixels).save(tmp_path / split / "a" / "x.png")
    return tmp_path, pixels


def _imagefolder(tmp_path, via):
    """Validation of the known tree at the shorter side (``resize`` = 6: Resize keeps it as it is) centre-cropped
    to 4x4: by hand, rows 1..4 and columns 2..5, over 255, normalised with ImageNet's statistics."""
    root, pixels = _known_tree(tmp_path)
    val = imagefolder_val(root, 4, resize=6)[0] if via == "val" else imagefolder_splits(root, 4, resize=6)[1]
    crop = pixels[1:5, 2:6].astype(np.float64) / 255.0  # (4, 4, 3): the centre of a 6x8 image
    expected = (crop - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return val, expected.transpose(2, 0, 1)


EVALUATION = {
    "digits": lambda tmp_path: _digits(),
    "imagefolder_val": lambda tmp_path: _imagefolder(tmp_path, "val"),
    "imagefolder_splits": lambda tmp_path: _imagefolder(tmp_path, "splits"),
}


@pytest.mark.parametrize("dataset", list(EVALUATION))
def test_the_evaluation_transform_is_deterministic_and_equals_a_hand_computation(tmp_path, dataset):
    val, expected = EVALUATION[dataset](tmp_path)
    seen = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        seen.append(val[0][0])
    for x in seen[1:]:
        assert torch.equal(x, seen[0]), "the validation transform draws at random"
    assert seen[0].shape == expected.shape
    np.testing.assert_allclose(seen[0].numpy(), expected, rtol=0, atol=1e-5)


def test_the_digits_training_transform_shifts_within_its_padding_and_never_flips():
    """Each training item is the normalised image shifted by at most ``size // 8`` pixels with zeros brought in
    (a random crop of the zero-padded image), never mirrored; over several draws the shift varies."""
    size = 16
    train, _, _ = digits_splits(size)
    pad = size // 8
    normalize = train.transform.transforms[-1]
    image = train.images[0].expand(3, -1, -1)
    shifts = set()
    for seed in range(40):
        torch.manual_seed(seed)
        x = train[0][0]
        padded = torch.nn.functional.pad(image, (pad,) * 4)
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if torch.allclose(x, normalize(padded[:, dy:dy + size, dx:dx + size]), atol=1e-6)]
        assert found, f"seed {seed}: not a shifted copy of the image within {pad} pixels"
        shifts.update(found)
    assert len(shifts) > 3  # the shift is drawn

"""Training binary ResNet-18 / AlexNet with the paper's recipe (Section 5.1.3).

The recipe: Adam, learning rate 1e-3, weight decay 1e-5 (Adam's L2 penalty,
on every parameter), learning rate divided by 10 every 25 epochs, 80 epochs,
batch 256 (ResNet-18) or 400 (AlexNet), images resized to 256 then randomly
cropped to 224 (ResNet) or 227 (AlexNet), centre-cropped for evaluation;
cross-entropy loss. These are the defaults for any ImageFolder dataset
(``RECIPES["imagefolder"]``).

Fashion-MNIST and CIFAR-10 (``RECIPES["fashion-mnist"]``, ``RECIPES["cifar10"]``)
keep the optimizer, learning rate, weight decay and batch sizes, and train at
the images' own size (28x28, 32x32) with the small-input stem: 30 epochs with
the learning rate divided by 10 every 10 (drops at 1/3 and 2/3 of training, as
25 and 50 of 80 epochs). Their images are held on the training device and
augmented there a batch at a time (``xnorpp_core.training.data``), drawing from
the same seeded loader generator as a DataLoader would.

The embedded digits (``data=None``, see ``xnorpp_core.training.data``) keep the
optimizer, learning rate and weight decay, and scale the rest to a dataset of
1,437 training images of 8x8 pixels on a 2-core CPU (``RECIPES["digits"]``):
16x16 inputs with the small-input stem, batch 64 (256 would leave 5 steps an
epoch), 9 epochs with the learning rate divided by 10 every 3, i.e. drops at
about the same fractions of training (1/3, 2/3) as 25 and 50 of 80 epochs.
Every value can be overridden; ``None`` fields take the recipe's value in
``__post_init__`` so that ``config.json`` holds what actually ran (settings
that do not apply to the run, such as mixed precision on a CPU or the
ImageFolder resize on the digits, are recorded as off / ``null``).

One process, or many under ``torchrun`` (DistributedDataParallel, NCCL on
GPUs, gloo on CPUs). ``batch_size`` is the global batch, split evenly over
the processes; BN statistics are per process (no SyncBN) and the main
process's are given to all before validation, which is sharded without
padding and summed over processes, so its numbers are those of the
checkpointed model on the whole validation split.
Mixed precision (float16 autocast and a gradient scaler) on CUDA when ``amp``.

Reproducibility. The model is initialised from ``seed``; the data order and
the augmentation of epoch ``e`` on process ``r`` come from a loader generator
seeded with ``(seed, e, r)``; the global torch / numpy / python RNG states
(dropout, augmentation in the main process) are saved in every checkpoint
(per process) and restored on resume. A checkpoint is written atomically at
the end of every epoch, so a run killed at any moment and resumed on a CPU
ends with exactly the metrics of an uninterrupted run (same seed, same number
of processes and loader workers).
"""

import dataclasses
import functools
import io
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from . import data as datasets
from .checkpoint import seal, verify
from ..layers import METHODS, PAD_MODES
from ..models import ALEXNET_WIDTHS, ARCHS, SHORTCUTS, build_model, center_and_clamp_weights_
from ..limits import (BATCH_SIZE, EPOCHS, ITERATIONS, SEED, SIDE, WORKERS, check_fields, check_memory, forward_bytes,
                      reals, usable_cpus)
from ..provenance import atomic_write, check_writable_folder, environment, read_torch_file, write_csv, write_json

__all__ = ["Recipe", "RECIPES", "TrainConfig", "TrainingError", "accuracy", "train", "METRICS_COLUMNS"]

DEVICES = ("auto", "cpu", "cuda")
RESIZE_MODES = ("shorter_side", "square")
METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "seconds",
                   "images_per_second")
CHECKPOINT_FORMAT = 2  # 2: with a digest (training.checkpoint)


@dataclass(frozen=True)
class Recipe:
    """The defaults that depend on the dataset (see the module docstring)."""

    epochs: int
    lr_step: int
    batch_size: dict  # per arch
    input_size: dict  # per arch
    small_input: bool
    workers: int


PAPER_BATCH = {"resnet18": 256, "alexnet": 400}
RECIPES = {
    "imagefolder": Recipe(epochs=80, lr_step=25, batch_size=PAPER_BATCH, input_size={"resnet18": 224, "alexnet": 227},
                          small_input=False, workers=8),
    "digits": Recipe(epochs=9, lr_step=3, batch_size={"resnet18": 64, "alexnet": 64},
                     input_size={"resnet18": 16, "alexnet": 16}, small_input=True, workers=0),
    **{kind: Recipe(epochs=30, lr_step=10, batch_size=PAPER_BATCH, input_size={"resnet18": size, "alexnet": size},
                    small_input=True, workers=0) for kind, size in datasets.NATIVE_SIZE.items()},
}


def _opt(default=None, help="", **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class TrainConfig:
    """One training run. ``None`` means "the dataset's recipe value" (filled in ``__post_init__``)."""

    arch: str = _opt("resnet18", "network", choices=tuple(ARCHS))
    method: str = _opt("case4", "scale method of the binary convolutions ('real': the float baseline)",
                       choices=METHODS)
    data: str | None = _opt(None, f"what to train on: {datasets.DATA_HELP} (default: the embedded scikit-learn "
                                  "digits)")
    epochs: int | None = _opt(None, "epochs (recipe: 80; Fashion-MNIST and CIFAR-10 30; digits 9)", bounds=EPOCHS)
    batch_size: int | None = _opt(None, "global batch size over all processes (recipe: 256 ResNet-18, 400 AlexNet; "
                                        "digits 64)", bounds=BATCH_SIZE)
    lr: float = _opt(1e-3, "Adam learning rate", bounds=reals(0, 10, open_low=True))
    weight_decay: float = _opt(1e-5, "Adam weight decay (L2)", bounds=reals(0, 1))
    lr_step: int | None = _opt(None, "multiply the learning rate by --lr-gamma every this many epochs (recipe: 25; "
                                     "Fashion-MNIST and CIFAR-10 10; digits 3)", bounds=EPOCHS)
    lr_gamma: float = _opt(0.1, "learning-rate factor at each step", bounds=reals(0, 1, open_low=True))
    input_size: int | None = _opt(None, "training/evaluation crop (recipe: 224 ResNet-18, 227 AlexNet; digits 16; "
                                        "Fashion-MNIST 28 and CIFAR-10 32, their own size)", bounds=SIDE)
    resize: int = _opt(256, "ImageFolder: resize the shorter side to this before cropping", bounds=SIDE)
    hflip: bool = _opt(True, "random horizontal flips in training (ImageFolder, Fashion-MNIST, CIFAR-10; never "
                             "the digits)")
    small_input: bool | None = _opt(None, "3x3/1 stem for small images (recipe: off; digits, Fashion-MNIST and "
                                          "CIFAR-10 on)")
    pad_mode: str = _opt("zero", "border of the binary convolutions (see xnorpp_core.layers)", choices=PAD_MODES)
    # Choices the paper leaves open (docs/models.md): the defaults, and the variants one flag away.
    alexnet_widths: str = _opt("paper", "AlexNet filters: paper (96-256-384-384-256, Krizhevsky et al. and "
                                        "XNOR-Net) or torchvision (64-192-384-256-256)", choices=tuple(ALEXNET_WIDTHS))
    resnet_shortcut: str = _opt("conv", "ResNet-18 downsampling shortcut: conv (real 1x1/2 conv + BN), avgpool_conv "
                                        "(2x2 average pool, real 1x1 conv + BN) or binary (BN, sign, binary 1x1/2 "
                                        "conv, BN)", choices=SHORTCUTS)
    bn_affine: bool = _opt(True, "learned scale and shift in the BN before each sign")
    clamp_weights: bool = _opt(False, "before every training step, centre each binary layer's weights over its "
                                      "input channels and clamp them to [-1, 1] (XNOR-Net's training code)")
    resize_mode: str = _opt("shorter_side", "ImageFolder: resize the shorter side to --resize (aspect ratio kept), "
                                            "or the whole image to a --resize x --resize square", choices=RESIZE_MODES)
    seed: int = _opt(0, "seed of the initialization, data order and augmentation", bounds=SEED)
    limit_batches: int | None = _opt(None, "at most this many training and validation batches per epoch "
                                           "(smoke runs)", bounds=ITERATIONS)
    out: str | None = _opt(None, "the run's folder (metrics.csv, config.json, summary.json, checkpoint.pt; "
                                 "default: see below)", metavar="DIR")
    resume: bool = _opt(False, "continue from DIR/checkpoint.pt when it exists (without it an existing "
                               "checkpoint is an error)")
    device: str = _opt("auto", "cpu, cuda, or auto (cuda when available)", choices=DEVICES)
    amp: bool = _opt(True, "mixed precision (float16 autocast) on CUDA")
    workers: int | None = _opt(None, "data-loader worker processes per process (recipe: 8, at most the CPUs of each "
                                     "process; digits 0; Fashion-MNIST and CIFAR-10 are held on the device, without "
                                     "workers)", bounds=WORKERS)
    quiet: bool = _opt(False, "no progress bars or per-epoch lines")

    # Options that may change between a run and its resumption (they do not change the experiment).
    RUN_OPTIONS = ("data", "epochs", "out", "resume", "device", "workers", "quiet")

    def __post_init__(self):
        def check(ok, message):
            if not ok:
                raise ValueError(message)

        check(self.arch in ARCHS, f"unknown arch {self.arch!r}; choose from {', '.join(ARCHS)}")
        check(self.method in METHODS, f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        check(self.pad_mode in PAD_MODES, f"unknown pad_mode {self.pad_mode!r}; choose from {', '.join(PAD_MODES)}")
        check(self.device in DEVICES, f"unknown device {self.device!r}; choose from {', '.join(DEVICES)}")
        check(self.alexnet_widths in ALEXNET_WIDTHS, f"unknown alexnet_widths {self.alexnet_widths!r}")
        check(self.resnet_shortcut in SHORTCUTS, f"unknown resnet_shortcut {self.resnet_shortcut!r}")
        check(self.resize_mode in RESIZE_MODES, f"unknown resize_mode {self.resize_mode!r}")
        check(self.arch == "alexnet" or self.alexnet_widths == "paper", "alexnet_widths needs arch alexnet")
        check(self.arch == "resnet18" or self.resnet_shortcut == "conv", "resnet_shortcut needs arch resnet18")
        recipe = RECIPES[self.dataset]
        for name, value in (("epochs", recipe.epochs), ("lr_step", recipe.lr_step),
                            ("batch_size", recipe.batch_size[self.arch]), ("input_size", recipe.input_size[self.arch]),
                            ("small_input", recipe.small_input), ("workers", min(recipe.workers, _process_cpus()))):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        check_fields(self)
        check(self.data is not None or self.input_size >= 8, "digits need input_size >= 8 (they are 8x8)")
        check(self.dataset != "imagefolder" or self.resize >= self.input_size,
              f"resize ({self.resize}) must be at least input_size ({self.input_size})")
        datasets.check_input_size(self.dataset, self.input_size)
        check(_network_accepts(self), f"input_size {self.input_size} is too small for {self.arch} with "
              f"{'the 3x3/1 small-input stem' if self.small_input else 'the ImageNet stem (try --small-input)'}")

    @property
    def dataset(self):
        """``"digits"`` (embedded), ``"imagefolder"``, ``"fashion-mnist"`` or ``"cifar10"`` (``data.parse_data``)."""
        return datasets.parse_data(self.data).kind

    @property
    def run_name(self):
        return f"{datasets.parse_data(self.data).name}-{self.arch}-{self.method}"

    def to_dict(self):
        return dataclasses.asdict(self)

    def model_options(self):
        """The keywords of ``build_model`` that this configuration sets, beyond arch, method, classes and size."""
        per_arch = {"alexnet": {"widths": self.alexnet_widths}, "resnet18": {"shortcut": self.resnet_shortcut}}
        return {"pad_mode": self.pad_mode, "small_input": self.small_input, "bn_affine": self.bn_affine,
                **per_arch[self.arch]}

    @property
    def resize_to(self):
        """``torchvision.transforms.Resize``'s size: an int (the shorter side) or ``(h, w)`` (a square)."""
        return self.resize if self.resize_mode == "shorter_side" else (self.resize, self.resize)


def _process_cpus():
    """The CPUs of each training process on this machine (``torchrun`` sets ``LOCAL_WORLD_SIZE``), at least 1:
    the recipe's data-loader workers are at most that many, so that they do not wait for one another."""
    return max(1, usable_cpus() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def _network_accepts(config):
    """Whether ``config``'s network can be built for its input size (built on the meta device: no memory,
    no random numbers drawn)."""
    try:
        with torch.device("meta"):
            build_model(config.arch, config.method, 10, config.input_size, **config.model_options())
    except ValueError:
        return False
    return True


def _as_run(config, device):
    """``config`` as a dict, with the settings that did not apply to this run as ``None`` / off: mixed
    precision off unless on CUDA, the ImageFolder-only ``resize`` and ``resize_mode`` None for other data,
    ``hflip`` None for the digits."""
    applied = config.to_dict()
    applied["amp"] = config.amp and device.type == "cuda"
    if config.dataset != "imagefolder":
        applied["resize"] = applied["resize_mode"] = None
    if config.dataset == "digits":
        applied["hflip"] = None
    return applied


class TrainingError(ValueError):
    """A run that cannot start: its checkpoint belongs to another configuration, is unreadable, ..."""


def accuracy(output, target, topk=(1,)):
    """Number of samples whose target is among the ``k`` highest scores, for each ``k`` (capped at the classes)."""
    k_max = min(max(topk), output.shape[1])
    top = output.topk(k_max, dim=1).indices  # (N, k_max)
    hit = top == target[:, None]  # (N, k_max)
    return [hit[:, :min(k, k_max)].any(dim=1).sum().item() for k in topk]


# --- processes and devices ------------------------------------------------------------------------


@dataclass
class _Process:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self):
        return self.rank == 0

    def sum(self, values):
        """``values`` (floats) summed over all processes."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def share_buffers(self, model):
        """Give every process the main process's buffers (BN running statistics): each process
        updated its own in its last training step, and validation must use the checkpointed model."""
        if self.world > 1:
            for buffer in model.buffers():
                dist.broadcast(buffer, 0)

    def gather(self, obj):
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out


def _start_process(config):
    """Join the torchrun process group when launched by torchrun; choose the device."""
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device cuda requested but CUDA is not available on this machine")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Process(device=torch.device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return _Process(rank, world, torch.device(f"cuda:{local_rank}" if device == "cuda" else "cpu"))


def _seed(*words):
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


# --- RNG state and checkpoints ----------------------------------------------------------------------


def _rng_state():
    """Global torch / CUDA / numpy / python RNG states, as tensors and lists (``weights_only`` loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": [version, list(words), gauss_next]}


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, words, gauss_next = state["python"]
    random.setstate((version, tuple(words), gauss_next))


def _identity(config, dataset):
    """What a checkpoint must share with the run that resumes it."""
    fields = {k: v for k, v in config.to_dict().items() if k not in TrainConfig.RUN_OPTIONS}
    return {**fields, "dataset": dataset}


def _load_checkpoint(path, config, dataset, classes, proc):
    try:
        ckpt = read_torch_file(path, "checkpoint")
        if not isinstance(ckpt, dict) or "format" not in ckpt:
            raise TrainingError(f"checkpoint {path} is not a training checkpoint of this toolkit")
        verify(path, ckpt)
        if ckpt["format"] != CHECKPOINT_FORMAT:
            raise TrainingError(f"checkpoint {path} has format {ckpt['format']!r}; this toolkit resumes format "
                                f"{CHECKPOINT_FORMAT}")
        data = "the embedded digits" if config.data is None else f"--data {config.data}"
        datasets.check_classes(data, classes, f"checkpoint {path}", ckpt["classes"])
    except ValueError as e:  # CheckpointError, DataError: one line
        raise TrainingError(str(e)) from None
    theirs, ours = ckpt["identity"], _identity(config, dataset)
    differ = [k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k)]
    if differ:
        detail = ", ".join(f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here" for k in differ)
        raise TrainingError(f"checkpoint {path} is from another configuration ({detail})")
    if len(ckpt["rng"]) != proc.world:
        raise TrainingError(f"checkpoint {path} was written by {len(ckpt['rng'])} processes, this run has "
                            f"{proc.world}")
    return ckpt


# --- the loop -------------------------------------------------------------------------------------


def _loaders(config, train_set, val_set, proc):
    per_process = config.batch_size // proc.world
    if per_process * proc.world != config.batch_size:
        raise TrainingError(f"batch_size {config.batch_size} is not divisible by the {proc.world} processes")
    if len(train_set) // proc.world < per_process:
        raise TrainingError(f"batch_size {config.batch_size} is larger than the training split "
                            f"({len(train_set)} images)")
    generator = torch.Generator()
    val_shard = range(proc.rank, len(val_set), proc.world)  # a shard, no padding
    if proc.world > 1:
        sampler = DistributedSampler(train_set, proc.world, proc.rank, shuffle=True, seed=config.seed)
    else:
        sampler = torch.utils.data.RandomSampler(train_set, generator=generator)
    if isinstance(train_set, datasets.InMemorySplit):  # held on the device, transformed there a batch at a time
        train = datasets.InMemoryLoader(train_set.to(proc.device), BatchSampler(sampler, per_process, True), generator)
        val = datasets.InMemoryLoader(val_set.to(proc.device), BatchSampler(val_shard, per_process, False))
        return train, val, generator
    if proc.world > 1:
        val_set = Subset(val_set, val_shard)
    common = dict(batch_size=per_process, num_workers=config.workers, pin_memory=proc.device.type == "cuda")
    train = DataLoader(train_set, sampler=sampler, drop_last=True, generator=generator, **common)
    val = DataLoader(val_set, shuffle=False, generator=torch.Generator().manual_seed(0), **common)
    return train, val, generator


def _epoch(model, loader, proc, config, optimizer=None, scaler=None, desc=""):
    """One pass over ``loader``: trains when ``optimizer`` is given. Returns summed (loss, top1, top5, count)."""
    training = optimizer is not None
    model.train(training)
    n = len(loader) if config.limit_batches is None else min(len(loader), config.limit_batches)
    bar = tqdm(total=n, desc=desc, leave=False, disable=config.quiet or not proc.main or not sys.stderr.isatty())
    amp = scaler is not None and scaler.is_enabled()
    sums = [0.0, 0.0, 0.0, 0.0]
    with torch.set_grad_enabled(training):
        for i, (x, y) in enumerate(loader):
            if i == n:
                break
            x, y = x.to(proc.device, non_blocking=True), y.to(proc.device, non_blocking=True)
            if training and config.clamp_weights:
                center_and_clamp_weights_(model)
            with torch.autocast(proc.device.type, dtype=torch.float16, enabled=amp):
                output = model(x)  # (N, classes)
                loss = F.cross_entropy(output, y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            top1, top5 = accuracy(output.detach(), y, (1, 5))
            sums = [sums[0] + loss.item() * len(y), sums[1] + top1, sums[2] + top5, sums[3] + len(y)]
            bar.update()
    bar.close()
    return proc.sum(sums)


def train(config):
    """Train ``config``'s network; write metrics.csv, config.json, summary.json and checkpoint.pt in
    ``config.out``; return the summary (best and final metrics, protocol, versions, hardware).

    Raises ``DataError`` or ``TrainingError`` (one line) before writing anything when the data, the
    checkpoint or the options are unusable.
    """
    if config.out is None:
        raise TrainingError("config.out (the run's folder) is required")
    out = Path(config.out)
    try:
        check_writable_folder(out)
    except ValueError as e:
        raise TrainingError(f"--out {e}") from None
    proc = _start_process(config)
    try:
        _check_memory(config, proc)
        return _train(config, out, proc)
    finally:
        if proc.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _check_memory(config, proc):
    """``TrainingError`` when the activations of one process's batch alone exceed this machine's memory."""
    per_process, size = max(1, config.batch_size // proc.world), config.input_size
    build = functools.partial(build_model, config.arch, config.method, 10, size, **config.model_options())
    try:
        check_memory(f"a batch of {per_process} images of {size}x{size} through {config.arch}",
                     per_process * forward_bytes(build, (1, 3, size, size)), proc.device)
    except ValueError as e:
        raise TrainingError(str(e)) from None


def _train(config, out, proc):
    train_set, val_set, classes = datasets.splits(config.data, config.input_size, config.resize_to, config.hflip)
    dataset = {"name": config.dataset, "classes": len(classes), "train": len(train_set), "val": len(val_set)}
    train_loader, val_loader, generator = _loaders(config, train_set, val_set, proc)

    ckpt_path = out / "checkpoint.pt"
    ckpt = None
    if ckpt_path.exists():
        if not config.resume:
            raise TrainingError(f"{ckpt_path} exists: pass --resume to continue it, or remove it to start over")
        ckpt = _load_checkpoint(ckpt_path, config, dataset, classes, proc)
        if ckpt["epoch"] > config.epochs:
            raise TrainingError(f"checkpoint {ckpt_path} has completed {ckpt['epoch']} epochs, more than "
                                f"--epochs {config.epochs}: pass --epochs {ckpt['epoch']} or more to resume it")

    torch.manual_seed(config.seed)  # the initialization: the same on every process
    model = build_model(config.arch, config.method, len(classes), config.input_size,
                        **config.model_options()).to(proc.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=config.amp and proc.device.type == "cuda")
    history, start = [], 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] and scaler.is_enabled():  # empty when written without mixed precision
            scaler.load_state_dict(ckpt["scaler"])
        _set_rng_state(ckpt["rng"][proc.rank])
        history, start = ckpt["history"], ckpt["epoch"]
    else:  # the training stream of each process: dropout, main-process augmentation
        seed = _seed(config.seed, proc.rank)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
    net = model
    if proc.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, [proc.device] if proc.device.type == "cuda" else None)

    t_run = time.perf_counter()
    for epoch in range(start, config.epochs):
        generator.manual_seed(_seed(config.seed, epoch, proc.rank))  # data order and worker seeds
        if proc.world > 1:
            train_loader.sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        t0 = time.perf_counter()
        loss, top1, _, seen = _epoch(net, train_loader, proc, config, optimizer, scaler,
                                     desc=f"epoch {epoch + 1}/{config.epochs}")
        t_train = time.perf_counter() - t0
        scheduler.step()
        proc.share_buffers(model)
        v_loss, v_top1, v_top5, v_seen = _epoch(model, val_loader, proc, config, desc="validation")
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss / seen, "train_top1": 100 * top1 / seen,
               "val_loss": v_loss / v_seen, "val_top1": 100 * v_top1 / v_seen, "val_top5": 100 * v_top5 / v_seen,
               "seconds": time.perf_counter() - t0, "images_per_second": seen / t_train}
        history.append(row)
        rng = proc.gather(_rng_state())
        if proc.main:
            _save(out, config, dataset, classes, model, optimizer, scheduler, scaler, rng, history)
            if not config.quiet:
                print(f"epoch {row['epoch']}/{config.epochs}  lr {lr:.0e}  train loss {row['train_loss']:.3f} "
                      f"top-1 {row['train_top1']:.1f}%  val loss {row['val_loss']:.3f} top-1 {row['val_top1']:.1f}% "
                      f"top-5 {row['val_top5']:.1f}%  {row['seconds']:.0f} s", flush=True)
    summary = _summary(config, dataset, history, proc, time.perf_counter() - t_run)
    if proc.main:
        write_json(out / "summary.json", summary)
    return summary


def _save(out, config, dataset, classes, model, optimizer, scheduler, scaler, rng, history):
    """The epoch's checkpoint, then the metrics and the configuration, each written atomically."""
    ckpt = seal({"format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": history[-1]["epoch"],
                 "best_acc1": max(r["val_top1"] for r in history), "history": history, "rng": rng,
                 "config": config.to_dict(), "identity": _identity(config, dataset), "classes": list(classes)})
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write(out / "checkpoint.pt", buffer.getvalue())
    write_csv(out / "metrics.csv", pd.DataFrame(history, columns=list(METRICS_COLUMNS)))
    write_json(out / "config.json", _as_run(config, next(model.parameters()).device))


def _summary(config, dataset, history, proc, seconds):
    best = max(history, key=lambda r: r["val_top1"]) if history else None
    return {"final": history[-1] if history else None, "best": best, "epochs_completed": len(history),
            "protocol": {"config": _as_run(config, proc.device), "dataset": dataset, "processes": proc.world,
                         "optimizer": "Adam", "lr_schedule": f"x{config.lr_gamma} every {config.lr_step} epochs",
                         "loss": "cross-entropy"},
            "seconds_this_session": seconds, "environment": environment(proc.device)}

"""The ranges a numeric option may take, in one place: a config field's ``bounds`` metadata.

Every numeric field of a config (and every numeric flag of a study, ``studies/_cli.py``) names its
``Bounds``: finite, and within what this machine can serve. The command line checks a flag's value when it
parses it; ``check_fields`` checks a config built in Python (its ``__post_init__`` calls it). The shared
ranges:

- ``SEED``: 0 to 2**63 - 1. ``torch.manual_seed`` takes up to 2**64 - 1 and numpy's ``SeedSequence`` any
  non-negative integer; 2**63 - 1 also fits a signed 64-bit integer (a pandas column, a JSON reader) and
  leaves room for a seed plus a small offset.
- ``THREADS``: 1 to the CPUs this process may run on (``usable_cpus``): more threads only wait for one
  another (and torch's thread pool fails, or crashes, at tens of thousands). ``WORKERS`` (data-loader
  processes): 0 to the same number.
- ``SIDE``: an image or layer side (an input size, a resize) of at most ``MAX_SIDE`` pixels. What a batch
  of images of that side needs in memory is checked where the batch and the size meet (``check_memory``,
  against this machine's memory), before any work.
- ``REPEATS``: at least 3 timed repeats (a median of fewer is one of two calls).
"""

import math
import numbers
import os
from dataclasses import dataclass, fields

import torch

__all__ = ["Bounds", "ints", "reals", "SEED", "THREADS", "WORKERS", "SIDE", "MAX_SIDE", "REPEATS", "EPOCHS",
           "BATCH_SIZE", "ITERATIONS", "TRIALS", "STARTS", "CHANNELS", "KERNEL_SIZE", "usable_cpus", "physical_memory",
           "check_memory", "forward_bytes", "check_fields"]

MAX_SIDE = 4096  # pixels: 16 times ImageNet's 256


def usable_cpus():
    """The CPUs this process may run on (its affinity where the OS reports one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def physical_memory():
    """This machine's memory in bytes (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _bytes(n):
    return f"{n / 2**30:.1f} GiB"


def check_memory(what, nbytes, device="cpu"):
    """``ValueError`` (one line) when ``what`` needs at least ``nbytes`` (a lower bound: the main tensors alone)
    and that exceeds the memory of ``device``: this machine's, or a CUDA device's own."""
    device = torch.device(device)
    if device.type == "cuda":
        total, where = torch.cuda.get_device_properties(device).total_memory, f"{device} has"
    else:
        total, where = physical_memory(), "this machine has"
    if total is not None and nbytes > total:
        raise ValueError(f"{what} needs at least {_bytes(nbytes)} of memory; {where} {_bytes(total)}")


def forward_bytes(build, input_shape):
    """Bytes of the float32 outputs of every leaf module of the model ``build()`` returns, in one eval forward
    pass of an input of ``input_shape``: what a pass keeps at least (training keeps them all for the backward
    pass). Built and run on the meta device: no memory used, no random numbers drawn."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        total += 4 * output.numel() if isinstance(output, torch.Tensor) else 0

    with torch.device("meta"):
        model = build().eval()
        for m in model.modules():
            if not list(m.children()):
                m.register_forward_hook(count)
        with torch.no_grad():
            model(torch.zeros(input_shape))
    return total


def _shown(v):
    if isinstance(v, int) and v > 2**20 and (v + 1) & v == 0:  # 2**k - 1
        return f"2**{(v + 1).bit_length() - 1} - 1"
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Bounds:
    """The values a numeric option may take: an integer from ``low`` to ``high``, or (``integer=False``) a finite
    number between them, ``low`` / ``high`` themselves excluded when ``open_low`` / ``open_high``. ``high`` may be
    a function of no arguments (a bound of this machine, e.g. ``usable_cpus``)."""

    low: object
    high: object
    integer: bool = True
    open_low: bool = False
    open_high: bool = False

    @property
    def top(self):
        return self.high() if callable(self.high) else self.high

    def describe(self):
        if self.integer:
            return f"an integer from {_shown(self.low)} to {_shown(self.top)}"
        return (f"a number in {'(' if self.open_low else '['}{_shown(self.low)}, {_shown(self.top)}"
                f"{')' if self.open_high else ']'}")

    def contains(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.integer else numbers.Real):
            return False
        if not self.integer and not math.isfinite(value):
            return False
        low_ok = value > self.low if self.open_low else value >= self.low
        high_ok = value < self.top if self.open_high else value <= self.top
        return low_ok and high_ok

    def parse(self, text):
        """The number ``text`` (a command-line value) when inside the bounds, else ``ValueError``."""
        try:
            value = int(text) if self.integer else float(text)
        except (TypeError, ValueError, OverflowError):
            value = None
        if value is None or not self.contains(value):
            raise ValueError(f"must be {self.describe()}, got {text!r}")
        return value


def ints(low, high):
    """Integers from ``low`` to ``high`` (both included)."""
    return Bounds(low, high)


def reals(low, high, open_low=False, open_high=False):
    """Finite numbers between ``low`` and ``high``."""
    return Bounds(low, high, integer=False, open_low=open_low, open_high=open_high)


SEED = ints(0, 2**63 - 1)
THREADS = ints(1, lambda: usable_cpus())  # looked up at each check: this process's CPUs now
WORKERS = ints(0, lambda: usable_cpus())
SIDE = ints(1, MAX_SIDE)
REPEATS = ints(3, 10_000)
EPOCHS = ints(1, 10_000)
BATCH_SIZE = ints(1, 65_536)
ITERATIONS = ints(1, 10_000_000)  # steps, sweeps, patience of a fit
TRIALS = ints(1, 100_000)
STARTS = ints(1, 1_000)
CHANNELS = ints(1, 4_096)
KERNEL_SIZE = ints(1, 31)


def check_fields(config):
    """``ValueError`` ("``name`` must be ..., got ...") for the first field of the dataclass ``config`` whose value (or,
    for a tuple, one of its values) is outside the field's ``bounds`` metadata; ``None`` is not checked (a default
    filled in elsewhere)."""
    for f in fields(config):
        bounds, value = f.metadata.get("bounds"), getattr(config, f.name)
        if bounds is None or value is None:
            continue
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if not bounds.contains(v):
                raise ValueError(f"{f.name} must be {bounds.describe()}, got {v!r}")

"""One command-line style for every study: flags derived from a frozen dataclass config, one-line errors.

- ``make_parser(prog, doc)``: the study's module docstring gives the description (its first paragraph)
  and the epilog of ``--help`` (the rest: the commands and the output files).
- ``add_config_flags(parser, Config)``: one ``--flag`` per field, with help text and choices; tuple fields
  take several space-separated values (``nargs="+"``); bools get ``--flag / --no-flag``; a nested dataclass
  field gets prefixed flags (``fit: FitConfig`` -> ``--fit-lr``). ``config_from_args`` builds the config
  back, its validation errors becoming one-line exits.
- ``add_out_flag`` / ``check_out``: ``--out DIR`` everywhere, checked to be creatable and writable before any
  work. ``add_device_flag`` / ``resolve_device``: ``--device auto|cpu|cuda``, default auto, everywhere.
  ``add_threads_flag``: ``--threads N``. ``PADDING_HELP``: ``--padding P`` in one notation.
- Numbers: every numeric flag has ``Bounds`` (``xnorpp_core.limits``: a config field's ``bounds`` metadata, or
  ``bounded(...)`` as a flag's type), checked as the flag is parsed; its metavar is N (an integer) or X (a real
  number). The same flag has the same bounds in every study.
- Errors: one line on stderr, exit code 2 (``fail``), before anything is written.

Flag names, one per concept in every study (the same metavar, bounds and default meaning; tests/test_cli.py):
--out DIR, --data DATA, --checkpoint FILE (one) / --checkpoints FILE [FILE ...], --batch-size N,
--method / --methods, --loss / --losses, --device, --threads N (torch CPU threads, 1 to the CPUs here),
--seed / --seeds N, --repeats N (at least 3), --trials N, --padding P.
"""

import argparse
import contextlib
import dataclasses
import re
import sys
import types
import typing
from pathlib import Path

import torch

from xnorpp_core.limits import THREADS
from xnorpp_core.provenance import check_writable_folder
from xnorpp_core.training import TrainingError, train
from xnorpp_core.training.checkpoint import CheckpointError
from xnorpp_core.training.data import DataError
from xnorpp_core.training.checkpoint import load_checkpoint as _load_checkpoint

DEVICE_CHOICES = ("auto", "cpu", "cuda")
REPO = Path(__file__).resolve().parents[1]  # results/ and runs/ of a checkout
FIT_HELP = {  # xnorpp_core.reconstruction.FitConfig: Adam's schedule for the learned scales
    "lr": "Adam's starting learning rate for the learned scales",
    "patience": "steps without a relative improvement of the loss by --fit-threshold before the rate drops",
    "threshold": "relative improvement of the summed loss that counts as progress",
    "decays": "learning-rate drops (by 10) after which the fit stops at the next plateau",
    "max_steps": "most Adam steps per fit",
}


def opt(default, help, **metadata):
    """A dataclass field with its ``--help`` text (and e.g. ``choices``) in its metadata."""
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr and exit code 2."""

    def error(self, message):
        # a value outside its bounds reads as a config's error does: "--seed must be ..., got ..."
        message = re.sub(r"^argument ((?:-[\w-]+/)*-[\w-]+): (must be)", r"\1 \2", message)
        self.exit(2, f"{self.prog}: error: {message}\n")


class bounded:
    """An argparse ``type`` for a number within ``bounds`` (``xnorpp_core.limits.Bounds``): its value, or the
    one-line error "--flag must be ..., got ..."."""

    def __init__(self, bounds):
        self.bounds = bounds
        self.__name__ = "integer" if bounds.integer else "number"

    def __call__(self, text):
        try:
            return self.bounds.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None


def metavar_of(bounds):
    """The metavar of a numeric flag: N for an integer, X for a real number."""
    return "N" if bounds.integer else "X"


def make_parser(prog, doc):
    """A parser whose ``--help`` shows the first paragraph of ``doc`` (the study's module docstring) as its
    description and the rest (commands, output files) as its epilog."""
    head, _, rest = doc.strip().partition("\n\n")
    return ArgumentParser(prog=prog, description=head, epilog=rest,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def fail(prog, message):
    """Exit with a one-line error and code 2 (nothing has been written)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def add_out_flag(parser, default, what="output folder"):
    """``--out DIR`` (``default`` may be None when the study derives it)."""
    shown = f" (default {default})" if default is not None else ""
    parser.add_argument("--out", type=Path, default=None if default is None else Path(default), metavar="DIR",
                        help=f"{what}{shown}")


THREADS_HELP = "torch CPU threads, 1 to the CPUs this process may use"


def add_threads_flag(parser, default, why=""):
    """``--threads N``: torch's CPU threads for the study, 1 to the CPUs here (``limits.THREADS``)."""
    parser.add_argument("--threads", type=bounded(THREADS), default=default, metavar="N",
                        help=f"{THREADS_HELP} (default {default}{': ' + why if why else ''})")


def add_device_flag(parser, what):
    """``--device auto|cpu|cuda`` (default auto: cuda when available), resolved by ``resolve_device``."""
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help=f"{what}; auto: cuda when available (default auto)")


PADDING_HELP = ("P: 0, or N-zero / N-minus_one, a border of N pixels of zeros (after the sign) or of -1 (before "
                "it; see xnorpp_core.layers)")


def check_out(prog, out):
    """``out`` as a Path, or a one-line exit when it cannot be created and written (checked before any
    work; nothing is created)."""
    try:
        check_writable_folder(out)
    except ValueError as e:
        fail(prog, f"--out {e}")
    return Path(out)


def load_checkpoint(prog, path):
    """``(model, arch, model_kwargs, classes)`` of a training checkpoint (``training.checkpoint``), or a one-line
    exit naming the file and the cause."""
    try:
        return _load_checkpoint(path)
    except CheckpointError as err:
        fail(prog, str(err))


@contextlib.contextmanager
def data_errors(prog):
    """Inside: a ``DataError`` (an image that cannot be read, met while iterating over a dataset) becomes the
    one-line exit."""
    try:
        yield
    except DataError as err:
        fail(prog, str(err))


def resolve_device(prog, device):
    """``auto`` -> ``cuda`` when available, else ``cpu``; a one-line exit when ``cuda`` is not usable here."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        fail(prog, "--device cuda requested but CUDA is not available on this machine")
    return device


def check_device(prog, device):
    """``device`` (``auto``, ``cpu``, ``cuda``) as a ``torch.device``, or a one-line exit."""
    return torch.device(resolve_device(prog, device))


def _value_type(annotation, default):
    """``int`` for ``int`` or ``int | None``; for a tuple (or ``tuple | None``) the element type (from ``tuple[int, ...]`` or the
    default's values) and ``True`` as the second item."""
    optional = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(optional) == 1:
        annotation = optional[0]  # ``X | None``: the flag parses X
    if typing.get_origin(annotation) is tuple or annotation is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        element = args[0] if args else (type(default[0]) if default else str)
        return element, True
    return annotation, False


def _default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _shown(value):
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def add_config_flags(parser, config_cls, *, helps=None, choices=None, rename=None, skip=(), prefix="", defaults=None,
                     metavars=None):
    """One ``--flag`` per field of the dataclass ``config_cls``; returns the parser.

    Help, choices and metavar come from the field's metadata (``help``, ``choices``, ``metavar``) or from
    ``helps`` / ``choices`` / ``metavars``; a numeric field's flag parses within the field's ``bounds``
    metadata (``xnorpp_core.limits``), metavar N or X
    (maps from field name; for a nested config field, ``helps[name]`` is the nested map). ``rename`` maps a
    field to another flag name (same concept, same flag in every study); ``skip`` lists fields the study
    handles itself; ``defaults``, an instance, gives the defaults shown (a nested config's come from its
    parent's default). Flags left out are not passed (``argparse.SUPPRESS``), so the config's own defaults
    apply. A field without help text, or a numeric one without bounds, is a programming error (``ValueError``).
    """
    helps, choices, rename = helps or {}, choices or {}, rename or {}
    flags = parser.get_default("_config_flags") or {}  # field (nested: "fit__lr") -> its flag, for error messages
    parser.set_defaults(_config_flags=flags)
    for f in dataclasses.fields(config_cls):
        dest = prefix + f.name
        if f.name in skip:  # the study's own flag, of the same name
            flags[dest] = "--" + dest.replace("__", "-").replace("_", "-")
        if f.name in skip or f.name.isupper():
            continue
        default = _default(f) if defaults is None else getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            add_config_flags(parser, type(default), helps=helps.get(f.name, {}), prefix=dest + "__", defaults=default)
            continue
        flag = "--" + (rename.get(f.name, dest.replace("__", "-"))).replace("_", "-")
        flags[dest] = flag
        text = f.metadata.get("help", helps.get(f.name))
        if not text:
            raise ValueError(f"{config_cls.__name__}.{f.name} has no help text")
        kind, several = _value_type(f.type, default)
        allowed = f.metadata.get("choices", choices.get(f.name))
        shown = "" if default is None or default == () else f" (default {_shown(default)})"
        kw = {"help": text + shown, "default": argparse.SUPPRESS, "dest": dest}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        metavar = None if allowed else f.metadata.get("metavar", (metavars or {}).get(f.name,
                                                                                    dest.split("__")[-1].upper()))
        if kind in (int, float):  # a number: parsed within its bounds
            if "bounds" not in f.metadata:
                raise ValueError(f"{config_cls.__name__}.{f.name} has no bounds")
            kind, metavar = bounded(f.metadata["bounds"]), metavar_of(f.metadata["bounds"])
        parser.add_argument(flag, type=kind, choices=allowed, metavar=metavar, nargs="+" if several else None, **kw)
    return parser


def in_flags(message, flags, prefix=""):
    """``message`` (a config's validation error, in its field names) in the flags' words: the field that opens
    it, follows ``unknown``, or has an underscore in its name becomes its flag (``kernel_size`` ->
    ``--kernel-size``; ``flags`` maps ``prefix + field`` to the flag); a quoted name is a value, kept."""
    def flag(match):
        name, opens = match.group(0), match.start() == 0 or message[:match.start()].endswith("unknown ")
        return flags.get(prefix + name, name) if opens or "_" in name else name

    return re.sub(r"(?<![-\w'\"])[a-z][a-z0-9_]*(?![-\w'\"])", flag, message)  # a quoted name is a value


def _kwargs(config_cls, values, prefix=""):
    kwargs = {}
    for f in dataclasses.fields(config_cls):
        default = _default(f)
        if dataclasses.is_dataclass(default):
            nested = _kwargs(type(default), values, prefix + f.name + "__")
            if nested:
                try:
                    kwargs[f.name] = dataclasses.replace(default, **nested)
                except ValueError as err:
                    raise ValueError(in_flags(str(err), values.get("_config_flags") or {}, prefix + f.name + "__"))
        elif prefix + f.name in values:
            value = values[prefix + f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return kwargs


def config_from_args(prog, config_cls, args, **extra):
    """Build the config from parsed flags (and ``extra`` fields); its validation errors become one-line
    exits."""
    try:
        return config_cls(**{**_kwargs(config_cls, vars(args)), **extra})
    except (ValueError, TypeError) as err:
        fail(prog, in_flags(str(err), getattr(args, "_config_flags", None) or {}))


def default_run_folder(config):
    """results/train/NAME for the embedded digits (committed), runs/NAME otherwise (ignored by git);
    relative when run from the repository root, so that config.json names no machine's path."""
    path = REPO / ("results/train" if config.data is None else "runs") / config.run_name
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


def train_in_process(config):
    """Train ``config`` (``out`` defaulting to ``default_run_folder``, refused when that holds a finished run) and
    return the summary; a notebook calls it directly. Unusable data, checkpoints or options raise
    ``DataError`` / ``TrainingError`` (one line)."""
    if config.out is None:
        out = default_run_folder(config)
        if (out / "summary.json").exists() and not config.resume:
            raise TrainingError(f"{out} (the default --out) holds a finished run: pass --out DIR for a new run, "
                                f"or --out {out} to replace it")
        config = dataclasses.replace(config, out=str(out))
    return train(config)

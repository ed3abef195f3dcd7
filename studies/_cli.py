"""What every study's command line shares: one-line errors with exit code 2."""

import argparse
import dataclasses
import sys
import typing

import torch


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose errors are one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def fail(prog, message):
    """Exit with a one-line error and code 2 (nothing has been written)."""
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def check_device(prog, device):
    """``device`` as a ``torch.device``, or a one-line error when it is not usable here."""
    if device == "cuda" and not torch.cuda.is_available():
        fail(prog, "--device cuda requested but CUDA is not available on this machine")
    return torch.device(device)


def _value_type(annotation):
    """``int`` for ``int`` or ``int | None`` (and so on)."""
    types = [t for t in typing.get_args(annotation) if t is not type(None)] or [annotation]
    return types[0]


def add_config_flags(parser, config_cls, choices=None):
    """One ``--flag`` per int, float, str or bool field (optionally ``| None``) of a dataclass config.

    Flags left out are not passed (``argparse.SUPPRESS``), so the config's own
    defaults apply. Help and choices come from the field's metadata (``help``,
    ``choices``) or from ``choices``, a map from field name to allowed values;
    bools get ``--flag / --no-flag``; other fields (nested configs) get no flag.
    """
    choices = choices or {}
    for f in dataclasses.fields(config_cls):
        kind = _value_type(f.type)
        if kind not in (int, float, str, bool):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = "" if f.default in (None, dataclasses.MISSING) else f" (default {f.default})"
        kw = {"help": f.metadata.get("help", "") + default, "default": argparse.SUPPRESS}
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            allowed = f.metadata.get("choices", choices.get(f.name))
            parser.add_argument(flag, type=kind, choices=allowed, metavar=None if allowed else f.name.upper(), **kw)


def config_from_args(prog, config_cls, args, **extra):
    """Build the config from parsed flags; its validation errors become one-line exits."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {k: v for k, v in vars(args).items() if k in names}
    try:
        return config_cls(**kwargs, **extra)
    except ValueError as err:
        fail(prog, str(err))

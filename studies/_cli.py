"""What every study's command line shares: one-line errors with exit code 2."""

import argparse
import dataclasses
import sys

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


def add_config_flags(parser, config_cls, choices=None, skip=()):
    """One ``--flag`` per scalar field of a frozen dataclass config, defaults from the class.

    ``choices`` maps a field name to its allowed values; nested configs and
    fields in ``skip`` get no flag.
    """
    choices = choices or {}
    for f in dataclasses.fields(config_cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.name in skip or not isinstance(default, (int, float, str)) or isinstance(default, bool):
            continue
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(default), default=default,
                            choices=choices.get(f.name), help=f"(default: {default})")


def config_from_args(prog, config_cls, args, **extra):
    """Build the config from parsed flags; its validation errors become one-line exits."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {k: v for k, v in vars(args).items() if k in names}
    try:
        return config_cls(**kwargs, **extra)
    except ValueError as err:
        fail(prog, str(err))

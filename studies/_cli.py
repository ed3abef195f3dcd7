"""What every study's command line shares: one-line errors with exit code 2."""

import argparse
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

"""Training binary networks with the paper's recipe (Section 5.1.3): ``loop`` (recipe, loop,
checkpoints) and ``data`` (ImageFolder trees and the embedded digits)."""

from .data import DataError
from .loop import *  # noqa: F401,F403
from .loop import __all__ as _loop_all

__all__ = [*_loop_all, "DataError"]

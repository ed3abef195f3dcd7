"""Training binary networks with the paper's recipe (Section 5.1.3): ``loop`` (recipe, loop,
checkpoints), ``data`` (ImageFolder trees, Fashion-MNIST, CIFAR-10 and the embedded digits), ``readers``
(the files of Fashion-MNIST and CIFAR-10) and ``grids`` (how Tables 1 and 3 are trained per dataset)."""

from .data import DataError
from .loop import *  # noqa: F401,F403
from .loop import __all__ as _loop_all

__all__ = [*_loop_all, "DataError"]

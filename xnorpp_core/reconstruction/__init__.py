"""The quantization-error experiment of Section 4.2 and what studies it.

- ``fit``: one trial's layers, the distances, the Adam fit of each Gamma, the exact factor updates,
  the exact optimum of Cases 1-2 and the alternating search of Cases 3-4
- ``evidence``: how close each Adam fit is to its reference (signed gaps, the Case 2 lower bound)
- ``table2``: Table 2 over many trials (configuration, run, summary, markdown)
- ``distributions``, ``expectations``: the inputs and weights a trial draws, and the analytic
  expectations of the Table 2 distances
- ``protocol``: the protocol study (a grid of conditions under which Table 2 is re-run)
"""

from .fit import *  # noqa: F401,F403
from .fit import __all__ as _fit_all
from .table2 import ReconstructionConfig, run_table2

__all__ = [*_fit_all, "ReconstructionConfig", "run_table2"]

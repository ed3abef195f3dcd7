"""xnorpp_core: the maths of XNOR-Net++ (Bulat & Tzimiropoulos, BMVC 2019), and what is built on it.

The small core, one module per concept, each equation of the paper in exactly one place:

- Eq. 1 (sign) and its straight-through estimator: ``binarize.sign``, ``binarize.binarize``
- Eq. 2 (XNOR-Net alpha and K): ``scales.xnor_weight_scale``, ``scales.xnor_input_scale``
- Eq. 3 (binary conv times Gamma): ``layers.BinaryConv2d``, a drop-in ``nn.Conv2d``
- Eq. 4-7 (Gamma, Cases 1-4): ``scales.Case1Scale`` .. ``scales.Case4Scale``
- Eq. 8/9 (theoretical speed-up): ``speedup.speedup_xnor``, ``speedup.speedup_ours``
- the paper's printed numbers: ``paper``; results files and their provenance: ``provenance``

Around it, each subpackage importing only from the core and from those listed before it:

- ``models/``: binary ResNet-18 and AlexNet (Section 5.1.1)
- ``packed/``: the bit-packed XNOR-popcount engine (Python front, C++ kernel in ``packed/csrc``)
- ``reconstruction/``: the quantization-error experiment of Section 4.2 (Table 2) and the protocol study
- ``training/``: the training recipe of Section 5.1.3, its loop and its data
- ``report/``: tables beside the paper's, figures and generated analysis text
"""

from .binarize import binarize, sign
from .layers import BinaryConv2d
from .scales import Case1Scale, Case2Scale, Case3Scale, Case4Scale, xnor_input_scale, xnor_weight_scale
from .speedup import speedup_ours, speedup_xnor

__version__ = "0.1.0"

__all__ = ["sign", "binarize", "BinaryConv2d", "xnor_weight_scale", "xnor_input_scale", "Case1Scale", "Case2Scale",
           "Case3Scale", "Case4Scale", "speedup_xnor", "speedup_ours"]

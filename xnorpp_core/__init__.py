"""xnorpp_core: the maths of XNOR-Net++ (Bulat & Tzimiropoulos, BMVC 2019).

Where each equation of the paper lives:

- Eq. 1 (sign) and its straight-through estimator: ``binarize.sign``, ``binarize.binarize``
- Eq. 2 (XNOR-Net alpha and K): ``scales.xnor_weight_scale``, ``scales.xnor_input_scale``
- Eq. 3 (binary conv times Gamma): ``layers.BinaryConv2d``
- Eq. 4-7 (Gamma, Cases 1-4): ``scales.Case1Scale`` .. ``scales.Case4Scale``
- Eq. 8/9 (theoretical speed-up): ``speedup.speedup_xnor``, ``speedup.speedup_ours``
- Section 4.2 (the quantization-error experiment, Table 2): ``reconstruction``
"""

__version__ = "0.1.0"

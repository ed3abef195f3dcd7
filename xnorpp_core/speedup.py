"""Section 4.3: the theoretical speed-up of a binary convolution.

A real convolution costs ``N = c * w * h * w_out * h_out * o`` multiply-adds.
With bit-packing and SIMD a CPU does 64 binary operations per multiplication.

As printed in the paper (every count divided by ``c * h_out * w_out``)::

    S_XNOR = 64 w h o / (w h o + 2 + h w)                              (Eq. 8)
    S_OURS = 64 w h o / (w h o + 1)                                    (Eq. 9)

Eq. 8 adds XNOR-Net's ``2 c h_out w_out`` multiplications and
``c h_out w_out h w`` additions, and Eq. 9 the ``c h_out w_out`` multiplications
of the fused Gamma, to the *packed binary* count ``N / 64`` at the same rate,
i.e. it charges a float operation as 1/64 of a multiplication. The
self-consistent count (``float_cost=64``, a float op costs 64 packed binary ops,
one multiplication) is::

    S = 64 w h o / (w h o + 64 (2 + h w))      (XNOR-Net)
    S = 64 w h o / (w h o + 64)                (ours)

``float_cost=1`` gives Eq. 8/9 exactly.
"""

__all__ = ["speedup_xnor", "speedup_ours", "PAPER_MODEL", "CONSISTENT_MODEL"]

PAPER_MODEL = 1  # float ops charged as one packed binary op: Eq. 8/9 as printed
CONSISTENT_MODEL = 64  # float ops charged as 64 packed binary ops (one multiplication)


def speedup_xnor(out_channels, kernel_h, kernel_w, float_cost=PAPER_MODEL):
    """Eq. 8: speed-up of an XNOR-Net layer (alpha and K) over the real convolution."""
    who = kernel_w * kernel_h * out_channels
    return 64 * who / (who + float_cost * (2 + kernel_h * kernel_w))


def speedup_ours(out_channels, kernel_h, kernel_w, float_cost=PAPER_MODEL):
    """Eq. 9: speed-up of an XNOR-Net++ layer (one fused Gamma) over the real convolution."""
    who = kernel_w * kernel_h * out_channels
    return 64 * who / (who + float_cost * 1)

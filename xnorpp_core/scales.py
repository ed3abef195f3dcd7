"""Scale factors that re-weight a binary convolution's output.

Analytic XNOR-Net scales (Rastegari et al.), Eq. 2 of the paper::

    I * W  ~  (sign(I) (*) sign(W)) . K alpha                          (Eq. 2)
    alpha_i = ||W_i||_l1 / n,   n = c * w * h,   i = 1..o
    K = A * k,   A = sum_c |I_c| / c,   k_ij = 1 / (w * h)

XNOR-Net++ replaces ``K alpha`` by a single factor Gamma learned by
back-propagation, Eq. 3::

    I * W  ~  (sign(I) (*) sign(W)) . Gamma                            (Eq. 3)

in one of four shapes (Section 4.1)::

    Case 1: Gamma = alpha,                     alpha in R^{o x 1 x 1}              (Eq. 4)
    Case 2: Gamma = alpha,                     alpha in R^{o x h_out x w_out}      (Eq. 5)
    Case 3: Gamma = alpha (x) beta,            alpha in R^o, beta in R^{h_out x w_out}   (Eq. 6)
    Case 4: Gamma = alpha (x) beta (x) gamma,  alpha in R^o, beta in R^{h_out},
                                               gamma in R^{w_out}                  (Eq. 7)

"At test time the factors are merged into a single one": every learned scale
has ``fused()``, one ``(o, h_out, w_out)`` tensor (``(o, 1, 1)`` for Case 1 when
the output size is unknown), and ``FusedScale`` holds it for inference.

The learned scales take an optional ``batch`` shape, prepended to every
parameter, so that many independent fits (the trials of the Table 2 study)
run as one vectorised problem with the very same modules.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "xnor_weight_scale",
    "xnor_input_scale",
    "LearnedScale",
    "Case1Scale",
    "Case2Scale",
    "Case3Scale",
    "Case4Scale",
    "FusedScale",
    "LEARNED_SCALES",
    "make_learned_scale",
]


def xnor_weight_scale(weight: torch.Tensor) -> torch.Tensor:
    """Eq. 2, alpha: the mean absolute weight of each output filter.

    ``weight`` is ``(o, c, h, w)``; returns ``(o,)`` with
    ``alpha_i = ||W_i||_1 / (c * h * w)``.
    """
    return weight.abs().mean(dim=(1, 2, 3))  # (o,)


def xnor_input_scale(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """Eq. 2, K: the channel-mean of |I| averaged over each receptive field.

    ``x`` is ``(N, c, H, W)``; returns ``(N, 1, h_out, w_out)``, the convolution
    of ``A = mean_c |x|`` with the ``kh x kw`` box filter ``k = 1 / (kh * kw)``,
    with the layer's stride, (zero) padding and dilation.
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    a = x.abs().mean(dim=1, keepdim=True)  # (N, 1, H, W)
    k = a.new_full((1, 1, kh, kw), 1.0 / (kh * kw))
    return F.conv2d(a, k, stride=stride, padding=padding, dilation=dilation)  # (N, 1, h_out, w_out)


class LearnedScale(nn.Module):
    """Base class of the learned Gamma (Eq. 3). ``forward()`` returns Gamma.

    Gamma broadcasts against a binary convolution output ``(N, o, h_out, w_out)``
    (or, with a ``batch`` shape ``B``, against ``(*B, o, h_out, w_out)``).
    All factors start at 1, so an untrained scale is the identity.
    """

    def __init__(self, out_channels: int, out_size=None, batch=()):
        super().__init__()
        self.out_channels = out_channels
        self.out_size = None if out_size is None else tuple(out_size)
        self.batch = tuple(batch)

    def _param(self, *shape):
        return nn.Parameter(torch.ones(*self.batch, *shape))

    def fused(self) -> torch.Tensor:
        """Merge the factors into the single tensor used at test time.

        ``(*batch, o, h_out, w_out)``; ``(*batch, o, 1, 1)`` for Case 1 without an out_size.
        """
        gamma = self()
        if self.out_size is not None:
            gamma = gamma.expand(*self.batch, self.out_channels, *self.out_size)
        return gamma.detach().clone()

    def extra_repr(self):
        return f"out_channels={self.out_channels}, out_size={self.out_size}, batch={self.batch}"


class Case1Scale(LearnedScale):
    """Eq. 4, Case 1: Gamma = alpha, alpha in R^{o x 1 x 1} (one scale per output channel)."""

    def __init__(self, out_channels, out_size=None, batch=()):
        super().__init__(out_channels, out_size, batch)
        self.alpha = self._param(out_channels, 1, 1)

    def forward(self):
        return self.alpha  # (*B, o, 1, 1)


class _SpatialScale(LearnedScale):
    """A scale whose shape depends on the output size (Cases 2-4)."""

    def __init__(self, out_channels, out_size, batch=()):
        if out_size is None or len(tuple(out_size)) != 2 or min(out_size) < 1:
            raise ValueError(f"{type(self).__name__} needs the output size (h_out, w_out), got {out_size!r}")
        super().__init__(out_channels, out_size, batch)


class Case2Scale(_SpatialScale):
    """Eq. 5, Case 2: Gamma = alpha, alpha in R^{o x h_out x w_out} (one scale per output element)."""

    def __init__(self, out_channels, out_size, batch=()):
        super().__init__(out_channels, out_size, batch)
        self.alpha = self._param(out_channels, *self.out_size)

    def forward(self):
        return self.alpha  # (*B, o, h_out, w_out)


class Case3Scale(_SpatialScale):
    """Eq. 6, Case 3: Gamma = alpha (x) beta, alpha in R^o, beta in R^{h_out x w_out}."""

    def __init__(self, out_channels, out_size, batch=()):
        super().__init__(out_channels, out_size, batch)
        self.alpha = self._param(out_channels, 1, 1)
        self.beta = self._param(1, *self.out_size)

    def forward(self):
        return self.alpha * self.beta  # (*B, o, h_out, w_out)


class Case4Scale(_SpatialScale):
    """Eq. 7, Case 4: Gamma = alpha (x) beta (x) gamma, alpha in R^o, beta in R^{h_out}, gamma in R^{w_out}.

    A rank-1 factor per mode (channels, height, width).
    """

    def __init__(self, out_channels, out_size, batch=()):
        super().__init__(out_channels, out_size, batch)
        h_out, w_out = self.out_size
        self.alpha = self._param(out_channels, 1, 1)
        self.beta = self._param(1, h_out, 1)
        self.gamma = self._param(1, 1, w_out)

    def forward(self):
        return self.alpha * self.beta * self.gamma  # (*B, o, h_out, w_out)


class FusedScale(nn.Module):
    """Inference form of any learned scale: one stored tensor, one multiply (Section 4.3)."""

    def __init__(self, gamma: torch.Tensor):
        super().__init__()
        self.register_buffer("gamma", gamma)

    def forward(self):
        return self.gamma


LEARNED_SCALES = {"case1": Case1Scale, "case2": Case2Scale, "case3": Case3Scale, "case4": Case4Scale}


def make_learned_scale(method: str, out_channels: int, out_size=None, batch=()) -> LearnedScale:
    """The learned Gamma of ``method`` (``case1`` .. ``case4``)."""
    if method not in LEARNED_SCALES:
        raise ValueError(f"unknown learned scale {method!r}; choose from {sorted(LEARNED_SCALES)}")
    return LEARNED_SCALES[method](out_channels, out_size, batch)

"""Eq. 1 of the paper: the sign function, and its straight-through estimator.

    sign(x) = -1 if x <= 0
              +1 if x >  0                                        (Eq. 1)

Note that ``torch.sign`` maps 0 to 0, so it would make a "binary" tensor ternary;
this module never uses it.

For training, the gradient of sign is zero almost everywhere, so we use the
straight-through estimator (STE) of Courbariaux et al. / Hubara et al.:

    d sign(x) / dx := 1 if |x| <= 1 else 0
"""

import torch

__all__ = ["sign", "binarize"]


def sign(x: torch.Tensor) -> torch.Tensor:
    """Eq. 1: +1 where ``x > 0``, -1 elsewhere (so ``sign(0) = -1``). No gradient."""
    return torch.where(x > 0, 1.0, -1.0).to(x.dtype)


class _SignSTE(torch.autograd.Function):
    """Eq. 1 forward; straight-through gradient ``grad * 1{|x| <= 1}`` backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x.abs() <= 1).to(grad_output.dtype)


def binarize(x: torch.Tensor) -> torch.Tensor:
    """Eq. 1 with the straight-through estimator: differentiable binarization."""
    return _SignSTE.apply(x)

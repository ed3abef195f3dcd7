import numpy as np
import pytest
import torch

from xnorpp_core.binarize import binarize, sign


def test_sign_is_eq1_with_sign_of_zero_minus_one():
    x = torch.tensor([-2.0, -1e-8, 0.0, -0.0, 1e-8, 3.0])
    assert sign(x).tolist() == [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_sign_is_binary_and_keeps_dtype(dtype):
    x = torch.randn(1000).to(dtype)
    x[::7] = 0
    s = sign(x)
    assert s.dtype == dtype
    assert set(s.unique().tolist()) <= {-1.0, 1.0}
    np.testing.assert_array_equal(s.float().numpy(), np.where(x.float().numpy() > 0, 1.0, -1.0))


def test_straight_through_gradient_matches_hand_computed_reference():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0001, 2.0], requires_grad=True)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    binarize(x).backward(upstream)
    # grad passes where |x| <= 1, zero elsewhere
    assert x.grad.tolist() == [0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]


def test_binarize_forward_equals_sign():
    x = torch.randn(4, 5, requires_grad=True)
    assert torch.equal(binarize(x), sign(x.detach()))


def test_nan_gives_minus_one_and_no_gradient():
    """Documented choice: NaN is not > 0, so Eq. 1 ("-1 elsewhere") gives -1; the STE passes no gradient."""
    x = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.5], requires_grad=True)
    assert sign(x.detach()).tolist() == [-1.0, 1.0, -1.0, 1.0]
    binarize(x).backward(torch.ones(4))
    assert x.grad.tolist() == [0.0, 0.0, 0.0, 1.0]

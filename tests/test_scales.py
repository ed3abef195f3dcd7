import numpy as np
import pytest
import torch

from xnorpp_core.scales import (LEARNED_SCALES, Case1Scale, Case4Scale, FusedScale, make_learned_scale,
                                xnor_input_scale, xnor_weight_scale)


def test_alpha_is_mean_absolute_weight_per_filter():
    w = torch.randn(5, 3, 3, 2, dtype=torch.float64)
    wn = w.numpy()
    expected = np.array([np.abs(wn[i]).sum() / (3 * 3 * 2) for i in range(5)])
    np.testing.assert_allclose(xnor_weight_scale(w).numpy(), expected)


@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 1)])
def test_k_is_box_filtered_channel_mean_of_abs_input(stride, padding):
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64)
    kh, kw = 3, 2
    k = xnor_input_scale(x, (kh, kw), stride, padding).numpy()
    a = np.abs(x.numpy()).sum(axis=1) / 4  # A = sum_c |I_c| / c
    a = np.pad(a, ((0, 0), (padding, padding), (padding, padding)))
    h_out = (a.shape[1] - kh) // stride + 1
    w_out = (a.shape[2] - kw) // stride + 1
    ref = np.zeros((2, 1, h_out, w_out))
    for n in range(2):
        for i in range(h_out):
            for j in range(w_out):
                ref[n, 0, i, j] = a[n, i * stride:i * stride + kh, j * stride:j * stride + kw].sum() / (kh * kw)
    np.testing.assert_allclose(k, ref)


SHAPES = {"case1": [(6, 1, 1)], "case2": [(6, 4, 5)], "case3": [(6, 1, 1), (1, 4, 5)],
          "case4": [(6, 1, 1), (1, 4, 1), (1, 1, 5)]}


@pytest.mark.parametrize("method", sorted(LEARNED_SCALES))
def test_parameter_shapes_follow_eq4_to_eq7(method):
    scale = make_learned_scale(method, 6, (4, 5))
    assert [tuple(p.shape) for p in scale.parameters()] == SHAPES[method]


@pytest.mark.parametrize("method", sorted(LEARNED_SCALES))
def test_fused_equals_product_of_factors_and_every_factor_gets_a_gradient(method):
    torch.manual_seed(0)
    scale = make_learned_scale(method, 6, (4, 5))
    with torch.no_grad():
        for p in scale.parameters():
            p.copy_(torch.randn_like(p))
    expected = np.ones((6, 4, 5))
    for p in scale.parameters():
        expected = expected * p.detach().numpy()  # outer product by broadcasting
    fused = scale.fused()
    assert fused.shape == (6, 4, 5)
    np.testing.assert_allclose(fused.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(FusedScale(fused)().numpy(), expected, rtol=1e-6)
    (scale() * torch.randn(6, 4, 5)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in scale.parameters())


def test_case4_with_unit_beta_gamma_equals_case1():
    c1, c4 = Case1Scale(6, (4, 5)), Case4Scale(6, (4, 5))
    alpha = torch.randn(6, 1, 1)
    with torch.no_grad():
        c1.alpha.copy_(alpha)
        c4.alpha.copy_(alpha)
    assert torch.equal(c1.fused(), c4.fused())


def test_batch_shape_prefixes_every_parameter():
    scale = make_learned_scale("case4", 3, (2, 2), batch=(7,))
    assert [tuple(p.shape) for p in scale.parameters()] == [(7, 3, 1, 1), (7, 1, 2, 1), (7, 1, 1, 2)]
    assert scale.fused().shape == (7, 3, 2, 2)


def test_case1_without_output_size_fuses_to_per_channel():
    assert Case1Scale(3).fused().shape == (3, 1, 1)


@pytest.mark.parametrize("method", ["case2", "case3", "case4"])
def test_spatial_cases_need_an_output_size(method):
    with pytest.raises(ValueError, match="output size"):
        make_learned_scale(method, 3, None)


def test_unknown_method_is_an_error():
    with pytest.raises(ValueError, match="unknown learned scale"):
        make_learned_scale("case5", 3, (2, 2))

import numpy as np
import pytest
import torch
import torch.nn as nn

from xnorpp_core.layers import METHODS, PAD_MODES, BinaryConv2d, binary_conv2d, conv_output_size


def agree_minus_disagree(x, w, stride, padding, pad_mode):
    """Independent reference: for every output, (# agreeing signs) - (# disagreeing signs).

    ``zero`` border positions are neither; ``minus_one`` border positions are -1 (Eq. 1 of 0).
    """
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    sx = np.where(x > 0, 1, -1)
    sw = np.where(w > 0, 1, -1)
    fill = 0 if pad_mode == "zero" else -1
    padded = np.full((n, c, h + 2 * padding, wd + 2 * padding), fill)
    padded[:, :, padding:padding + h, padding:padding + wd] = sx
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (wd + 2 * padding - kw) // stride + 1
    out = np.zeros((n, o, h_out, w_out), dtype=np.int64)
    for b in range(n):
        for f in range(o):
            for i in range(h_out):
                for j in range(w_out):
                    patch = padded[b, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                    agree = np.sum(patch * sw[f] == 1)
                    disagree = np.sum(patch * sw[f] == -1)
                    out[b, f, i, j] = agree - disagree
    return out


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (1, 1, 3), (2, 1, 3), (1, 0, 1), (2, 0, 1)])
def test_binary_conv_counts_agreeing_minus_disagreeing_signs(pad_mode, stride, padding, k):
    torch.manual_seed(1)
    x = torch.randn(2, 5, 6, 7)
    x[0, 0, 0, :3] = 0.0  # sign(0) = -1
    w = torch.randn(3, 5, k, k)
    got = binary_conv2d(x, w, stride=stride, padding=padding, pad_mode=pad_mode)
    ref = agree_minus_disagree(x.numpy(), w.numpy(), stride, padding, pad_mode)
    np.testing.assert_array_equal(got.numpy().astype(np.int64), ref)


def test_pad_modes_differ_only_on_the_border():
    torch.manual_seed(2)
    x, w = torch.randn(1, 4, 6, 6), torch.randn(2, 4, 3, 3)
    zero = binary_conv2d(x, w, padding=1, pad_mode="zero")
    minus = binary_conv2d(x, w, padding=1, pad_mode="minus_one")
    assert torch.equal(zero[..., 1:-1, 1:-1], minus[..., 1:-1, 1:-1])
    assert not torch.equal(zero, minus)


@pytest.mark.parametrize("dtype, exact_up_to", [(torch.float16, 2048), (torch.bfloat16, 256)])
@pytest.mark.parametrize("pad_mode", PAD_MODES)
def test_mixed_precision_never_rounds_a_binary_sum(dtype, exact_up_to, pad_mode):
    """Under autocast a sum of more terms than the type holds exactly (float16: 2048, bfloat16: 256) is made in
    float32; up to that, in the autocast type. All-positive signs give the largest sum, c x 1 x 1 = c."""
    for channels, kept in ((exact_up_to + 1, torch.float32), (exact_up_to, dtype)):
        layer = BinaryConv2d(channels, 2, 1, method="direct", pad_mode=pad_mode)
        nn.init.constant_(layer.weight, 0.5)
        x = torch.rand(1, channels, 3, 2) + 0.1
        reference = agree_minus_disagree(x.numpy(), layer.weight.detach().numpy(), 1, 0, pad_mode)
        assert reference.max() == channels
        with torch.autocast("cpu", dtype=dtype):
            y = layer(x)
        np.testing.assert_array_equal(y.detach().float().numpy(), reference)
        assert y.dtype == kept


def _reference(method, layer, x):
    """numpy reference of every method's output for a BinaryConv2d."""
    w = layer.weight.detach().numpy()
    stride, padding = layer.stride[0], layer.padding[0]
    if method == "real":
        xn = np.pad(x.numpy(), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        xr = torch.from_numpy(xn)
        return nn.functional.conv2d(xr.double(), torch.from_numpy(w).double(), stride=stride).numpy()
    count = agree_minus_disagree(x.numpy(), w, stride, padding, layer.pad_mode).astype(np.float64)
    alpha = np.abs(w).reshape(w.shape[0], -1).mean(axis=1)[:, None, None]
    if method == "direct":
        return count
    if method == "xnor_alpha":
        return count * alpha
    if method == "xnor":
        a = np.abs(x.numpy()).mean(axis=1)
        a = np.pad(a, ((0, 0), (padding, padding), (padding, padding)))
        kh, kw = layer.kernel_size
        h_out, w_out = count.shape[-2:]
        kk = np.array([[[a[n, i * stride:i * stride + kh, j * stride:j * stride + kw].mean()
                         for j in range(w_out)] for i in range(h_out)] for n in range(x.shape[0])])
        return count * alpha * kk[:, None]
    gamma = np.ones(count.shape[1:])
    for p in layer.scale.parameters():
        gamma = gamma * p.detach().numpy()
    return count * gamma


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("method", METHODS)
def test_every_method_matches_numpy_reference(method, pad_mode):
    torch.manual_seed(3)
    layer = BinaryConv2d(4, 3, 3, stride=2, padding=1, method=method, input_size=(7, 6), pad_mode=pad_mode)
    if layer.scale is not None:
        with torch.no_grad():
            for p in layer.scale.parameters():
                p.copy_(torch.rand_like(p) + 0.5)
    x = torch.randn(2, 4, 7, 6)
    np.testing.assert_allclose(layer(x).detach().numpy(), _reference(method, layer, x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("method", [m for m in METHODS if m.startswith("case")])
def test_fused_layer_gives_the_same_output(method):
    torch.manual_seed(4)
    layer = BinaryConv2d(4, 3, 3, padding=1, method=method, input_size=8)
    with torch.no_grad():
        for p in layer.scale.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(2, 4, 8, 8)
    before = layer(x)
    layer.fuse()
    assert type(layer.scale).__name__ == "FusedScale"
    assert layer.scale.gamma.shape == (3, 8, 8)
    torch.testing.assert_close(layer(x), before)


def test_case4_with_unit_beta_gamma_equals_case1_layer():
    torch.manual_seed(5)
    c1 = BinaryConv2d(4, 3, 3, method="case1")
    c4 = BinaryConv2d(4, 3, 3, method="case4", input_size=6)
    c4.weight.data.copy_(c1.weight.data)
    alpha = torch.randn(3, 1, 1)
    c1.scale.alpha.data.copy_(alpha)
    c4.scale.alpha.data.copy_(alpha)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(c1(x), c4(x))


@pytest.mark.parametrize("method", METHODS)
def test_every_parameter_receives_a_gradient(method):
    torch.manual_seed(6)
    layer = BinaryConv2d(4, 3, 3, padding=1, method=method, input_size=5)
    x = (0.5 * torch.randn(2, 4, 5, 5)).requires_grad_()
    layer(x).square().sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_real_method_is_a_plain_conv2d():
    torch.manual_seed(7)
    ref = nn.Conv2d(4, 3, 3, padding=1, bias=True)
    layer = BinaryConv2d(4, 3, 3, padding=1, bias=True, method="real")
    layer.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(layer(x), ref(x))


@pytest.mark.parametrize("method", ["case1", "case2", "case3", "case4"])
def test_input_of_another_size_is_an_error(method):
    layer = BinaryConv2d(4, 3, 3, method=method, input_size=8)
    with pytest.raises(ValueError, match="built for 8x8 inputs, got 9x9"):
        layer(torch.randn(1, 4, 9, 9))


@pytest.mark.parametrize("method", ["case2", "case3", "case4"])
def test_spatial_methods_need_input_size(method):
    with pytest.raises(ValueError, match="needs input_size"):
        BinaryConv2d(4, 3, 3, method=method)


@pytest.mark.parametrize("kwargs,match", [({"method": "case5"}, "unknown method"),
                                          ({"pad_mode": "reflect"}, "unknown pad_mode"),
                                          ({"padding": "same"}, "integer padding")])
def test_bad_options_are_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BinaryConv2d(4, 3, 3, **kwargs)


def test_conv_output_size_matches_torch():
    conv = nn.Conv2d(1, 1, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    y = conv(torch.randn(1, 1, 11, 9))
    assert conv_output_size((11, 9), (3, 2), (2, 1), (1, 0), (1, 2)) == tuple(y.shape[-2:])

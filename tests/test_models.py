"""Binary ResNet-18 and AlexNet: structure against the published architectures, sizes, gradients, fusion."""

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from xnorpp_core.layers import METHODS, BinaryConv2d
from xnorpp_core.models import (SHORTCUTS, binary_alexnet, binary_resnet18, build_model, center_and_clamp_weights_,
                                fuse_model)
from xnorpp_core.scales import FusedScale, LearnedScale, xnor_weight_scale

# Output (channels, size) of every binary conv, counted by hand from the architectures.
RESNET18_224 = [(64, 56)] * 4 + [(128, 28)] * 4 + [(256, 14)] * 4 + [(512, 7)] * 4
ALEXNET_227 = [(256, 27), (384, 13), (384, 13), (256, 13), (4096, 1), (4096, 1)]
TORCHVISION_ALEXNET_227 = [(192, 27), (384, 13), (256, 13), (256, 13), (4096, 1), (4096, 1)]


def gamma_params(method, convs):
    """Learned Gamma parameter count, Eq. 4-7: o | o*h*w | o + h*w | o + h + w per layer."""
    per_layer = {"case1": lambda o, s: o, "case2": lambda o, s: o * s * s,
                 "case3": lambda o, s: o + s * s, "case4": lambda o, s: o + 2 * s}
    return sum(per_layer[method](o, s) for o, s in convs) if method in per_layer else 0


def count(model, kind):
    return sum(p.numel() for m in model.modules() if isinstance(m, kind) for p in m.parameters(recurse=False))


def weight_sizes(model):
    """Multiset of the numbers of weights of every conv and linear layer."""
    return Counter(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


@pytest.mark.parametrize("method", METHODS)
def test_resnet18_parameter_count_against_torchvision(method):
    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        ours, ref = binary_resnet18(method), torchvision.models.resnet18()
    assert weight_sizes(ours) == weight_sizes(ref)  # same 20 convs + fc
    # BN: stem 64; each block BN(c_in) + BN(c_out) (+ shortcut BN(c_out)); final BN 512.
    blocks = [(64, 64)] * 2 + [(64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]
    bn = 64 + sum(i + o for i, o in blocks) + (128 + 256 + 512) + 512
    assert count(ours, nn.BatchNorm2d) == 2 * bn
    assert sum(m.numel() for m in ours.parameters()) == (
        sum(weight_sizes(ref).elements()) + 1000 + 2 * bn + gamma_params(method, RESNET18_224))
    assert sum(p.numel() for p in ref.parameters()) == 11_689_512  # torchvision's published count


# Krizhevsky et al.'s AlexNet without its two-GPU grouping, as XNOR-Net binarizes it:
# (name, c_in, c_out, kernel), fully connected layers as kernels over their whole input.
KRIZHEVSKY = [("conv1", 3, 96, 11), ("conv2", 96, 256, 5), ("conv3", 256, 384, 3), ("conv4", 384, 384, 3),
              ("conv5", 384, 256, 3), ("fc6", 256, 4096, 6), ("fc7", 4096, 4096, 1), ("fc8", 4096, 1000, 1)]


def test_the_krizhevsky_table_is_the_published_count():
    """The table above, with a bias per filter, is the ungrouped AlexNet's published 62,378,344 parameters."""
    assert sum(k * k * c_in * c_out + c_out for _, c_in, c_out, k in KRIZHEVSKY) == 62_378_344


@pytest.mark.parametrize("method", METHODS)
def test_alexnet_parameter_count_against_the_paper(method):
    with torch.device("meta"):
        ours = binary_alexnet(method)
    weights = sum(k * k * c_in * c_out for _, c_in, c_out, k in KRIZHEVSKY)
    # BN after conv1; before conv2..conv5, fc6, fc7 (the sign's); before fc8. Each has a scale and a shift.
    bn = 96 + sum(c_in for name, c_in, _, _ in KRIZHEVSKY if name not in ("conv1", "fc8")) + 4096
    assert count(ours, nn.BatchNorm2d) == 2 * bn
    biases = 1000  # fc8 only: conv1 is followed by BN, the binary layers by their scale
    assert sum(p.numel() for p in ours.parameters()) == weights + biases + 2 * bn + gamma_params(method, ALEXNET_227)


def layer_list(model):
    """The model's layers in order: (kind, c_in, c_out, kernel, stride, padding) or (kind, channels) or kind."""
    out = []
    for m in model.modules():
        if isinstance(m, BinaryConv2d):
            kind = "sign-conv" if m.method != "real" else "conv"
            out.append((kind, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]))
        elif isinstance(m, nn.Conv2d):
            out.append(("conv", m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0]))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(("bn", m.num_features))
        elif isinstance(m, nn.Linear):
            out.append(("linear", m.in_features, m.out_features))
        elif isinstance(m, nn.MaxPool2d):
            out.append(("maxpool", m.kernel_size, m.stride))
        elif isinstance(m, (nn.ReLU, nn.Dropout)):
            out.append(type(m).__name__.lower() + ("" if isinstance(m, nn.ReLU) else f" {m.p}"))
    return out


def test_alexnet_layer_list_is_xnor_nets_with_the_papers_dropout():
    """XNOR-Net's binary AlexNet (BN + ReLU after conv1 and before fc8, no ReLU after a binary layer),
    with the paper's dropout 0.5 on both hidden fully connected layers."""
    pool = ("maxpool", 3, 2)
    expected = [("conv", 3, 96, 11, 4, 2), ("bn", 96), "relu", pool,
                ("bn", 96), ("sign-conv", 96, 256, 5, 1, 2), pool,
                ("bn", 256), ("sign-conv", 256, 384, 3, 1, 1),
                ("bn", 384), ("sign-conv", 384, 384, 3, 1, 1),
                ("bn", 384), ("sign-conv", 384, 256, 3, 1, 1), pool,
                ("bn", 256), ("sign-conv", 256, 4096, 6, 1, 0), "dropout 0.5",
                ("bn", 4096), ("sign-conv", 4096, 4096, 1, 1, 0), "dropout 0.5",
                ("bn", 4096), "relu", ("linear", 4096, 1000)]
    with torch.device("meta"):
        assert layer_list(binary_alexnet("case4")) == expected
        # The real baseline: the same layers, a ReLU after each convolution in place of the next sign.
        real = layer_list(binary_alexnet("real"))
    assert [x for x in real if x != "relu"] == [("conv",) + x[1:] if x[0] == "sign-conv" else x
                                                 for x in expected if x != "relu"]
    assert real.count("relu") == 2 + 6


@pytest.mark.parametrize("method", METHODS)
def test_alexnet_torchvision_widths_against_torchvision(method):
    with torch.device("meta"):
        ours, ref = binary_alexnet(method, widths="torchvision"), torchvision.models.alexnet()
    assert weight_sizes(ours) == weight_sizes(ref)  # fc6 as a 6x6 conv holds 9216 x 4096 weights
    bn = 64 + (64 + 192 + 384 + 256 + 256 + 4096) + 4096  # after conv1; before conv2..5, fc6, fc7; before fc8
    assert count(ours, nn.BatchNorm2d) == 2 * bn
    biases = 1000  # fc8 only
    assert sum(m.numel() for m in ours.parameters()) == (
        sum(weight_sizes(ref).elements()) + biases + 2 * bn + gamma_params(method, TORCHVISION_ALEXNET_227))
    assert sum(p.numel() for p in ref.parameters()) == 61_100_840


@pytest.mark.parametrize("arch, kw, size, convs", [
    ("resnet18", {}, 224, RESNET18_224),
    ("resnet18", {"small_input": True}, 16, [(64, 16)] * 4 + [(128, 8)] * 4 + [(256, 4)] * 4 + [(512, 2)] * 4),
    ("alexnet", {}, 227, ALEXNET_227),
    ("alexnet", {}, 224, ALEXNET_227),
    ("alexnet", {"small_input": True}, 32, [(256, 15), (384, 7), (384, 7), (256, 7), (4096, 1), (4096, 1)]),
    ("alexnet", {"widths": "torchvision"}, 227, TORCHVISION_ALEXNET_227),
    ("resnet18", {"small_input": True, "shortcut": "binary"}, 15,
     [(64, 15)] * 4 + [(128, 8)] * 2 + [(128, 8)] + [(128, 8)] * 2 + [(256, 4)] * 2 + [(256, 4)] + [(256, 4)] * 2
     + [(512, 2)] * 2 + [(512, 2)] + [(512, 2)] * 2),
])
def test_layer_sizes_derived_from_the_input(arch, kw, size, convs):
    model = build_model(arch, "case2", 5, size, **kw)
    binary = [m for m in model.modules() if isinstance(m, BinaryConv2d)]
    assert [(m.out_channels, m.out_size[0]) for m in binary] == convs
    seen = []
    for m in binary:
        m.register_forward_pre_hook(lambda m, args: seen.append((tuple(args[0].shape[-2:]), m.input_size)))
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, size, size)).shape == (1, 5)
    assert len(seen) == len(binary) and all(got == built for got, built in seen)
    with pytest.raises(ValueError, match="built for"):
        model(torch.randn(1, 3, size + 8, size + 8))


@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
@pytest.mark.parametrize("method", METHODS)
def test_every_parameter_gets_a_gradient(arch, method):
    torch.manual_seed(0)
    model = build_model(arch, method, 4, 16, small_input=True)
    model(torch.randn(4, 3, 16, 16)).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("method", [m for m in METHODS if m.startswith("case")])
def test_gamma_starts_at_the_xnor_weight_scale(method):
    for m in binary_resnet18(method, 10, 16, small_input=True).modules():
        if isinstance(m, BinaryConv2d):
            gamma = m.scale.fused()  # (o, h_out, w_out), all spatial factors 1
            expect = xnor_weight_scale(m.weight)[:, None, None].expand_as(gamma)
            torch.testing.assert_close(gamma, expect)


@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
@pytest.mark.parametrize("method", METHODS)
def test_fused_model_predicts_the_same(arch, method):
    torch.manual_seed(0)
    model = build_model(arch, method, 7, 16, small_input=True)
    with torch.no_grad():  # move every factor away from its initial value
        for m in model.modules():
            if isinstance(m, LearnedScale):
                for p in m.parameters():
                    p.mul_(torch.rand_like(p) + 0.5)
    x = torch.randn(3, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        before = model(x)
        n_before = sum(p.numel() for p in model.parameters())
        assert fuse_model(model) is model
        after = model(x)
    assert torch.equal(before, after)
    assert not any(isinstance(m, LearnedScale) for m in model.modules())
    fused = [m for m in model.modules() if isinstance(m, FusedScale)]
    assert len(fused) == (0 if not method.startswith("case") else 6 if arch == "alexnet" else 16)
    assert n_before - sum(p.numel() for p in model.parameters()) == gamma_params(
        method, [(m.out_channels, m.out_size[0]) for m in model.modules() if isinstance(m, BinaryConv2d)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("vgg", "case4", 10, 32)
    with pytest.raises(ValueError, match="unknown method"):
        build_model("resnet18", "case5", 10, 32)
    with pytest.raises(ValueError, match="too small"):
        binary_resnet18("case1", 10, 8)
    with pytest.raises(ValueError, match="too small"):
        binary_alexnet("case4", 10, 32)  # 11x11/4 stem: 32 -> 7 -> 3 -> 1 -> max-pool has nothing left
    with pytest.raises(ValueError, match="num_classes"):
        binary_alexnet("real", 0)
    with pytest.raises(ValueError, match="unknown AlexNet widths"):
        binary_alexnet("real", widths="caffe")
    with pytest.raises(ValueError, match="unknown shortcut"):
        binary_resnet18("real", shortcut="option_a")


def test_center_and_clamp_against_numpy():
    torch.manual_seed(0)
    model = binary_resnet18("case1", 10, 8, small_input=True)
    conv = model.blocks[0].unit1.conv
    with torch.no_grad():
        conv.weight.mul_(100)  # beyond [-1, 1], so that the clamp acts
    w = conv.weight.detach().numpy().copy()  # (o, c, kh, kw)
    stem = model.stem[0].weight.detach().clone()
    center_and_clamp_weights_(model)
    expect = np.clip(w - w.mean(axis=1, keepdims=True), -1, 1)
    np.testing.assert_allclose(conv.weight.detach().numpy(), expect, rtol=1e-6, atol=1e-6)
    assert 0.2 < (np.abs(expect) == 1).mean() < 0.99  # the clamp changed many weights, not all
    assert torch.equal(model.stem[0].weight, stem)  # real layers untouched
    real = binary_resnet18("real", 10, 8, small_input=True)
    before = [p.clone() for p in real.parameters()]
    center_and_clamp_weights_(real)
    assert all(torch.equal(a, b) for a, b in zip(before, real.parameters()))


@pytest.mark.parametrize("shortcut", SHORTCUTS)
def test_resnet_shortcuts(shortcut):
    """Every shortcut has the main path's output size (odd sizes too), passes gradients, and keeps
    torchvision's convolution and linear weights (one 1x1 convolution per downsampling block)."""
    torch.manual_seed(0)
    model = binary_resnet18("case2", 4, 15, small_input=True, shortcut=shortcut)
    model(torch.randn(2, 3, 15, 15)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    kinds = {type(m) for b in model.blocks for m in b.shortcut.modules()}
    assert (nn.AvgPool2d in kinds) == (shortcut == "avgpool_conv")
    assert (BinaryConv2d in kinds) == (shortcut == "binary")
    with torch.device("meta"):
        assert weight_sizes(binary_resnet18("real", shortcut=shortcut)) == weight_sizes(torchvision.models.resnet18())


@pytest.mark.parametrize("arch", ["resnet18", "alexnet"])
def test_bn_without_affine_parameters_before_each_sign(arch):
    with torch.device("meta"):
        plain, affine = build_model(arch, "case4", 10, 32, small_input=True, bn_affine=False), \
            build_model(arch, "case4", 10, 32, small_input=True)
    before_sign = [m.bn for m in plain.modules() if type(m).__name__ == "BinaryUnit"]
    assert before_sign and not any(bn.affine for bn in before_sign)
    dropped = 2 * sum(bn.num_features for bn in before_sign)
    assert sum(p.numel() for p in affine.parameters()) - sum(p.numel() for p in plain.parameters()) == dropped

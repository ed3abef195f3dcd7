"""Binary ResNet-18 and AlexNet: structure against torchvision, sizes, gradients, fusion."""

from collections import Counter

import pytest
import torch
import torch.nn as nn
import torchvision

from xnorpp_core.layers import METHODS, BinaryConv2d
from xnorpp_core.models import binary_alexnet, binary_resnet18, build_model, fuse_model
from xnorpp_core.scales import FusedScale, LearnedScale, xnor_weight_scale

# Output (channels, size) of every binary conv, counted by hand from the architectures.
RESNET18_224 = [(64, 56)] * 4 + [(128, 28)] * 4 + [(256, 14)] * 4 + [(512, 7)] * 4
ALEXNET_227 = [(192, 27), (384, 13), (256, 13), (256, 13), (4096, 1), (4096, 1)]


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


@pytest.mark.parametrize("method", METHODS)
def test_alexnet_parameter_count_against_torchvision(method):
    with torch.device("meta"):
        ours, ref = binary_alexnet(method), torchvision.models.alexnet()
    assert weight_sizes(ours) == weight_sizes(ref)  # fc6 as a 6x6 conv holds 9216 x 4096 weights
    bn = 64 + 192 + 384 + 256 + 256 + 4096  # before conv2..5, fc6, fc7
    assert count(ours, nn.BatchNorm2d) == 2 * bn
    biases = 64 + 1000  # conv1 and fc8 only: the binary layers have none
    assert sum(m.numel() for m in ours.parameters()) == (
        sum(weight_sizes(ref).elements()) + biases + 2 * bn + gamma_params(method, ALEXNET_227))
    assert sum(p.numel() for p in ref.parameters()) == 61_100_840


@pytest.mark.parametrize("arch, kw, size, convs", [
    ("resnet18", {}, 224, RESNET18_224),
    ("resnet18", {"small_input": True}, 16, [(64, 16)] * 4 + [(128, 8)] * 4 + [(256, 4)] * 4 + [(512, 2)] * 4),
    ("alexnet", {}, 227, ALEXNET_227),
    ("alexnet", {}, 224, ALEXNET_227),
    ("alexnet", {"small_input": True}, 32, [(192, 15), (384, 7), (256, 7), (256, 7), (4096, 1), (4096, 1)]),
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


@pytest.mark.parametrize("input_size", [227, 224])
def test_alexnet_docstring_states_conv1_output_size(input_size):
    """The layout table of xnorpp_core/models/alexnet.py gives conv1's output size as the model computes it."""
    import re

    import xnorpp_core.models.alexnet as module

    model = binary_alexnet("case4", 10, input_size)
    size = model.stem[0](torch.zeros(1, 3, input_size, input_size)).shape[-1]
    doc = module.__doc__
    if input_size == 227:
        line = next(l for l in doc.splitlines() if l.strip().startswith("conv1"))
        assert re.search(rf"\b{size} -> 27$", line.strip()), line
    else:
        assert f"at {input_size} conv1 gives {size}" in doc

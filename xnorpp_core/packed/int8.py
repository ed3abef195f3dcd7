"""Real layers in int8, an option of the packed network: the stem, the shortcuts and the classifier.

The paper keeps every layer that is not binary in floating point (its Section 4.3
counts them apart); deployed binary networks usually quantize them. With
``quantize_real_layers`` every real ``nn.Conv2d`` (strided 1x1 ones on the pixels they
read) and ``nn.Linear`` of a traced float network becomes ``Int8Layers``: its input
quantized to ``quint8`` per tensor, PyTorch's own quantized convolution or linear
layer (``torch.ao.nn.quantized``, weights ``qint8`` per output channel), a directly
following ``ReLU`` and ``MaxPool2d`` run on the quantized values, and the result
dequantized to float32. The ranges come from PyTorch's default observers for the
quantized engine (``torch.ao.quantization.get_default_qconfig``), run on calibration
inputs. The packed network and its emulation (``network.fused_emulation``) call the
very same modules, so the int8 layers change both alike and their logits stay equal.
"""

import contextlib
import warnings

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.fx as fx
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig

__all__ = ["ENGINES", "Int8Layers", "default_engine", "quantize_real_layers"]

ENGINES = ("x86", "onednn", "fbgemm", "qnnpack")  # by preference, among torch.backends.quantized.supported_engines


def default_engine():
    """The first of ``ENGINES`` that this build of PyTorch offers."""
    offered = torch.backends.quantized.supported_engines
    engine = next((e for e in ENGINES if e in offered), None)
    if engine is None:
        raise RuntimeError(f"this PyTorch offers no quantized CPU engine (it offers {offered})")
    return engine


@contextlib.contextmanager
def _engine(name):
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class Int8Layers(nn.Module):
    """A real convolution (with a following ReLU and max pooling) or linear layer in int8: float32 in, float32 out.

    ``step`` (a convolution's stride, when it is run on the pixels it reads) subsamples the input first.
    """

    def __init__(self, layer, in_qparams, out_qparams, qconfig, relu=False, pool=None, step=None):
        super().__init__()
        observer = qconfig.weight()
        observer(layer.weight.detach())
        w_scale, w_zero = observer.calculate_qparams()
        weight = torch.quantize_per_channel(layer.weight.detach().float(), w_scale.float(), w_zero.long(), 0,
                                            torch.qint8)
        bias = None if layer.bias is None else layer.bias.detach().float()
        if isinstance(layer, nn.Linear):
            q = nnq.Linear(layer.in_features, layer.out_features)
        else:
            kind = nniq.ConvReLU2d if relu else nnq.Conv2d
            stride = (1, 1) if step is not None else layer.stride
            q = kind(layer.in_channels, layer.out_channels, layer.kernel_size, stride, layer.padding,
                     layer.dilation, layer.groups)
        q.set_weight_bias(weight, bias)
        q.scale, q.zero_point = float(out_qparams[0]), int(out_qparams[1])
        self.layer, self.pool, self.step = q, pool, step
        self.in_scale, self.in_zero_point = float(in_qparams[0]), int(in_qparams[1])

    def forward(self, x):
        if self.step is not None:
            x = x[:, :, ::self.step[0], ::self.step[1]]
        q = torch.quantize_per_tensor(x, self.in_scale, self.in_zero_point, torch.quint8)
        q = self.layer(q)  # a convolution's ReLU is fused into it
        if self.pool is not None:
            q = self.pool(q)
        return q.dequantize()

    def extra_repr(self):
        return f"in_scale={self.in_scale:.4g}, in_zero_point={self.in_zero_point}, step={self.step}"


def _follower(node, kind, modules):
    """The single user of ``node`` when it is a module of type ``kind``, else None."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    return user if user.op == "call_module" and isinstance(modules[user.target], kind) else None


@torch.no_grad()
def quantize_real_layers(gm, calibration, is_real, engine=None):
    """Replace, in place, each real layer of the ``fx.GraphModule`` ``gm`` (``is_real(module)``) by
    ``Int8Layers``, with ranges observed on the calibration inputs ``calibration`` (a tensor, run by
    ``gm`` in batches of 8). Returns ``gm``."""
    with warnings.catch_warnings():
        # PyTorch's own default observers use an argument it plans to drop, and it marks its quantized tensors
        # deprecated (once per process: here rather than in a later run)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return _quantize(gm, calibration, is_real, engine or default_engine())


def _quantize(gm, calibration, is_real, engine):
    qconfig = get_default_qconfig(engine)
    modules = dict(gm.named_modules())
    groups = []  # (first node, last node, relu, pool)
    for node in gm.graph.nodes:
        if node.op == "call_module" and is_real(modules[node.target]):
            last, relu, pool = node, False, None
            relu_node = _follower(node, nn.ReLU, modules)
            if relu_node is not None and not isinstance(modules[node.target], nn.Linear):
                last, relu = relu_node, True
                pool_node = _follower(relu_node, nn.MaxPool2d, modules)
                if pool_node is not None:
                    last, pool = pool_node, modules[pool_node.target]
            groups.append((node, last, relu, pool))
    if not groups:
        return gm
    observers = {node: (qconfig.activation(), qconfig.activation()) for node, *_ in groups}
    hooks = []
    for node, last, *_ in groups:
        first_obs, last_obs = observers[node]
        hooks.append(modules[node.target].register_forward_pre_hook(lambda m, args, o=first_obs: o(args[0])))
        hooks.append(modules[last.target].register_forward_hook(lambda m, args, out, o=last_obs: o(out)))
    try:
        for start in range(0, len(calibration), 8):
            gm(calibration[start:start + 8].contiguous(memory_format=torch.channels_last))
    finally:
        for h in hooks:
            h.remove()
    with _engine(engine):
        for node, last, relu, pool in groups:
            layer = modules[node.target]
            first_obs, last_obs = observers[node]
            step = getattr(layer, "step", None)
            int8 = Int8Layers(layer, first_obs.calculate_qparams(), last_obs.calculate_qparams(), qconfig, relu,
                              pool, step)
            parent, _, leaf = node.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, leaf, int8)
            if last is not node:
                last.replace_all_uses_with(node)
                while last is not node:
                    previous = last.args[0]
                    gm.graph.erase_node(last)
                    last = previous
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm

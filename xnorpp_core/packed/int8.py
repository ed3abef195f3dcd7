"""Real layers in int8, an option of the packed network: the stem, the shortcuts and the classifier.

The paper keeps every layer that is not binary in floating point (its Section 4.3
counts them apart); deployed binary networks usually quantize them. With
``quantize_real_layers`` every real ``nn.Conv2d`` and ``nn.Linear`` of a traced float
network runs in int8, its input quantized per tensor and its weights per output channel
(``qint8``, symmetric), with ranges from PyTorch's default observers for the quantized
engine (``torch.ao.quantization.get_default_qconfig``) run on calibration inputs:

- ``Int8Layers``: a convolution (with a directly following ``ReLU`` and ``MaxPool2d``,
  the stem) as PyTorch's own quantized modules (``torch.ao.nn.quantized``), input
  ``quint8``, output requantized and dequantized to float32;
- ``Int8Gemm``: a 1x1 convolution (the downsampling shortcuts, strided ones on the pixels
  they read) or a linear layer (the classifier) as one integer matrix product with a
  float output, ``y = float(sum_k (q_k - z) w_k) * (s_x s_w) + b``, codes
  ``q = clamp(round(x * inv) + z, 0, 255)`` (``inv`` the float32 nearest ``1 / s_x``, ties to even),
  weights ``round(w / s_w)`` in [-128, 127]: in torch operations here (the emulation's
  definition), in the packed network by the compiled ``int8_gemm`` (VNNI where the CPU
  has it), which gives the same floats.

The packed network and its emulation (``network.fused_emulation``) hold the very same
modules, so the int8 layers change both alike and their logits stay equal.
"""

import contextlib
import warnings

import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.fx as fx
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig

__all__ = ["ENGINES", "Int8Gemm", "Int8Layers", "arithmetic", "default_engine", "quantize_real_layers"]

ENGINES = ("x86", "onednn", "fbgemm", "qnnpack")  # by preference, among torch.backends.quantized.supported_engines


def default_engine():
    """The first of ``ENGINES`` that this build of PyTorch offers."""
    offered = torch.backends.quantized.supported_engines
    engine = next((e for e in ENGINES if e in offered), None)
    if engine is None:
        raise RuntimeError(f"this PyTorch offers no quantized CPU engine (it offers {offered})")
    return engine


def arithmetic(backend):
    """The int8 real layers' arithmetic in the packed network on ``backend`` (a ``BackendInfo``), in words."""
    if backend.name == "numpy":
        gemm = "torch operations"
    else:
        gemm = "int8_gemm, " + ("AVX-512 VNNI" if backend.simd and backend.kernel.vnni_available() else "portable loops")
    return (f"int8 real layers: the stem by PyTorch's quantized convolution ({default_engine()} engine), the "
            f"shortcuts and the classifier by {gemm}")


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
        self._values = None

    def quantized(self, x):
        """The input quantized, through the layer (and a convolution's ReLU): ``quint8``, before the pooling."""
        if self.step is not None:
            x = x[:, :, ::self.step[0], ::self.step[1]]
        q = torch.quantize_per_tensor(x, self.in_scale, self.in_zero_point, torch.quint8)
        return self.layer(q)  # a convolution's ReLU is fused into it

    def forward(self, x):
        q = self.quantized(x)
        if self.pool is not None:
            q = self.pool(q)
        return q.dequantize()

    def code_values(self):
        """float32 ``(256,)``: what ``dequantize`` makes of each output code (the output's scale and zero point)."""
        if self._values is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
                codes = torch._make_per_tensor_quantized_tensor(torch.arange(256, dtype=torch.uint8), self.layer.scale,
                                                                self.layer.zero_point)
            self._values = codes.dequantize().contiguous()
        return self._values

    def extra_repr(self):
        return f"in_scale={self.in_scale:.4g}, in_zero_point={self.in_zero_point}, step={self.step}"


class Int8Gemm(nn.Module):
    """A 1x1 convolution (no padding, on every ``stride``-th pixel) or a linear layer in int8: float32 in, float32
    out (module docstring). ``forward`` is the definition, in torch operations; ``kernel_operands`` gives the
    compiled ``int8_gemm`` its weights."""

    def __init__(self, layer, in_qparams, qconfig, step=None):
        super().__init__()
        weight = layer.weight.detach().float()
        observer = qconfig.weight()
        observer(weight)
        w_scale, w_zero = observer.calculate_qparams()
        if bool((w_zero != 0).any()):
            raise ValueError("Int8Gemm takes symmetric weight quantization (zero points 0)")
        shape = (-1,) + (1,) * (weight.dim() - 1)
        q = torch.clamp(torch.round(weight / w_scale.float().view(shape)), -128, 127).to(torch.int8)
        self.linear = isinstance(layer, nn.Linear)
        self.stride = (1, 1) if self.linear else tuple(step or layer.stride)
        self.register_buffer("weight_codes", q.reshape(q.shape[0], -1).contiguous())  # (o, K) int8
        scale, zero_point = float(in_qparams[0]), int(in_qparams[1])
        self.zero_point = zero_point
        self.inv_scale = float(torch.tensor(1.0 / scale, dtype=torch.float32))  # a float32 value
        self.register_buffer("out_scale", (scale * w_scale.double()).float())  # s_x s_w per output
        bias = layer.bias.detach().float() if layer.bias is not None else torch.zeros(q.shape[0])
        self.register_buffer("bias", bias.clone())
        self._operands = None

    @property
    def out_features(self):
        return self.weight_codes.shape[0]

    def codes(self, x):
        """The input codes ``clamp(round(x * inv_scale) + zero_point, 0, 255)``, float32 (ties to even)."""
        return torch.clamp(torch.round(x * self.inv_scale) + self.zero_point, 0, 255)

    def forward(self, x):
        if not self.linear:
            x = x[:, :, ::self.stride[0], ::self.stride[1]]
            n, _, h, w = x.shape
            x = x.permute(0, 2, 3, 1).reshape(n * h * w, -1)
        acc = (self.codes(x).double() - self.zero_point) @ self.weight_codes.double().t()  # exact integers
        y = acc.float() * self.out_scale + self.bias
        return y if self.linear else y.reshape(n, h, w, -1).permute(0, 3, 1, 2)

    def kernel_operands(self):
        """``(wq, w_sums, scale, bias)`` as ``int8_gemm`` takes them (outputs padded to a multiple of 64)."""
        if self._operands is None:
            o, k = self.weight_codes.shape
            o_pad, k4 = -(-o // 64) * 64, -(-k // 4)
            w = torch.zeros(o_pad, 4 * k4, dtype=torch.int8)
            w[:o, :k] = self.weight_codes
            wq = w.reshape(o_pad // 16, 16, k4, 4).permute(0, 2, 1, 3).reshape(o_pad // 16, k4, 64).contiguous()
            pad = lambda v: torch.cat([v, v.new_zeros(o_pad - o)]).contiguous()  # noqa: E731
            self._operands = (wq, pad(self.weight_codes.sum(1, dtype=torch.int32)), pad(self.out_scale),
                              pad(self.bias))
        return self._operands

    def extra_repr(self):
        return (f"out_features={self.out_features}, stride={self.stride}, inv_scale={self.inv_scale:.4g}, "
                f"zero_point={self.zero_point}")


def _gemm_layer(layer, relu, pool):
    """Whether ``Int8Gemm`` takes ``layer``: a linear layer, or a 1x1 convolution (no padding, groups or dilation)
    followed by neither ReLU nor pooling."""
    if isinstance(layer, nn.Linear):
        return True
    return (isinstance(layer, nn.Conv2d) and not relu and pool is None and layer.kernel_size == (1, 1)
            and layer.padding in (0, (0, 0)) and layer.groups == 1 and layer.dilation == (1, 1))


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
            if _gemm_layer(layer, relu, pool):
                int8 = Int8Gemm(layer, first_obs.calculate_qparams(), qconfig, step)
            else:
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

"""Real layers in int8, an option of the packed network: the stem, the shortcuts and the classifier.

The paper keeps every layer that is not binary in floating point (its Section 4.3
counts them apart); deployed binary networks usually quantize them. With
``quantize_real_layers`` every real ``nn.Conv2d`` and ``nn.Linear`` of a traced float
network runs in int8, its input quantized per tensor to unsigned codes and its weights per
output channel (``qint8``, symmetric), with ranges from PyTorch's default observers for the
quantized engine (``torch.ao.quantization.get_default_qconfig``) run on calibration inputs.
Each is one integer product with a float output: codes
``q = clamp(round(x * inv) + z, 0, 255)`` (``inv`` the float32 nearest ``1 / s_x``, ties to
even, in float32: ``input_codes``), weights ``round(w / s_w)`` in [-128, 127], and

    y = float(sum_k (q_k - z) w_k) * (s_x s_w) + b     (exact integer sums; a multiply, then an add)

- ``Int8Gemm``: a 1x1 convolution (the downsampling shortcuts, strided ones on the pixels
  they read) or a linear layer (the classifier);
- ``Int8Conv``: any other convolution (the stem), with a directly following ``ReLU`` and
  ``MaxPool2d`` applied to ``y`` in float32.

``forward`` is each module's definition, in torch operations (the emulation's); in the
packed network the compiled ``int8_gemm`` and ``int8_conv`` (AVX-512 VNNI where the CPU has
it, else portable loops) compute the same floats. The packed network and its emulation
(``network.fused_emulation``) hold the very same modules, so the int8 layers change both
alike and their logits stay equal.
"""

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig

__all__ = ["ENGINES", "Int8Conv", "Int8Gemm", "arithmetic", "default_engine", "input_codes", "quantize_real_layers"]

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
        return "int8 real layers: torch operations"
    path = "AVX-512 VNNI" if backend.simd and backend.kernel.vnni_available() else "portable loops"
    return f"int8 real layers: int8_conv (the stem) and int8_gemm (the shortcuts and the classifier), {path}"


def input_codes(x, inv_scale, zero_point):
    """The input codes ``clamp(round(x * inv_scale) + zero_point, 0, 255)``, float32 (ties to even)."""
    return torch.clamp(torch.round(x * inv_scale) + zero_point, 0, 255)


def _weight_codes(weight, qconfig):
    """``(codes, scales)``: ``weight`` (o, ...) quantized per output by ``qconfig``'s weight observer (symmetric:
    zero points 0), int8 ``round(w / s_w)`` clamped to [-128, 127], and ``s_w`` (o,) float64."""
    observer = qconfig.weight()
    observer(weight)
    w_scale, w_zero = observer.calculate_qparams()
    if bool((w_zero != 0).any()):
        raise ValueError("int8 real layers take symmetric weight quantization (zero points 0)")
    shape = (-1,) + (1,) * (weight.dim() - 1)
    codes = torch.clamp(torch.round(weight / w_scale.float().view(shape)), -128, 127).to(torch.int8)
    return codes, w_scale.double()


class _Int8(nn.Module):
    """What the int8 layers share: the input's quantization (``in_qparams``: scale and zero point), the weight
    codes (per output), ``out_scale`` = s_x s_w (o,) and the bias."""

    def __init__(self, layer, in_qparams, qconfig):
        super().__init__()
        codes, w_scale = _weight_codes(layer.weight.detach().float(), qconfig)
        scale, zero_point = float(in_qparams[0]), int(in_qparams[1])
        self.zero_point = zero_point
        self.inv_scale = float(torch.tensor(1.0 / scale, dtype=torch.float32))  # a float32 value
        self.register_buffer("weight_codes", codes.contiguous())
        self.register_buffer("out_scale", (scale * w_scale).float())  # s_x s_w per output
        bias = layer.bias.detach().float() if layer.bias is not None else torch.zeros(codes.shape[0])
        self.register_buffer("bias", bias.clone())
        self._operands = None

    @property
    def out_features(self):
        return self.weight_codes.shape[0]

    def codes(self, x):
        """The input codes (``input_codes``), float32."""
        return input_codes(x, self.inv_scale, self.zero_point)


class Int8Conv(_Int8):
    """A convolution (with a following ReLU and max pooling) in int8: float32 in, float32 out (module docstring).
    ``forward`` is the definition, in torch operations; ``kernel_operands`` gives the compiled ``int8_conv`` its
    weights."""

    def __init__(self, layer, in_qparams, qconfig, relu=False, pool=None, step=None):
        super().__init__(layer, in_qparams, qconfig)
        pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
        self.stride = pair(step) if step is not None else pair(layer.stride)
        self.padding = (0, 0) if step is not None else pair(layer.padding)
        if layer.groups != 1 or pair(layer.dilation) != (1, 1) or isinstance(layer.padding, str):
            raise ValueError("Int8Conv takes convolutions without groups, dilation or padding by name")
        self.relu = relu
        self.pool = None if pool is None else (*pair(pool.kernel_size), *pair(pool.stride or pool.kernel_size),
                                               *pair(pool.padding))
        if pool is not None and (pool.ceil_mode or pair(pool.dilation) != (1, 1) or pool.return_indices):
            raise ValueError("Int8Conv takes max pooling in floor mode, without dilation")

    def forward(self, x):
        acc = F.conv2d(self.codes(x).double() - self.zero_point, self.weight_codes.double(), None, self.stride,
                       self.padding)  # exact integers
        y = acc.float() * self.out_scale.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.relu:
            y = torch.relu(y)
        if self.pool is not None:
            y = F.max_pool2d(y, self.pool[:2], self.pool[2:4], self.pool[4:])
        return y

    def kernel_operands(self):
        """``(wq, w_sums, scale, bias)`` as ``int8_conv`` takes them (outputs padded to a multiple of 16)."""
        if self._operands is None:
            o, c, kh, kw = self.weight_codes.shape
            o_pad, row = -(-o // 16) * 16, kw * c
            q = -(-row // 4)
            w = torch.zeros(o_pad, kh, 4 * q, dtype=torch.int8)
            w[:o, :, :row] = self.weight_codes.permute(0, 2, 3, 1).reshape(o, kh, row)  # (kx, c) pairs in a row
            wq = w.reshape(o_pad, kh, q, 4).permute(1, 2, 0, 3).contiguous()  # (kh, q, o_pad, 4)
            pad = lambda v: torch.cat([v, v.new_zeros(o_pad - o)]).contiguous()  # noqa: E731
            self._operands = (wq, pad(self.weight_codes.flatten(1).sum(1, dtype=torch.int32)), pad(self.out_scale),
                              pad(self.bias))
        return self._operands

    def extra_repr(self):
        return (f"out_channels={self.out_features}, stride={self.stride}, padding={self.padding}, relu={self.relu}, "
                f"pool={self.pool}, inv_scale={self.inv_scale:.4g}, zero_point={self.zero_point}")


class Int8Gemm(_Int8):
    """A 1x1 convolution (no padding, on every ``stride``-th pixel) or a linear layer in int8: float32 in, float32
    out (module docstring). ``forward`` is the definition, in torch operations; ``kernel_operands`` gives the
    compiled ``int8_gemm`` its weights."""

    def __init__(self, layer, in_qparams, qconfig, step=None):
        super().__init__(layer, in_qparams, qconfig)
        self.linear = isinstance(layer, nn.Linear)
        self.stride = (1, 1) if self.linear else tuple(step or layer.stride)
        self.weight_codes = self.weight_codes.reshape(self.out_features, -1).contiguous()  # (o, K) int8

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
    """Replace, in place, each real layer of the ``fx.GraphModule`` ``gm`` (``is_real(module)``) by ``Int8Gemm``
    or ``Int8Conv`` (a convolution with its following ReLU and max pooling), with the input's range observed on
    the calibration inputs ``calibration`` (a tensor, run by ``gm`` in batches of 8) by the default observer of
    the quantized ``engine`` (default: ``default_engine()``). Returns ``gm``."""
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
    observers = {node: qconfig.activation() for node, *_ in groups}  # of each layer's input
    hooks = [modules[node.target].register_forward_pre_hook(lambda m, args, o=observers[node]: o(args[0]))
             for node, *_ in groups]
    try:
        for start in range(0, len(calibration), 8):
            gm(calibration[start:start + 8].contiguous(memory_format=torch.channels_last))
    finally:
        for h in hooks:
            h.remove()
    for node, last, relu, pool in groups:
        layer, qparams = modules[node.target], observers[node].calculate_qparams()
        step = getattr(layer, "step", None)
        if _gemm_layer(layer, relu, pool):
            int8 = Int8Gemm(layer, qparams, qconfig, step)
        else:
            int8 = Int8Conv(layer, qparams, qconfig, relu, pool, step)
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

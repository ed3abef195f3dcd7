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

Each int8 module type (``Int8Module``) is built from its int8 quantities, which
``state()`` gives back as plain values and tensors with its ``kind``; ``from_state``
builds it again (``KINDS``: one entry per type). ``real_layer_states`` collects the
states of a quantized graph (a model file stores them) and ``restore_real_layers``
puts the modules they rebuild in place of a float graph's real layers, with no
calibration: the same modules, so the same logits.
"""

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao.quantization import get_default_qconfig

__all__ = ["ENGINES", "KINDS", "Int8Conv", "Int8Gemm", "Int8Module", "Int8StateError", "arithmetic",
           "default_engine", "input_codes", "quantize_real_layers", "real_layer_states", "restore_real_layers"]

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
    return f"int8 real layers: int8_conv (the first convolution) and int8_gemm (every other real layer), {path}"


def input_codes(x, inv_scale, zero_point):
    """The input codes ``clamp(round(x * inv_scale) + zero_point, 0, 255)``, float32 (ties to even)."""
    return torch.clamp(torch.round(x * inv_scale) + zero_point, 0, 255)


def _weight_codes(weight, qconfig):
    """``(codes, scales)``: ``weight`` (o, ...) quantized per output by ``qconfig``'s weight observer (symmetric:
    zero points 0), int8 ``round(w / s_w)`` clamped to [-128, 127], and ``s_w`` (o,) float32."""
    observer = qconfig.weight()
    observer(weight)
    w_scale, w_zero = observer.calculate_qparams()
    if bool((w_zero != 0).any()):
        raise ValueError("int8 real layers take symmetric weight quantization (zero points 0)")
    w_scale = w_scale.float()
    shape = (-1,) + (1,) * (weight.dim() - 1)
    return torch.clamp(torch.round(weight / w_scale.view(shape)), -128, 127).to(torch.int8), w_scale


def _checked(name, t, dtype, shape=None):
    """``t``, a tensor of ``dtype`` (and ``shape``), or ``ValueError`` naming it."""
    if not isinstance(t, torch.Tensor) or t.dtype != dtype or (shape is not None and tuple(t.shape) != tuple(shape)):
        got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must be {dtype} {'' if shape is None else tuple(shape)}, got {got}")
    return t


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(int(a) for a in v)


def _pool_geometry(pool):
    """``(kh, kw, sh, sw, ph, pw)`` of the ``nn.MaxPool2d`` ``pool``; ``ValueError`` where ``Int8Conv`` cannot
    run it (ceil mode, dilation, indices)."""
    if pool.ceil_mode or _pair(pool.dilation) != (1, 1) or pool.return_indices:
        raise ValueError("Int8Conv takes max pooling in floor mode, without dilation")
    return (*_pair(pool.kernel_size), *_pair(pool.stride or pool.kernel_size), *_pair(pool.padding))


class Int8Module(nn.Module):
    """An int8 real layer that a model file can carry: ``state()`` gives its constructor's arguments (plain
    values and tensors) with its ``kind``, and ``from_state`` builds it again from them (``KINDS``). What the
    types share (``_quantities``): the weight codes (per output), their scales ``s_w``, the input's scale
    ``s_x`` and zero point, ``out_scale`` = s_x s_w and the float32 bias."""

    kind = None

    def _quantities(self, weight_codes, weight_scales, in_scale, in_zero_point, bias):
        o = _checked("weight_codes", weight_codes, torch.int8).shape[0]
        _checked("weight_scales", weight_scales, torch.float32, (o,))
        _checked("bias", bias, torch.float32, (o,))
        self.weight_scales, self.in_scale, self.zero_point = weight_scales, float(in_scale), int(in_zero_point)
        self.inv_scale = float(torch.tensor(1.0 / self.in_scale, dtype=torch.float32))  # a float32 value
        self.register_buffer("out_scale", (self.in_scale * weight_scales.double()).float())  # s_x s_w per output
        self.register_buffer("bias", bias.clone())
        self._operands = None

    @property
    def out_features(self):
        return self.weight_codes.shape[0]

    def codes(self, x):
        """The input codes (``input_codes``), float32."""
        return input_codes(x, self.inv_scale, self.zero_point)

    def state(self):
        raise NotImplementedError

    @classmethod
    def from_state(cls, state):
        """The module of ``state()``; ``ValueError``, ``KeyError`` or ``TypeError`` when it is not one."""
        if state.get("kind") != cls.kind:
            raise ValueError(f"kind {state.get('kind')!r} is not {cls.kind!r}")
        return cls(**{k: v for k, v in state.items() if k != "kind"})


class Int8Conv(Int8Module):
    """A convolution (with a following ReLU and max pooling) in int8: float32 in, float32 out (module docstring).
    ``forward`` is the definition, in torch operations; ``kernel_operands`` gives the compiled ``int8_conv`` its
    weights.

    Built from the int8 quantities themselves (its ``state()``): weight codes ``(o, c, kh, kw)`` int8, their
    per-output scales (float32), the input's scale and zero point, a float32 bias, the stride and padding,
    ``relu`` and ``pool`` (the max pooling's ``(kh, kw, sh, sw, ph, pw)``, or None); ``from_float`` observes them.
    """

    kind = "conv"

    def __init__(self, weight_codes, weight_scales, in_scale, in_zero_point, bias, stride=(1, 1), padding=(0, 0),
                 relu=False, pool=None):
        super().__init__()
        if weight_codes.dim() != 4:
            raise ValueError(f"weight_codes must be (o, c, kh, kw), got {tuple(weight_codes.shape)}")
        self._quantities(weight_codes, weight_scales, in_scale, in_zero_point, bias)
        self.register_buffer("weight_codes", weight_codes.contiguous())
        self.stride, self.padding, self.relu = _pair(stride), _pair(padding), bool(relu)
        self.pool = None if pool is None else tuple(int(v) for v in pool)
        if self.pool is not None and len(self.pool) != 6:
            raise ValueError(f"pool must be (kh, kw, sh, sw, ph, pw), got {pool}")

    @classmethod
    def from_float(cls, layer, in_qparams, qconfig, relu=False, pool=None, step=None):
        """``layer`` quantized: weights per output channel by ``qconfig``'s observer, the input's range
        ``(scale, zero_point)`` as observed on calibration inputs; ``step`` a convolution's stride when it runs on
        the pixels it reads (no padding)."""
        if layer.groups != 1 or _pair(layer.dilation) != (1, 1) or isinstance(layer.padding, str):
            raise ValueError("Int8Conv takes convolutions without groups, dilation or padding by name")
        codes, w_scale = _weight_codes(layer.weight.detach().float(), qconfig)
        bias = layer.bias.detach().float() if layer.bias is not None else torch.zeros(codes.shape[0])
        stride, padding = (step, (0, 0)) if step is not None else (layer.stride, layer.padding)
        return cls(codes, w_scale, *in_qparams, bias, stride, padding, relu,
                   None if pool is None else _pool_geometry(pool))

    def state(self):
        return {"kind": self.kind, "weight_codes": self.weight_codes, "weight_scales": self.weight_scales,
                "in_scale": self.in_scale, "in_zero_point": self.zero_point, "bias": self.bias,
                "stride": self.stride, "padding": self.padding, "relu": self.relu, "pool": self.pool}

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


class Int8Gemm(Int8Module):
    """A 1x1 convolution (no padding, on every ``stride``-th pixel) or a linear layer in int8: float32 in, float32
    out (module docstring). ``forward`` is the definition, in torch operations; ``kernel_operands`` gives the
    compiled ``int8_gemm`` its weights.

    Built from the int8 quantities themselves (its ``state()``): weight codes ``(o, c, 1, 1)`` or ``(o, k)``
    int8, their per-output scales ``s_w`` (float32), the input's scale ``s_x`` and zero point, a float32 bias
    and the stride; ``from_float`` observes them.
    """

    kind = "gemm"

    def __init__(self, weight_codes, weight_scales, in_scale, in_zero_point, bias, stride=(1, 1)):
        super().__init__()
        if weight_codes.dim() not in (2, 4) or (weight_codes.dim() == 4 and tuple(weight_codes.shape[2:]) != (1, 1)):
            raise ValueError(f"weight_codes must be (o, k) or (o, c, 1, 1), got {tuple(weight_codes.shape)}")
        self._quantities(weight_codes, weight_scales, in_scale, in_zero_point, bias)
        self.linear = weight_codes.dim() == 2
        self.stride = (1, 1) if self.linear else _pair(stride)
        self.register_buffer("weight_codes", weight_codes.reshape(weight_codes.shape[0], -1).contiguous())  # (o, K)

    @classmethod
    def from_float(cls, layer, in_qparams, qconfig, step=None):
        """``layer`` quantized: weights per output channel by ``qconfig``'s observer (symmetric: zero points 0),
        the input's range ``(scale, zero_point)`` as observed on calibration inputs."""
        q, w_scale = _weight_codes(layer.weight.detach().float(), qconfig)
        bias = layer.bias.detach().float() if layer.bias is not None else torch.zeros(q.shape[0])
        stride = (1, 1) if isinstance(layer, nn.Linear) else tuple(step or layer.stride)
        return cls(q, w_scale, *in_qparams, bias, stride)

    def state(self):
        o, k = self.weight_codes.shape
        return {"kind": self.kind, "weight_codes": self.weight_codes.reshape((o, k) if self.linear else (o, k, 1, 1)),
                "weight_scales": self.weight_scales, "in_scale": self.in_scale, "in_zero_point": self.zero_point,
                "bias": self.bias, "stride": self.stride}

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


KINDS = {m.kind: m for m in (Int8Conv, Int8Gemm)}  # each int8 module type by its ``kind`` (``from_state``)


class Int8StateError(ValueError):
    """Int8 states that do not rebuild a network's real layers (``restore_real_layers``), in one line."""


def _int8_type(layer, relu, pool):
    """The int8 module type that runs ``layer`` (with a following ReLU and pooling)."""
    return Int8Gemm if _gemm_layer(layer, relu, pool) else Int8Conv


def _groups(gm, is_real):
    """``[(first node, last node, relu, pool)]``: each real layer of ``gm`` with the ReLU (and max pooling)
    that directly follows a convolution, which its int8 module runs too."""
    modules = dict(gm.named_modules())
    groups = []
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
    return groups


def _install(gm, groups, int8):
    """Puts ``int8[i]`` in place of the ``i``-th group's layer and drops the nodes it absorbs. Returns ``gm``."""
    for (node, last, _, _), module in zip(groups, int8):
        parent, _, leaf = node.target.rpartition(".")
        setattr(gm.get_submodule(parent) if parent else gm, leaf, module)
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


@torch.no_grad()
def quantize_real_layers(gm, calibration, is_real, engine=None):
    """Replace, in place, each real layer of the ``fx.GraphModule`` ``gm`` (``is_real(module)``) by its int8
    module, with ranges observed on the calibration inputs ``calibration`` (a tensor, run by ``gm`` in batches
    of 8, on one thread: the same ranges whatever the thread count). Returns ``gm``."""
    with warnings.catch_warnings():
        # PyTorch's own default observers use an argument it plans to drop (once per process: here rather than in
        # a later run)
        warnings.filterwarnings("ignore", message=".*reduce_range will be deprecated.*")
        return _quantize(gm, calibration, is_real, engine or default_engine())


def _quantize(gm, calibration, is_real, engine):
    qconfig = get_default_qconfig(engine)
    modules = dict(gm.named_modules())
    groups = _groups(gm, is_real)
    if not groups:
        return gm
    observers = {node: qconfig.activation() for node, *_ in groups}  # of each layer's input
    hooks = [modules[node.target].register_forward_pre_hook(lambda m, args, o=observers[node]: o(args[0]))
             for node, *_ in groups]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the observed ranges do not depend on the thread count
    try:
        for start in range(0, len(calibration), 8):
            gm(calibration[start:start + 8].contiguous(memory_format=torch.channels_last))
    finally:
        torch.set_num_threads(threads)
        for h in hooks:
            h.remove()
    int8 = []
    for node, _, relu, pool in groups:
        layer, qparams = modules[node.target], observers[node].calculate_qparams()
        step = getattr(layer, "step", None)
        if _int8_type(layer, relu, pool) is Int8Gemm:
            int8.append(Int8Gemm.from_float(layer, qparams, qconfig, step))
        else:
            int8.append(Int8Conv.from_float(layer, qparams, qconfig, relu, pool, step))
    return _install(gm, groups, int8)


def real_layer_states(gm):
    """``{name: state}``: the ``state()`` of each int8 module of ``gm``, by its name in ``gm``."""
    return {name: m.state() for name, m in gm.named_modules() if isinstance(m, Int8Module)}


@torch.no_grad()
def restore_real_layers(gm, states, is_real):
    """Replace, in place, each real layer of ``gm`` (``is_real(module)``, grouped as ``quantize_real_layers``
    groups them) by the int8 module that ``states[name]`` (``real_layer_states``) rebuilds: no calibration.
    Returns ``gm``; ``Int8StateError`` when a state is missing, left over, of another kind or another shape, or
    not a state at all."""
    modules = dict(gm.named_modules())
    groups = _groups(gm, is_real)
    if not isinstance(states, dict):
        raise Int8StateError(f"int8 states must be a dict by layer name, got {type(states).__name__}")
    extra = sorted(set(states) - {node.target for node, *_ in groups})
    if extra:
        raise Int8StateError(f"int8 state for {extra[0]!r}, which is not a real layer of the network")
    int8 = []
    for node, _, relu, pool in groups:
        layer, name = modules[node.target], node.target
        if name not in states:
            raise Int8StateError(f"no int8 state for the real layer {name!r}")
        kind = _int8_type(layer, relu, pool).kind
        try:
            state = dict(states[name])
            if state.get("kind") != kind:
                raise ValueError(f"kind {state.get('kind')!r}, where the network has {kind!r}")
            codes = state["weight_codes"]
            if not isinstance(codes, torch.Tensor) or codes.shape != layer.weight.shape:
                raise ValueError(f"weight codes {tuple(getattr(codes, 'shape', ()))}, where the layer has "
                                 f"weights {tuple(layer.weight.shape)}")
            module = KINDS[kind].from_state(state)
            ours = (getattr(module, "relu", False), getattr(module, "pool", None))
            theirs = (relu, None if pool is None else _pool_geometry(pool))
            if ours != theirs:
                raise ValueError(f"(relu, pooling) {ours}, where the network has {theirs}")
            int8.append(module)
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise Int8StateError(f"the int8 state of {name!r} does not rebuild it: {type(err).__name__}: "
                                 f"{(str(err).splitlines() or [''])[0][:200]}") from None
    return _install(gm, groups, int8)

"""A shippable packed model file: binary weights as bits, everything else as trained, and the real layers'
int8 form as calibrated at export.

The file is one header line, then a ``torch.save`` of plain containers and
tensors (it loads with ``torch.load(..., weights_only=True)``)::

    xnorpp-packed-model 3 bytes=N sha256=HEX\n   # format version, length of what follows, and the SHA-256
                                                 # of the header up to "sha256=" and all that follows
    {"format": "xnorpp-packed-model", "version": 3,
     "arch": "resnet18", "method": "case4",
     "model_kwargs": {"num_classes", "input_size", "pad_mode", "small_input"},
     "classes": [name, ...] or None,                                      # the class folders it was trained on
     "binary": {layer: {"bits": (o, kh, kw, cw) int64, "channels": c}},   # sign(W), one bit per weight
     "alpha": {layer: (o,) float32},                                      # xnor_alpha's Eq. 2 alpha
     "state": {name: tensor},                                             # real layers, BN, learned factors
     "int8": {"layers": {name: state},            # each int8 real layer's ``state()`` (``int8.KINDS``): its
                                                  # kind, weight codes, scales, zero points, bias, geometry
              "calibration_images": n, "calibration_data": "...",       # what the ranges were observed on
              "engine": "x86"}}                                         # PyTorch's quantized engine, observers

``load_network(path)`` rebuilds the packed network with int8 real layers from
those states, with no data (``real_layers="float"``: the float real layers);
its logits equal those of ``PackedNetwork(model, real_layers="int8",
calibration=...)`` on the calibration images the file was exported with.

The digest covers every byte but its own (the version, every tensor and all the
metadata), so a file changed anywhere after export (a flipped bit, a truncated
copy) is refused on load with one line naming the cause (``ModelFileError``),
as are a damaged header, another format version (a file of an older version is
to be exported again), int8 states that do not fit the network, and files that
are not model files (a training checkpoint, an empty or foreign file, a folder).

Learned scales are stored as their factors (Case 3: alpha, beta; Case 4:
alpha, beta, gamma; Eq. 6-7), never as the fused dense Gamma, and fused when
the network is built (``models.fuse_model``), so the file costs
``bits + factors + real layers + their int8 form`` plus the header and the
container's small overhead (``size_budget``). ``xnor_alpha`` stores its
per-channel alpha (the float weights it came from are gone) and is rebuilt as a Case 1 layer with that alpha: the same
``y . alpha`` multiply.
"""

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import torch

from ..layers import BinaryConv2d
from ..models import build_model
from ..provenance import ZIP_MAGIC, read_bytes, read_torch_file
from ..scales import LearnedScale, xnor_weight_scale
from .int8 import Int8StateError, default_engine, real_layer_states
from .layer import SUPPORTED_METHODS, pack_weight
from .network import PackedNetwork, fused_emulation

__all__ = ["FORMAT", "VERSION", "ModelFileError", "export_bytes", "load_model", "load_network", "size_budget"]

FORMAT, VERSION = "xnorpp-packed-model", 3
_HEADER = re.compile(rb"xnorpp-packed-model (\d+) bytes=(\d+) sha256=([0-9a-f]{64})\n")
_HEADER_MAX = 160  # bytes: the header line is shorter


class ModelFileError(ValueError):
    """A model file that cannot be read, or a model that cannot be exported."""


def _binary_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, BinaryConv2d) and m.method != "real"}


def unpack_weight(bits, channels):
    """``sign(W)`` as +-1 float32 ``(o, c, kh, kw)`` from its bits ``(o, kh, kw, cw)`` (``pack_weight``'s layout)."""
    words = bits.contiguous().numpy().view("<u8")
    b = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :channels]  # (o, kh, kw, c)
    return torch.from_numpy(b.astype(np.float32) * 2 - 1).permute(0, 3, 1, 2).contiguous()


def _check_calibration(calibration, model_kwargs):
    size = model_kwargs["input_size"]
    size = (size, size) if isinstance(size, int) else tuple(size)
    if (not isinstance(calibration, torch.Tensor) or calibration.dtype != torch.float32 or calibration.dim() != 4
            or calibration.shape[0] < 1 or tuple(calibration.shape[1:]) != (3, *size)):
        got = (f"{calibration.dtype} {tuple(calibration.shape)}" if isinstance(calibration, torch.Tensor)
               else type(calibration).__name__)
        raise ModelFileError(f"calibration images must be float32 (N, 3, {size[0]}, {size[1]}) with N >= 1, "
                             f"got {got}")


def export_bytes(model, arch, model_kwargs, classes=None, *, calibration, calibration_data=None):
    """The model file of ``model`` (an ``arch`` network built with ``model_kwargs``, trained on the class
    folders ``classes`` when known), as bytes. Its int8 real layers are calibrated on ``calibration``: float32
    images ``(N, 3, H, W)`` transformed as the network's evaluation input, training images (described in the
    file by ``calibration_data``, a short text)."""
    method = getattr(model, "method", None)
    if method not in SUPPORTED_METHODS:
        raise ModelFileError(f"method {method!r} has no packed form; supported: {SUPPORTED_METHODS}")
    _check_calibration(calibration, model_kwargs)
    layers = _binary_layers(model)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()
             if not (k.endswith(".weight") and k[:-len(".weight")] in layers)}
    binary, alpha = {}, {}
    with torch.no_grad():
        for name, m in layers.items():
            binary[name] = {"bits": pack_weight(m.weight, "numpy"), "channels": m.in_channels}
            if m.method == "xnor_alpha":
                alpha[name] = xnor_weight_scale(m.weight).detach().float().clone()  # (o,)
    if classes is not None and len(classes) != model_kwargs["num_classes"]:
        raise ModelFileError(f"{len(classes)} class names for a model of {model_kwargs['num_classes']} classes")
    engine = default_engine()
    int8 = {"layers": real_layer_states(fused_emulation(model, "int8", calibration).graph),
            "calibration_images": int(calibration.shape[0]),
            "calibration_data": None if calibration_data is None else str(calibration_data), "engine": engine}
    payload = {"format": FORMAT, "version": VERSION, "arch": arch, "method": method,
               "model_kwargs": dict(model_kwargs), "classes": None if classes is None else [str(c) for c in classes],
               "binary": binary, "alpha": alpha, "state": state, "int8": int8}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    head = f"{FORMAT} {VERSION} bytes={len(body)} sha256=".encode()
    return head + hashlib.sha256(head + body).hexdigest().encode() + b"\n" + body


def _other_version(path, version):
    return (f"model file {path} has format version {version}; this toolkit reads version {VERSION} "
            f"(export it again with python -m studies.export)")


def _not_a_model_file(path, data):
    """Why ``data`` (a file without a model-file header) is not a model file, in one line."""
    if not data:
        return f"model file {path} is empty"
    if b"\n" + ZIP_MAGIC in data[:_HEADER_MAX] or data.startswith(FORMAT[:8].encode()):
        return f"model file {path} is corrupt: its header line is damaged"
    if data.startswith(ZIP_MAGIC):
        try:
            content = read_torch_file(path, "model file")
        except ValueError:
            content = None
        if isinstance(content, dict) and content.get("format") == FORMAT:  # format version 1: no header line
            return _other_version(path, content.get("version"))
        if isinstance(content, dict) and {"config", "model"} <= set(content):
            return f"{path} is a training checkpoint, not a model file: use --checkpoint (or export it first)"
        return f"{path} is a PyTorch file but not an xnorpp model file (python -m studies.export writes one)"
    return f"{path} is not an xnorpp model file (python -m studies.export writes one)"


def _read(path):
    """The payload of the model file ``path``, its header, length and digest checked; ``ModelFileError``."""
    path = Path(path)
    try:
        data = read_bytes(path, "model file")
    except ValueError as err:
        raise ModelFileError(str(err)) from None
    header = _HEADER.match(data[:_HEADER_MAX])
    if header is None:
        raise ModelFileError(_not_a_model_file(path, data))
    version, length, digest = int(header[1]), int(header[2]), header[3].decode()
    body = data[header.end():]
    if len(body) != length:
        raise ModelFileError(f"model file {path} is corrupt: {len(body)} bytes after its header, which says "
                             f"{length} ({'truncated' if len(body) < length else 'bytes added'})")
    if hashlib.sha256(data[:header.start(3)] + body).hexdigest() != digest:
        other = "" if version == VERSION else f" (or written in format version {version}; this toolkit reads {VERSION})"
        raise ModelFileError(f"model file {path} is corrupt: digest mismatch (it changed after export){other}")
    if version != VERSION:
        raise ModelFileError(_other_version(path, version))
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a file with a valid digest that torch cannot read: not ours
        raise ModelFileError(f"model file {path} is corrupt: {type(err).__name__}: "
                             f"{(str(err).splitlines() or [''])[0][:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise ModelFileError(f"model file {path} is corrupt: its content does not match its header")
    return payload


def load_model(path):
    """``(model, payload)``: the float network decoded from a model file (binary weights +-1), in eval mode."""
    payload = _read(path)
    method = payload["method"]
    build_method = "case1" if method == "xnor_alpha" else method
    try:
        model = build_model(payload["arch"], build_method, **payload["model_kwargs"])
        state = dict(payload["state"])
        for name, entry in payload["binary"].items():
            state[f"{name}.weight"] = unpack_weight(entry["bits"], entry["channels"])
        for name, a in payload["alpha"].items():
            state[f"{name}.scale.alpha"] = a.reshape(-1, 1, 1)
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, RuntimeError, ValueError) as err:
        raise ModelFileError(f"model file {path} does not match its own architecture: "
                             f"{(str(err).splitlines() or [''])[0]}") from None
    if not isinstance(payload.get("int8"), dict) or not isinstance(payload["int8"].get("layers"), dict):
        raise ModelFileError(f"model file {path} does not match its own architecture: it holds no int8 real layers")
    return model.eval(), payload


def load_network(path, backend=None, real_layers="int8"):
    """The ``PackedNetwork`` of a model file (Gammas fused at load): with its int8 real layers as exported
    (``real_layers="int8"``, rebuilt from the file: no data needed), or with float ones (``"float"``)."""
    model, payload = load_model(path)
    try:
        return PackedNetwork(model, backend, real_layers=real_layers,
                             int8_state=payload["int8"]["layers"] if real_layers == "int8" else None)
    except Int8StateError as err:
        raise ModelFileError(f"model file {path} does not match its own architecture: {err}") from None


def size_budget(model, int8_layers):
    """Bytes of the tensors a model file of ``model`` (with the int8 states ``int8_layers``) stores, by kind:
    ``packed_weights`` (one bit per binary weight, each row padded to 64 bits), ``scales`` (learned factors,
    ``xnor_alpha``'s alpha), ``real_layers`` (real layers and BN in float32), ``int8_real_layers`` (the int8
    states' tensors), and ``total``; the file adds its header and the container's small overhead."""
    layers = _binary_layers(model)
    bits = sum(8 * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * -(-m.in_channels // 64)
               for m in layers.values())
    factors = {f"{n}.{k}" for n, m in model.named_modules() if isinstance(m, LearnedScale)
               for k, _ in m.named_parameters()}
    state = {k: v.numel() * v.element_size() for k, v in model.state_dict().items()
             if not (k.endswith(".weight") and k[:-len(".weight")] in layers)}
    scales = sum(b for k, b in state.items() if k in factors) + sum(
        4 * m.out_channels for m in layers.values() if m.method == "xnor_alpha")
    real = sum(b for k, b in state.items() if k not in factors)
    int8 = sum(v.numel() * v.element_size() for s in int8_layers.values() for v in s.values()
               if isinstance(v, torch.Tensor))
    return {"packed_weights": bits, "scales": scales, "real_layers": real, "int8_real_layers": int8,
            "total": bits + scales + real + int8}

"""A shippable packed model file: binary weights as bits, everything else as trained.

The file is one header line, then a ``torch.save`` of plain containers and
tensors (it loads with ``torch.load(..., weights_only=True)``)::

    xnorpp-packed-model 2 bytes=N sha256=HEX\n   # format version, length of what follows, and the SHA-256
                                                 # of the header up to "sha256=" and all that follows
    {"format": "xnorpp-packed-model", "version": 2,
     "arch": "resnet18", "method": "case4",
     "model_kwargs": {"num_classes", "input_size", "pad_mode", "small_input"},
     "classes": [name, ...] or None,                                      # the class folders it was trained on
     "binary": {layer: {"bits": (o, kh, kw, cw) int64, "channels": c}},   # sign(W), one bit per weight
     "alpha": {layer: (o,) float32},                                      # xnor_alpha's Eq. 2 alpha
     "state": {name: tensor}}                                              # real layers, BN, learned factors

The digest covers every byte but its own (the version, every tensor and all the
metadata), so a file changed anywhere after export (a flipped bit, a truncated
copy) is refused on load with one line naming the cause (``ModelFileError``),
as are a damaged header, another format version, and files that are not model
files (a training checkpoint, an empty or foreign file, a folder).

Learned scales are stored as their factors (Case 3: alpha, beta; Case 4:
alpha, beta, gamma; Eq. 6-7), never as the fused dense Gamma, and fused when
the network is built (``models.fuse_model``), so the file costs
``bits + real layers + factors`` plus the header and the container's small
overhead. ``xnor_alpha`` stores its per-channel alpha (the float weights it
came from are gone) and is rebuilt as a Case 1 layer with that alpha: the same
``y . alpha`` multiply.
"""

import hashlib
import io
import re
from pathlib import Path

import numpy as np
import torch

from ..layers import BinaryConv2d
from ..provenance import ZIP_MAGIC, read_bytes, read_torch_file
from ..models import build_model
from ..scales import xnor_weight_scale
from .layer import SUPPORTED_METHODS, pack_weight
from .network import PackedNetwork

__all__ = ["FORMAT", "VERSION", "ModelFileError", "export_bytes", "load_model", "load_network", "size_budget"]

FORMAT, VERSION = "xnorpp-packed-model", 2
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


def export_bytes(model, arch, model_kwargs, classes=None):
    """The model file of ``model`` (an ``arch`` network built with ``model_kwargs``, trained on the class
    folders ``classes`` when known), as bytes."""
    method = getattr(model, "method", None)
    if method not in SUPPORTED_METHODS:
        raise ModelFileError(f"method {method!r} has no packed form; supported: {SUPPORTED_METHODS}")
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
    payload = {"format": FORMAT, "version": VERSION, "arch": arch, "method": method,
               "model_kwargs": dict(model_kwargs), "classes": None if classes is None else [str(c) for c in classes],
               "binary": binary, "alpha": alpha, "state": state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    head = f"{FORMAT} {VERSION} bytes={len(body)} sha256=".encode()
    return head + hashlib.sha256(head + body).hexdigest().encode() + b"\n" + body


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
        raise ModelFileError(f"model file {path} has format version {version}; this toolkit reads version "
                             f"{VERSION} (export it again with python -m studies.export)")
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
    return model.eval(), payload


def load_network(path, backend=None):
    """The ``PackedNetwork`` of a model file (Gammas fused at load)."""
    model, payload = load_model(path)
    return PackedNetwork(model, backend)


def size_budget(model):
    """Bytes of the packed weights plus everything else the model stores (real layers, BN, learned factors)."""
    layers = _binary_layers(model)
    bits = sum(8 * m.out_channels * m.kernel_size[0] * m.kernel_size[1] * -(-m.in_channels // 64)
               for m in layers.values())
    rest = sum(v.numel() * v.element_size() for k, v in model.state_dict().items()
               if not (k.endswith(".weight") and k[:-len(".weight")] in layers))
    alpha = sum(4 * m.out_channels for m in layers.values() if m.method == "xnor_alpha")
    return {"packed_weights": bits, "real_layers_and_factors": rest + alpha, "total": bits + rest + alpha}

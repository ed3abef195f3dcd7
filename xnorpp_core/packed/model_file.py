"""A shippable packed model file: binary weights as bits, everything else as trained.

The file is a ``torch.save`` of plain containers and tensors (it loads with
``torch.load(..., weights_only=True)``)::

    {"format": "xnorpp-packed-model", "version": 1,
     "arch": "resnet18", "method": "case4",
     "model_kwargs": {"num_classes", "input_size", "pad_mode", "small_input"},
     "binary": {layer: {"bits": (o, kh, kw, cw) int64, "channels": c}},   # sign(W), one bit per weight
     "alpha": {layer: (o,) float32},                                      # xnor_alpha's Eq. 2 alpha
     "state": {name: tensor}}                                              # real layers, BN, learned factors

Learned scales are stored as their factors (Case 3: alpha, beta; Case 4:
alpha, beta, gamma; Eq. 6-7), never as the fused dense Gamma, and fused when
the network is built (``models.fuse_model``), so the file costs
``bits + real layers + factors`` plus the container's small overhead.
``xnor_alpha`` stores its per-channel alpha (the float weights it came from
are gone) and is rebuilt as a Case 1 layer with that alpha: the same
``y . alpha`` multiply.
"""

import io
from pathlib import Path

import numpy as np
import torch

from ..layers import BinaryConv2d
from ..models import build_model
from ..scales import xnor_weight_scale
from .layer import SUPPORTED_METHODS, pack_weight
from .network import PackedNetwork

__all__ = ["FORMAT", "VERSION", "ModelFileError", "export_bytes", "load_model", "load_network", "size_budget"]

FORMAT, VERSION = "xnorpp-packed-model", 1


class ModelFileError(ValueError):
    """A model file that cannot be read, or a model that cannot be exported."""


def _binary_layers(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, BinaryConv2d) and m.method != "real"}


def unpack_weight(bits, channels):
    """``sign(W)`` as +-1 float32 ``(o, c, kh, kw)`` from its bits ``(o, kh, kw, cw)`` (``pack_weight``'s layout)."""
    words = bits.contiguous().numpy().view("<u8")
    b = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[..., :channels]  # (o, kh, kw, c)
    return torch.from_numpy(b.astype(np.float32) * 2 - 1).permute(0, 3, 1, 2).contiguous()


def export_bytes(model, arch, model_kwargs):
    """The model file of ``model`` (an ``arch`` network built with ``model_kwargs``), as bytes."""
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
    payload = {"format": FORMAT, "version": VERSION, "arch": arch, "method": method,
               "model_kwargs": dict(model_kwargs), "binary": binary, "alpha": alpha, "state": state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def _read(path):
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read is the same one-line error
        raise ModelFileError(f"cannot read model file {path}: {type(err).__name__}: "
                             f"{(str(err).splitlines() or [''])[0]}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not an xnorpp packed model file")
    if payload.get("version") != VERSION:
        raise ModelFileError(f"{path} has version {payload.get('version')!r}; this toolkit reads {VERSION}")
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

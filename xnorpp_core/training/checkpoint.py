"""A training checkpoint's digest, and reading a checkpoint of ``training.train`` back as the model it holds.

Every checkpoint carries ``"digest"``: the SHA-256 of everything else in it (every tensor's dtype, shape and
bytes, every key, number and string, in a fixed order; ``digest``). ``training.train`` writes it (``seal``);
resuming a run and ``load_checkpoint`` (export to a packed model file, evaluate, every study that reads a
trained model) check it (``verify``), so a byte changed after training wrote the file (a flipped bit on
a disk, a truncated copy that torch still reads) is refused with one line, and a model file's own digest can
only seal weights that training wrote.

A checkpoint without a digest (written before checkpoints carried one) is refused too, with a line that says
to train it again: it cannot be told from a damaged one, and a model file exported from it would seal
weights nothing has checked. (The digits runs this toolkit trains take minutes.)
"""

import hashlib
from pathlib import Path

import torch

from ..models import build_model
from ..provenance import read_bytes, read_torch_file

__all__ = ["CheckpointError", "digest", "seal", "verify", "load_checkpoint", "training_data"]

_MODEL_FILE_MAGIC = b"xnorpp-packed-model"  # the first bytes of a packed model file (packed.model_file)


class CheckpointError(ValueError):
    """A file that is not a usable training checkpoint; the message is one line naming the file and the cause."""


def _feed(h, obj):
    """Add ``obj`` (nested dicts, lists, tuples, tensors, numbers, strings, None) to the hash ``h``, each value
    with its type, so that no two different contents give the same bytes."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"dict {len(obj)}\n".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, repr(k))):
            _feed(h, key)
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__} {len(obj)}\n".encode())
        for item in obj:
            _feed(h, item)
    else:  # None, bool, int, float (repr round-trips), str
        text = repr(obj)
        h.update(f"{type(obj).__name__} {len(text)}\n{text}".encode())


def digest(ckpt):
    """The SHA-256 (hex) of the checkpoint dict ``ckpt`` without its ``"digest"`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ckpt.items() if k != "digest"})
    return h.hexdigest()


def seal(ckpt):
    """``ckpt`` with its ``"digest"``, as ``training.train`` writes it."""
    return {**ckpt, "digest": digest(ckpt)}


def verify(path, ckpt):
    """``CheckpointError`` unless the checkpoint dict ``ckpt`` read from ``path`` carries its own digest."""
    if "digest" not in ckpt:
        raise CheckpointError(f"checkpoint {path} has no digest (an older version of this toolkit wrote it), so its "
                              "weights cannot be checked: train it again with python -m studies.train")
    if ckpt["digest"] != digest(ckpt):
        raise CheckpointError(f"checkpoint {path} is corrupt: digest mismatch (it changed after training wrote it)")


def load_checkpoint(path):
    """``(model, arch, model_kwargs, classes)`` from a training checkpoint, in eval mode (``classes``: its class
    folder names), its digest checked. Raises ``CheckpointError``."""
    path = Path(path)
    if path.is_file() and read_bytes(path, "checkpoint", len(_MODEL_FILE_MAGIC)) == _MODEL_FILE_MAGIC:
        raise CheckpointError(f"{path} is a packed model file, not a training checkpoint (python -m studies.evaluate "
                              "--model runs it)")
    try:
        ckpt = read_torch_file(path, "checkpoint")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(ckpt, dict) or not {"config", "model"} <= set(ckpt):
        raise CheckpointError(f"{path} is a PyTorch file but not a training checkpoint of python -m studies.train")
    verify(path, ckpt)
    try:
        config, state = ckpt["config"], ckpt["model"]
        linear = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
        kwargs = {"num_classes": int(state[linear[-1]].shape[0]), "input_size": int(config["input_size"]),
                  "pad_mode": config["pad_mode"], "small_input": bool(config["small_input"])}
        model = build_model(config["arch"], config["method"], **kwargs)
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any failure to read is the same one-line error
        raise CheckpointError(f"checkpoint {path} does not hold a model of its own configuration: "
                              f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}") from None
    return model.eval(), config["arch"], kwargs, ckpt.get("classes")


def training_data(path):
    """``(root, resize)`` of the data that the checkpoint ``path`` (one ``load_checkpoint`` reads) was trained on:
    its ImageFolder root (None for the embedded digits) and the ``Resize`` size of its images
    (``TrainConfig.resize_to``)."""
    config = read_torch_file(Path(path), "checkpoint")["config"]
    resize = config.get("resize") or 256
    return config.get("data"), resize if config.get("resize_mode") in (None, "shorter_side") else (resize, resize)

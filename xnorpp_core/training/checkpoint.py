"""Reading a training checkpoint of ``training.train`` back as the model it holds."""

from pathlib import Path

from ..models import build_model
from ..provenance import read_bytes, read_torch_file

__all__ = ["CheckpointError", "load_checkpoint", "training_data"]

_MODEL_FILE_MAGIC = b"xnorpp-packed-model"  # the first bytes of a packed model file (packed.model_file)


class CheckpointError(ValueError):
    """A file that is not a usable training checkpoint; the message is one line naming the file and the cause."""


def load_checkpoint(path):
    """``(model, arch, model_kwargs, classes)`` from a training checkpoint, in eval mode (``classes``: its class
    folder names, None in older checkpoints). Raises ``CheckpointError``."""
    path = Path(path)
    if path.is_file() and read_bytes(path, "checkpoint", len(_MODEL_FILE_MAGIC)) == _MODEL_FILE_MAGIC:
        raise CheckpointError(f"{path} is a packed model file, not a training checkpoint: use --model")
    try:
        ckpt = read_torch_file(path, "checkpoint")
    except ValueError as err:
        raise CheckpointError(str(err)) from None
    if not isinstance(ckpt, dict) or not {"config", "model"} <= set(ckpt):
        raise CheckpointError(f"{path} is a PyTorch file but not a training checkpoint of python -m studies.train")
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

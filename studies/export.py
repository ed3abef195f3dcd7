"""Write a trained checkpoint as a shippable packed model file (binary weights as bits).

    python -m studies.export --checkpoint RUN/checkpoint.pt --out model.xnorpp

Reads a checkpoint of ``python -m studies.train`` (loaded with
``weights_only=True``), and writes ``--out``: binary weights one bit each,
Cases 3-4 as their factors (fused when the file is loaded), real layers and
BN in float32 (format: ``xnorpp_core.packed.model_file``). Prints the file's
size beside its budget, the packed weights plus the real layers and factors.
Run it with ``python -m studies.evaluate --model model.xnorpp``.

Output: the file ``--out`` (nothing else).
"""

import sys
import tempfile
from pathlib import Path

import torch

from studies._cli import ArgumentParser, fail
from xnorpp_core.models import build_model
from xnorpp_core.packed import SUPPORTED_METHODS
from xnorpp_core.packed.model_file import ModelFileError, export_bytes, size_budget
from xnorpp_core.provenance import atomic_write

PROG = "python -m studies.export"


def check_writable(prog, path):
    """A one-line error (exit 2) unless a file can be created at ``path`` (its folder made if needed)."""
    path = Path(path)
    if path.is_dir():
        fail(prog, f"{path} is a folder, not a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as err:
        fail(prog, f"cannot write {path}: {err.strerror or err}")


def load_checkpoint(prog, path):
    """``(model, arch, model_kwargs)`` from a training checkpoint, in eval mode; one-line errors."""
    path = Path(path)
    if not path.is_file():
        fail(prog, f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        config, state = ckpt["config"], ckpt["model"]
        linear = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
        kwargs = {"num_classes": int(state[linear[-1]].shape[0]), "input_size": int(config["input_size"]),
                  "pad_mode": config["pad_mode"], "small_input": bool(config["small_input"])}
        model = build_model(config["arch"], config["method"], **kwargs)
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any failure to read is the same one-line error
        fail(prog, f"cannot read checkpoint {path}: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}")
    return model.eval(), config["arch"], kwargs


def main(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                            epilog="Output: the file --out.")
    parser.add_argument("--checkpoint", type=Path, required=True, help="checkpoint.pt of a training run")
    parser.add_argument("--out", type=Path, required=True, help="the model file to write (e.g. model.xnorpp)")
    args = parser.parse_args(argv)
    check_writable(PROG, args.out)
    model, arch, kwargs = load_checkpoint(PROG, args.checkpoint)
    if model.method not in SUPPORTED_METHODS:
        fail(PROG, f"method {model.method!r} has no packed form; supported: {' '.join(SUPPORTED_METHODS)}")
    try:
        data = export_bytes(model, arch, kwargs)
    except ModelFileError as err:
        fail(PROG, str(err))
    atomic_write(args.out, data)
    budget = size_budget(model)
    print(f"wrote {args.out}: {len(data)} bytes ({arch}, {model.method}); packed weights "
          f"{budget['packed_weights']} + real layers and factors {budget['real_layers_and_factors']} = "
          f"{budget['total']} bytes, file / that = {len(data) / budget['total']:.3f}")
    return {"file_bytes": len(data), **budget}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

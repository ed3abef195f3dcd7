"""Write a trained checkpoint as a shippable packed model file (binary weights as bits).

    python -m studies.export --checkpoint RUN/checkpoint.pt [--out DIR]

Reads a checkpoint of ``python -m studies.train`` (loaded with
``weights_only=True``), and writes the model file: binary weights one bit each,
Cases 3-4 as their factors (fused when the file is loaded), real layers and
BN in float32 (format: ``xnorpp_core.packed.model_file``). Prints the file's
size beside its budget, the packed weights plus the real layers and factors.
Run it with ``python -m studies.evaluate --model DIR/model.xnorpp``.

Writes to ``--out`` (default: the checkpoint's folder): ``model.xnorpp`` (nothing else).
"""

import sys
from pathlib import Path

from studies._cli import add_out_flag, check_out, fail, make_parser
from xnorpp_core.models import build_model
from xnorpp_core.packed import SUPPORTED_METHODS
from xnorpp_core.packed.model_file import FORMAT, ModelFileError, export_bytes, size_budget
from xnorpp_core.provenance import atomic_write, read_bytes, read_torch_file

PROG = "python -m studies.export"
FILE_NAME = "model.xnorpp"


def load_checkpoint(prog, path):
    """``(model, arch, model_kwargs, classes)`` from a training checkpoint, in eval mode (``classes``: its class
    folder names, None in older checkpoints); one-line errors naming the file and the cause."""
    path = Path(path)
    if path.is_file() and read_bytes(path, "checkpoint", len(FORMAT)) == FORMAT.encode():
        fail(prog, f"{path} is a packed model file, not a training checkpoint: use --model")
    try:
        ckpt = read_torch_file(path, "checkpoint")
    except ValueError as err:
        fail(prog, str(err))
    if not isinstance(ckpt, dict) or not {"config", "model"} <= set(ckpt):
        fail(prog, f"{path} is a PyTorch file but not a training checkpoint of python -m studies.train")
    try:
        config, state = ckpt["config"], ckpt["model"]
        linear = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2]
        kwargs = {"num_classes": int(state[linear[-1]].shape[0]), "input_size": int(config["input_size"]),
                  "pad_mode": config["pad_mode"], "small_input": bool(config["small_input"])}
        model = build_model(config["arch"], config["method"], **kwargs)
        model.load_state_dict(state)
    except Exception as err:  # noqa: BLE001 - any failure to read is the same one-line error
        fail(prog, f"checkpoint {path} does not hold a model of its own configuration: {type(err).__name__}: "
                   f"{(str(err).splitlines() or [''])[0][:200]}")
    return model.eval(), config["arch"], kwargs, ckpt.get("classes")


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="checkpoint.pt of a training run (python -m studies.train)")
    add_out_flag(parser, None, f"folder for {FILE_NAME} (default: the checkpoint's folder)")
    args = parser.parse_args(argv)
    path = check_out(PROG, args.checkpoint.parent if args.out is None else args.out) / FILE_NAME
    model, arch, kwargs, classes = load_checkpoint(PROG, args.checkpoint)
    if model.method not in SUPPORTED_METHODS:
        fail(PROG, f"method {model.method!r} has no packed form; supported: {' '.join(SUPPORTED_METHODS)}")
    try:
        data = export_bytes(model, arch, kwargs, classes)
    except ModelFileError as err:
        fail(PROG, str(err))
    atomic_write(path, data)
    budget = size_budget(model)
    print(f"wrote {path}: {len(data)} bytes ({arch}, {model.method}); packed weights "
          f"{budget['packed_weights']} + real layers and factors {budget['real_layers_and_factors']} = "
          f"{budget['total']} bytes, file / that = {len(data) / budget['total']:.3f}")
    return {"file_bytes": len(data), **budget}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

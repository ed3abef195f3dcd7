"""Write a trained checkpoint as a shippable packed model file (binary weights as bits).

    python -m studies.export --checkpoint RUN/checkpoint.pt [--out DIR]

Reads a checkpoint of ``python -m studies.train`` (loaded with
``weights_only=True``), and writes the model file: binary weights one bit each,
Cases 3-4 as their factors (fused when the file is loaded), real layers and
BN in float32 (format: ``xnorpp_core.packed.model_file``). Prints the file's
size beside its budget, the packed weights plus the real layers and factors.
Run it with ``python -m studies.evaluate --model DIR/model.xnorpp``.

Writes to ``--out`` (default: the checkpoint's folder): ``model.xnorpp`` (nothing else). An existing
``model.xnorpp`` there is refused unless ``--force`` (as ``python -m studies.train`` refuses an existing run).
"""

import sys
from pathlib import Path

from studies._cli import add_out_flag, check_out, fail, load_checkpoint, make_parser
from xnorpp_core.models import build_model
from xnorpp_core.packed import SUPPORTED_METHODS
from xnorpp_core.packed.model_file import ModelFileError, export_bytes, size_budget
from xnorpp_core.provenance import atomic_write

PROG = "python -m studies.export"
FILE_NAME = "model.xnorpp"


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="checkpoint.pt of a training run (python -m studies.train)")
    add_out_flag(parser, None, f"folder for {FILE_NAME} (default: the checkpoint's folder)")
    parser.add_argument("--force", action="store_true", help=f"replace an existing {FILE_NAME} in that folder")
    args = parser.parse_args(argv)
    path = check_out(PROG, args.checkpoint.parent if args.out is None else args.out) / FILE_NAME
    model, arch, kwargs, classes = load_checkpoint(PROG, args.checkpoint)
    if path.exists() and not args.force:
        fail(PROG, f"{path} exists: pass --force to replace it, or --out DIR for another folder")
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

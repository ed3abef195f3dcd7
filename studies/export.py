"""Write a trained checkpoint as a shippable packed model file (binary weights as bits, int8 real layers calibrated).

    python -m studies.export --checkpoint RUN/checkpoint.pt [--out DIR]                   # a run on the digits
    python -m studies.export --checkpoint RUN/checkpoint.pt --data /data/imagenet         # a run on an ImageFolder

Reads a checkpoint of ``python -m studies.train`` (loaded with
``weights_only=True``), and writes the model file: binary weights one bit each,
Cases 3-4 as their factors (fused when the file is loaded), real layers and
BN in float32, and the real layers' int8 form, calibrated on
``CALIBRATION_IMAGES`` (32) training images of the run's own data, evenly
spaced over its training split and transformed as evaluation images are
(``xnorpp_core.training.data.calibration_images``): the embedded digits' for
a run without ``--data``, else those of ``--data DATA`` (an ImageFolder's
DATA/train), the data the run was trained on (format:
``xnorpp_core.packed.model_file``). Prints the
file's size beside the bytes of its tensors, the packed weights, scales, real
layers and int8 real layers. Run it with
``python -m studies.evaluate --model DIR/model.xnorpp``.

Writes to ``--out`` (default: the checkpoint's folder): ``model.xnorpp`` (nothing else). An existing
``model.xnorpp`` there is refused unless ``--force`` (as ``python -m studies.train`` refuses an existing run).
"""

import sys
from pathlib import Path

from studies._cli import add_out_flag, check_out, fail, load_checkpoint, make_parser
from xnorpp_core.packed import SUPPORTED_METHODS
from xnorpp_core.packed.model_file import ModelFileError, export_bytes, load_model, size_budget
from xnorpp_core.provenance import atomic_write
from xnorpp_core.training import DataError
from xnorpp_core.training.checkpoint import training_data
from xnorpp_core.training.data import calibration_images, check_classes

PROG = "python -m studies.export"
FILE_NAME = "model.xnorpp"


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--checkpoint", type=Path, required=True, metavar="FILE",
                        help="checkpoint.pt of a training run (python -m studies.train)")
    parser.add_argument("--data", default=None, metavar="DATA",
                        help="the data the run was trained on (its --data: an ImageFolder root, fashion-mnist[:DIR] "
                             "or cifar10:DIR): its training images calibrate the int8 real layers; required for "
                             "such a run, refused for a run on the embedded digits, whose own training images are "
                             "used")
    add_out_flag(parser, None, f"folder for {FILE_NAME} (default: the checkpoint's folder)")
    parser.add_argument("--force", action="store_true", help=f"replace an existing {FILE_NAME} in that folder")
    args = parser.parse_args(argv)
    path = check_out(PROG, args.checkpoint.parent if args.out is None else args.out) / FILE_NAME
    model, arch, kwargs, classes = load_checkpoint(PROG, args.checkpoint)
    if path.exists() and not args.force:
        fail(PROG, f"{path} exists: pass --force to replace it, or --out DIR for another folder")
    if model.method not in SUPPORTED_METHODS:
        fail(PROG, f"method {model.method!r} has no packed form; supported: {' '.join(SUPPORTED_METHODS)}")
    trained_on, resize = training_data(args.checkpoint)
    if trained_on is not None and args.data is None:
        fail(PROG, f"checkpoint {args.checkpoint} was trained on {trained_on}: give it as --data (its training "
                   "images calibrate the int8 real layers)")
    if trained_on is None and args.data is not None:
        fail(PROG, f"checkpoint {args.checkpoint} was trained on the embedded digits, whose training images "
                   "calibrate the int8 real layers: --data does not apply")
    try:
        images, data_classes = calibration_images(args.data, kwargs["input_size"], resize)
        check_classes("the embedded digits" if args.data is None else f"--data {args.data}", data_classes,
                      f"checkpoint {args.checkpoint}", kwargs["num_classes"] if classes is None else classes)
    except DataError as err:
        fail(PROG, str(err))
    source = "the embedded digits' training split" if args.data is None else f"the training split of {args.data}"
    try:
        data = export_bytes(model, arch, kwargs, classes, calibration=images, calibration_data=source)
    except ModelFileError as err:
        fail(PROG, str(err))
    atomic_write(path, data)
    _, payload = load_model(path)  # the file as written reads back
    budget = size_budget(model, payload["int8"]["layers"])
    print(f"wrote {path}: {len(data)} bytes ({arch}, {model.method}; int8 real layers calibrated on {len(images)} "
          f"images of {source}); packed weights {budget['packed_weights']} + scales {budget['scales']} + real "
          f"layers {budget['real_layers']} + int8 real layers {budget['int8_real_layers']} = {budget['total']} "
          f"bytes, file / that = {len(data) / budget['total']:.3f}")
    return {"file_bytes": len(data), **budget}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)

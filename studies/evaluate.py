"""Evaluate a packed model file on the digits or an ImageFolder: top-1 and top-5.

    python -m studies.evaluate --model RUN/model.xnorpp                       # the embedded digits' validation split
    python -m studies.evaluate --model RUN/model.xnorpp --data /data/imagenet  # DIR/val of an ImageFolder tree
    python -m studies.evaluate --model RUN/model.xnorpp --checkpoint RUN/checkpoint.pt --out results/inference/x

Runs the file's ``PackedNetwork`` (``xnorpp_core.packed``) with the real-layer
option ``--real-layers`` (default ``int8``: its int8 real layers as calibrated
at export; ``float``: float32 ones) on the validation images and prints top-1 /
top-5. With ``--checkpoint`` (the run the file was exported from), also
evaluates the float model and its fused float emulation (with the same
real-layer option: for ``int8`` the file's int8 layers) on the same images, and
counts the images whose packed logits equal the fused emulation's exactly and
whose predictions agree with each. Data whose classes
differ from the model's (their number, or their folder names when the file
records them) are refused, as are damaged model files.

Output (only with ``--out DIR``): ``DIR/evaluation.json`` (the real-layer option
and the file's calibration, accuracies, agreement counts, the file's size beside
the bytes of its tensors by kind, the command, versions and hardware).
"""

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from studies._cli import add_out_flag, add_threads_flag, bounded, check_out, data_errors, fail, load_checkpoint, \
    make_parser
from xnorpp_core.limits import BATCH_SIZE, SIDE, check_memory
from xnorpp_core.packed import BACKENDS, backend_info
from xnorpp_core.packed.layer import pack_weight
from xnorpp_core.packed.model_file import ModelFileError, load_model, load_network, size_budget
from xnorpp_core.packed.network import REAL_LAYERS, fused_emulation
from xnorpp_core.provenance import environment, write_json
from xnorpp_core.training.data import DATA_HELP, check_classes, val_split
from xnorpp_core.training.loop import accuracy

PROG = "python -m studies.evaluate"


def build_parser():
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--model", type=Path, required=True, metavar="FILE",
                        help="packed model file from python -m studies.export")
    parser.add_argument("--data", default=None, metavar="DATA",
                        help=f"the images: the validation split of {DATA_HELP}; of an ImageFolder tree only "
                             "DIR/val is read (default: the embedded digits)")
    parser.add_argument("--resize", type=bounded(SIDE), default=256, metavar="N",
                        help="ImageFolder: shorter side before the centre crop (default 256)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                        help="the training checkpoint the file came from: also evaluate the float model")
    parser.add_argument("--real-layers", default="int8", choices=REAL_LAYERS,
                        help="the packed network's real layers: int8 (as calibrated at export; default) or float")
    parser.add_argument("--batch-size", type=bounded(BATCH_SIZE), default=64, metavar="N",
                        help="images per call (default 64)")
    add_threads_flag(parser, 1)
    parser.add_argument("--backend", default="auto", choices=("auto", *BACKENDS),
                        help="packed kernel backend (default auto: $XNORPP_PACKED_BACKEND, else cpp, else numpy)")
    add_out_flag(parser, None, "folder for evaluation.json (default: print only)")
    return parser


def exported_from(payload, model):
    """Whether the model file ``payload`` holds ``model``'s weights (the checkpoint it was exported from): the bits
    of every binary layer and every real tensor it stores."""
    state, modules = model.state_dict(), dict(model.named_modules())
    for name, entry in payload["binary"].items():
        if name not in modules or not torch.equal(pack_weight(modules[name].weight, "numpy"), entry["bits"]):
            return False
    return all(k in state and state[k].shape == v.shape and torch.equal(state[k], v)
               for k, v in payload["state"].items())


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.out is not None:
        check_out(PROG, args.out)
    try:
        model, payload = load_model(args.model)
        backend_info(args.backend)
    except (ModelFileError, RuntimeError) as err:
        fail(PROG, str(err))
    size = payload["model_kwargs"]["input_size"]
    float_model = None
    if args.checkpoint is not None:
        float_model, arch, kwargs, trained_on = load_checkpoint(PROG, args.checkpoint)
        mine = (arch, float_model.method, kwargs, trained_on)
        theirs = (payload["arch"], payload["method"], payload["model_kwargs"], payload.get("classes") or trained_on)
        if mine != theirs:
            fail(PROG, f"checkpoint {args.checkpoint} is not the run of model file {args.model} "
                       f"({', '.join(map(str, mine[:3]))} vs {', '.join(map(str, theirs[:3]))}"
                       f"{'; other classes' if mine[3] != theirs[3] else ''})")
        if not exported_from(payload, float_model):
            fail(PROG, f"checkpoint {args.checkpoint} is not the run of model file {args.model}: their weights "
                       "differ (another run of the same configuration, or a file exported from another checkpoint)")
    try:
        check_memory(f"--batch-size {args.batch_size} of {size}x{size} images", 12 * args.batch_size * size * size)
        val, classes = val_split(args.data, size, args.resize)
        data = "the embedded digits" if args.data is None else f"--data {args.data}"
        check_classes(data, classes, f"model file {args.model}",
                      payload.get("classes") or payload["model_kwargs"]["num_classes"])
    except ValueError as err:  # DataError, or too little memory
        fail(PROG, str(err))
    torch.set_num_threads(args.threads)
    try:
        net = load_network(args.model, args.backend, args.real_layers)
    except ModelFileError as err:
        fail(PROG, str(err))
    int8_state = payload["int8"]["layers"] if args.real_layers == "int8" else None
    reference = (fused_emulation(float_model, args.real_layers, int8_state=int8_state)
                 if float_model is not None else None)
    loader = torch.utils.data.DataLoader(val, batch_size=args.batch_size, shuffle=False)
    hits = {"packed": [0, 0], "float": [0, 0], "fused_emulation": [0, 0]}
    agree = {"float": 0, "fused_emulation": 0, "logits_equal": 0}
    n = 0
    with torch.no_grad(), data_errors(PROG):
        for x, y in tqdm(loader, desc="evaluate", disable=None):
            logits = net(x)
            outputs = {"packed": logits}
            if float_model is not None:
                outputs["float"], outputs["fused_emulation"] = float_model(x), reference(x)
                agree["logits_equal"] += int((logits == outputs["fused_emulation"]).all(1).sum())
                for k in ("float", "fused_emulation"):
                    agree[k] += int((logits.argmax(1) == outputs[k].argmax(1)).sum())
            for k, out in outputs.items():
                top1, top5 = accuracy(out, y, (1, 5))
                hits[k] = [hits[k][0] + top1, hits[k][1] + top5]
            n += len(y)
    calibration = {k: payload["int8"][k] for k in ("calibration_images", "calibration_data", "engine")}
    result = {"images": n, "data": "digits" if args.data is None else str(args.data),
              "arch": payload["arch"], "method": payload["method"], "model_kwargs": payload["model_kwargs"],
              "real_layers": args.real_layers, "int8_calibration": calibration,
              "model_file_bytes": args.model.stat().st_size,
              "size_budget": size_budget(model, payload["int8"]["layers"])}
    result["file_over_budget"] = result["model_file_bytes"] / result["size_budget"]["total"]
    for k, (t1, t5) in hits.items():
        if k == "packed" or float_model is not None:
            result[f"{k}_top1"], result[f"{k}_top5"] = 100 * t1 / n, 100 * t5 / n
    lines = [f"packed ({payload['arch']}, {payload['method']}, {args.real_layers} real layers) on {n} images: "
             f"top-1 {result['packed_top1']:.2f}%, top-5 {result['packed_top5']:.2f}%"]
    if float_model is not None:
        result.update({f"agree_{k}": v for k, v in agree.items()})
        lines += [f"float model: top-1 {result['float_top1']:.2f}%, top-5 {result['float_top5']:.2f}%; fused "
                  f"emulation: top-1 {result['fused_emulation_top1']:.2f}%",
                  f"predictions agree with the float model on {agree['float']}/{n}, with the fused emulation on "
                  f"{agree['fused_emulation']}/{n}; logits equal to the fused emulation's on {agree['logits_equal']}/{n}"]
    print("\n".join(lines))
    if args.out is not None:
        command = " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv)))
        write_json(args.out / "evaluation.json", {**result, "command": command, "backend": net.backend.name,
                                                  "environment": environment("cpu")})
    return result


if __name__ == "__main__":
    main()

"""Table 2 on the layers of trained networks: weights and input activations of every convolution.

    python -m studies.trained_layers                                   # trains both digits models, then scores
    python -m studies.trained_layers --checkpoints RUN/checkpoint.pt   # one or more checkpoints of studies.train
    python -m studies.trained_layers --checkpoints RUN/checkpoint.pt --data /data/imagenet --out /tmp/t

Without ``--checkpoints`` it trains, on the embedded digits with the default
recipe and seed (``python -m studies.train``'s; ``--epochs`` stops it
earlier), the real-valued ResNet-18 and the Case 4 binary ResNet-18 into
``OUT/models/`` (their checkpoint.pt is kept there and reused, or continued,
by a rerun; metrics.csv, config.json, summary.json beside it). For every
convolution of each model, in forward order, it records the real inputs on
validation images (the digits' validation split, or that of what ``--data``
names, as for ``studies.train``; their classes must be the checkpoint's), fits
each learned Gamma on ``--fit-images`` of them and scores every method on
those and on
``--heldout-images`` others (``xnorpp_core.reconstruction.trained``), and
writes to ``--out``:

    layers.csv          one row per model, layer, method and split: L1 (mean and 95% interval over
                        images), L1 / mean|Y|, and the evidence on each learned fit
    claims.csv          one row per model, layer and split: XNOR-Net / Case 1 and each step of Table 2's
                        order, with 95% intervals over images, and Table 2's order (holds, reversed or
                        not separable)
    per_image.csv       one row per model, layer, split and image: every method's L1 distance and mean|Y|
                        (float32, as computed), from which every interval of claims.csv recomputes
    trained_layers.md   the per-layer tables
    trained_layers.png  distance of each method by layer depth, and XNOR-Net / Case 1, with intervals
    run.json            configuration, models, images, versions, hardware, wall time
"""

import dataclasses
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from studies._cli import (FIT_HELP, add_config_flags, add_out_flag, add_threads_flag, bounded,  # noqa: E402
                          check_out, config_from_args, fail, load_checkpoint, make_parser)
from xnorpp_core import paper  # noqa: E402
from xnorpp_core.limits import EPOCHS, SIDE  # noqa: E402
from xnorpp_core.provenance import (atomic_write, environment, markdown_table, save_figure, write_csv,  # noqa: E402
                                    write_json)
from xnorpp_core.reconstruction.fit import RECONSTRUCTION_METHODS  # noqa: E402
from xnorpp_core.reconstruction.trained import (CONFIDENCE, TrainedLayersConfig, claim_rows,  # noqa: E402
                                                convolutions, image_rows, layer_rows, record_inputs, score_layer)
from xnorpp_core.report.tables import METHOD_LABELS  # noqa: E402
from xnorpp_core.training import DataError, TrainConfig, TrainingError, train  # noqa: E402
from xnorpp_core.training.data import DATA_HELP, check_classes, splits  # noqa: E402

PROG = "python -m studies.trained_layers"
DEFAULT_OUT = "results/reconstruction/trained"
TRAINED = ("real", "case4")  # the models trained without --checkpoints: real ResNet-18, Case 4 binary ResNet-18
HELP = {"fit": FIT_HELP}


def build_parser():
    parser = make_parser(PROG, __doc__)
    parser.add_argument("--checkpoints", type=Path, nargs="+", default=None, metavar="FILE",
                        help="checkpoint.pt of python -m studies.train (one or more; default: train the two "
                             "digits models)")
    parser.add_argument("--data", default=None, metavar="DATA",
                        help=f"the images: the validation split of {DATA_HELP} (default: the embedded digits' "
                             "validation split)")
    parser.add_argument("--epochs", type=bounded(EPOCHS), default=None, metavar="N",
                        help="epochs of the two digits models trained without --checkpoints (default: the digits "
                             "recipe's, 9; fewer stop the same run earlier)")
    parser.add_argument("--resize", type=bounded(SIDE), default=256, metavar="N",
                        help="ImageFolder: shorter side before the centre crop (default 256)")
    add_config_flags(parser, TrainedLayersConfig, helps=HELP)
    add_threads_flag(parser, 2)
    add_out_flag(parser, DEFAULT_OUT)
    return parser


def _images(prog, data, size, resize, config, source, trained_on):
    """The validation images ``(fit (N, 3, s, s), held-out (M, 3, s, s), indices)``, chosen by a seeded
    permutation; a one-line exit when the data cannot be read, has too few images, or other classes than
    ``trained_on``, those of the model ``source`` (a checkpoint)."""
    try:
        _, val, classes = splits(data, size, resize)
        check_classes("the embedded digits" if data is None else f"--data {data}", classes, source, trained_on)
    except DataError as err:
        fail(prog, str(err))
    if len(val) < config.images:
        fail(prog, f"the validation split has {len(val)} images, fewer than --fit-images + --heldout-images "
                   f"= {config.images}")
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(config.seed))[:config.images]
    try:
        x = torch.stack([val[i][0] for i in order.tolist()])
    except DataError as err:
        fail(prog, str(err))
    return x[:config.fit_images], x[config.fit_images:], order.tolist()


def _checked(prog, path):
    """A checkpoint's model in eval mode, its convolutions and classes (their names, or their number where the
    checkpoint does not name them); one-line exits for every problem."""
    model, arch, kwargs, classes = load_checkpoint(prog, path)
    try:
        layers = convolutions(model, torch.zeros(2, 3, kwargs["input_size"], kwargs["input_size"]))
    except ValueError as err:
        fail(prog, f"checkpoint {path}: {err}")
    return model, arch, kwargs, layers, kwargs["num_classes"] if classes is None else classes


def _top1(path):
    history = torch.load(path, map_location="cpu", weights_only=True).get("history") or [{}]
    return history[-1].get("val_top1")


def _names(paths):
    """One name per checkpoint: its folder's name, numbered when two folders share it."""
    names = []
    for p in paths:
        name = Path(p).resolve().parent.name
        names.append(name if name not in names else f"{name}-{len(names) + 1}")
    return names


def plot(layers_frame, claims_frame):
    """Per model (columns): L1 / mean|Y| of every method but direct sign by layer depth on the held-out images,
    and XNOR-Net / Case 1 on both splits, with 95% intervals over images."""
    models = list(dict.fromkeys(layers_frame["model"]))
    fig, axes = plt.subplots(2, len(models), figsize=(6.5 * len(models), 8), squeeze=False, sharex="col")
    paper_ratio = paper.TABLE2["xnor"][0] / paper.TABLE2["case1"][0]
    for j, model in enumerate(models):
        rows = layers_frame[(layers_frame.model == model) & (layers_frame.split == "heldout")]
        ax = axes[0, j]
        direct = rows[rows.method == "direct"].rel_l1
        for method in RECONSTRUCTION_METHODS[1:]:  # direct sign (BNN) is far above the others: in the title
            r = rows[rows.method == method].sort_values("depth")
            ax.errorbar(r.depth, r.rel_l1, yerr=[r.rel_l1 - r.rel_l1_low, r.rel_l1_high - r.rel_l1], marker="o",
                        ms=3, capsize=2, label=METHOD_LABELS[method].md if method in METHOD_LABELS else method)
        ax.set_ylabel("L1 / mean |Y|  (held-out images)")
        ax.set_title(f"{model}\n(BNN, direct sign, not drawn: {direct.min():.3g} to {direct.max():.3g})", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        ax = axes[1, j]
        for split, marker in (("train", "s"), ("heldout", "o")):
            c = claims_frame[(claims_frame.model == model) & (claims_frame.split == split)].sort_values("depth")
            ax.errorbar(c.depth + (0.1 if split == "heldout" else -0.1), c.xnor_over_case1,
                        yerr=[c.xnor_over_case1 - c.xnor_over_case1_low, c.xnor_over_case1_high - c.xnor_over_case1],
                        marker=marker, ms=3, capsize=2, ls="none",
                        label="fit images" if split == "train" else "held-out images")
        ax.axhline(paper_ratio, color="tab:red", ls="--", lw=1, label=f"paper's Table 2 ({paper_ratio:.1f})")
        ax.axhline(1.0, color="grey", lw=1)
        ax.set_ylabel("XNOR-Net L1 / Case 1 L1  (per image)")
        ax.set_xlabel("layer depth (forward order; grey: a layer the binary network keeps real)")
        binarized = rows.drop_duplicates("depth").set_index("depth")["binarized"]
        ax.set_xticks(list(binarized.index))
        for tick, b in zip(ax.get_xticklabels(), binarized.values):
            tick.set_color("black" if b else "tab:grey")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Table 2 on trained layers: mean over images, {CONFIDENCE:.0%} intervals over images")
    fig.tight_layout()
    return fig


def _interval_text(mean, low, high, digits=3):
    return f"{mean:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def to_markdown(layers_frame, claims_frame, models, config):
    """One table per model: each method's L1 / mean|Y| on the held-out images, XNOR-Net / Case 1 on both
    splits, whether Table 2's order holds on the held-out images, and the worst evidence gap."""
    parts = []
    for m in models:
        name = m["name"]
        rows = layers_frame[layers_frame.model == name]
        claims = claims_frame[claims_frame.model == name].set_index(["depth", "split"])
        table = []
        for depth, layer in rows.groupby("depth", sort=True):
            held = layer[layer.split == "heldout"].set_index("method")
            fitted = layer[(layer.split == "train") & (layer.evidence != "")]
            line = {"depth": depth, "layer": held["layer"].iloc[0], "shape": held["shape"].iloc[0],
                    "binarized": "yes" if held["binarized"].iloc[0] else "no"}
            for method in RECONSTRUCTION_METHODS:
                label = METHOD_LABELS[method].md if method in METHOD_LABELS else method
                line[label] = f"{held.loc[method, 'rel_l1']:.3g}"
            for split, title in (("heldout", "XNOR / Case 1, held-out"), ("train", "XNOR / Case 1, fit images")):
                c = claims.loc[(depth, split)]
                line[title] = _interval_text(c.xnor_over_case1, c.xnor_over_case1_low, c.xnor_over_case1_high)
            line["Table 2 order (held-out)"] = claims.loc[(depth, "heldout"), "paper_order"]
            line["Adam vs reference (max)"] = f"{pd.to_numeric(fitted.gap).max():+.1e}"
            table.append(line)
        top1 = f", validation top-1 {m['val_top1']:.1f}%" if m.get("val_top1") is not None else ""
        parts += [f"### {name} ({m['arch']}, {m['method']}{top1})", "",
                  markdown_table(pd.DataFrame(table), disable_numparse=True), ""]
    head = (f"Table 2 on the convolutions of trained networks: each layer's real weights and its real input "
            f"activations on {config.fit_images} validation images (each learned Gamma fitted to them with the "
            f"{config.loss.upper()} loss) and {config.heldout_images} held-out ones. Method columns: L1 / mean|Y| on "
            f"the held-out images. XNOR / Case 1: mean per-image ratio with its {CONFIDENCE:.0%} Student-t "
            "interval over images. Table 2 order: Direct > XNOR-Net > Case 1 > Case 3 > Case 4, by each step's "
            "per-image difference: holds when every step's interval lies above zero, reversed when some step's "
            "lies below zero, else not separable. Adam vs reference: the largest signed relative "
            "gap of the four learned fits to the exact optimum (Cases 1-2) or the best of "
            f"{config.starts} independent alternating searches (Cases 3-4). Per-image intervals and every "
            "split: `layers.csv`, `claims.csv`; the per-image distances they are computed from: `per_image.csv`.")
    return "\n".join([head, ""] + parts)


def _models_to_score(args, out):
    """``(name, path, trained summary or None)`` one at a time: the checkpoints given, or the two digits models,
    each trained here when it comes up (reused when its checkpoint is complete)."""
    if args.checkpoints is not None:
        yield from ((n, p, None) for n, p in zip(_names(args.checkpoints), args.checkpoints))
        return
    for method in TRAINED:
        folder = out / "models" / f"digits-resnet18-{method}"
        print(f"training {folder.name} (or reusing its complete checkpoint)", flush=True)
        try:
            summary = train(TrainConfig(method=method, out=str(folder), resume=True, device="cpu",
                                        epochs=args.epochs))
        except (DataError, TrainingError) as err:
            fail(PROG, str(err))
        yield folder.name, folder / "checkpoint.pt", summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    config = config_from_args(PROG, TrainedLayersConfig, args)
    out = check_out(PROG, args.out)
    if args.checkpoints is None and args.data is not None:
        fail(PROG, "--data needs --checkpoints (without it the two digits models are trained and scored)")
    if args.checkpoints is not None and args.epochs is not None:
        fail(PROG, "--epochs sets the training of the digits models; it does not apply to --checkpoints")
    torch.set_num_threads(args.threads)
    checked = {}
    if args.checkpoints is not None:  # every checkpoint and the images, before any work
        for path in args.checkpoints:
            checked[path] = _checked(PROG, path)
            _images(PROG, args.data, checked[path][2]["input_size"], args.resize, config, f"checkpoint {path}",
                    checked[path][4])
    start = time.perf_counter()
    layer_frames, claim_frames, image_frames, models = [], [], [], []
    for name, path, summary in _models_to_score(args, out):
        model, arch, kwargs, layers, classes = checked.get(path) or _checked(PROG, path)
        x_fit, x_held, indices = _images(PROG, args.data, kwargs["input_size"], args.resize, config,
                                         f"checkpoint {path}", classes)
        top1 = summary["final"]["val_top1"] if summary else _top1(path)
        models.append({"name": name, "checkpoint": str(path), "arch": arch, "method": model.method,
                       "model_kwargs": kwargs, "val_top1": top1, "layers": len(layers), "images": indices})
        bar = tqdm(layers, desc=name, disable=None)
        for layer in bar:
            bar.set_description(f"{name}: {layer.name}")
            x = record_inputs(model, torch.cat([x_fit, x_held]), [layer.module])[0]
            with tqdm(desc="Adam steps", leave=False, disable=bar.disable) as steps:
                result = score_layer(layer.module, x[:len(x_fit)], x[len(x_fit):], config, steps.update)
            layer_frames.append(pd.DataFrame(layer_rows(name, layer, result)))
            claim_frames.append(pd.DataFrame(claim_rows(name, layer, result)))
            image_frames.append(pd.DataFrame(image_rows(name, layer, result, indices)))
    layers_frame, claims_frame = pd.concat(layer_frames), pd.concat(claim_frames)
    markdown = to_markdown(layers_frame, claims_frame, models, config)
    write_csv(out / "layers.csv", layers_frame)
    write_csv(out / "claims.csv", claims_frame)
    write_csv(out / "per_image.csv", pd.concat(image_frames))
    atomic_write(out / "trained_layers.md", markdown + "\n")
    figure = plot(layers_frame, claims_frame)
    save_figure(figure, out / "trained_layers.png", dpi=110)
    plt.close(figure)
    write_json(out / "run.json", {
        "command": " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv))),
        "config": dataclasses.asdict(config), "data": "digits" if args.data is None else str(args.data),
        "threads": args.threads, "models": models, "wall_seconds": time.perf_counter() - start,
        "environment": environment("cpu")})
    print(markdown)
    print(f"\nwrote {out}/{{layers.csv,claims.csv,per_image.csv,trained_layers.md,trained_layers.png,run.json}}")
    return layers_frame, claims_frame


if __name__ == "__main__":
    main()

"""What binarization costs and buys on the digits: top-1 and latency of the real ResNet-18 in fp32, bf16 and int8
against the packed binary one, loaded from its model file.

    python -m studies.deploy_tradeoff                                   # trains both networks (fixed seed)
    python -m studies.deploy_tradeoff --checkpoints REAL.pt BINARY.pt   # or uses training checkpoints

Takes the digits-trained ResNet-18 twice: the real-valued one and the binary one
of ``--method`` (default Case 4), each trained by ``xnorpp_core.training`` with
the digits recipe and ``--seed`` (a few minutes on a CPU), or read from
``--checkpoints`` (``python -m studies.train`` writes them; a checkpoint of
method ``real`` is the real network, any other the binary one; the network not
given is trained, or its checkpoint in ``runs/`` reused by a rerun). The binary
one is exported as a model file (int8 real layers calibrated on the digits'
training images), loaded back with each real-layer option and measured as
loaded. The forms, the protocol and the
conclusion: ``xnorpp_core.deploy.tradeoff``.

Writes to ``--out`` (default ``results/inference/digits/tradeoff``): ``tradeoff.csv``,
``tradeoff.md`` (the table and the conclusion, naming the CPU and the packed
arithmetic path; the timings are marked disturbed when the load average before the
run plus the one thread exceeds the cores), ``run.json`` (config, checkpoints, the
model files' sizes, forms left out and why, load average and the disturbed mark,
versions, hardware), and
``runs/<method>/`` for each network it trained (metrics, config, summary; the
checkpoint itself is not committed).
"""

import os
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from studies._cli import (add_config_flags, add_out_flag, check_out, config_from_args, fail, load_checkpoint,
                          make_parser)
from xnorpp_core.deploy import forms, runtimes
from xnorpp_core.deploy.tradeoff import LARGE, DeployTradeoffConfig, conclusion, measure
from xnorpp_core.packed import backend_info
from xnorpp_core.packed.int8 import arithmetic as int8_arithmetic
from xnorpp_core.provenance import (atomic_write, cpu_markdown_table, disturbed_text, disturbed_threads, environment,
                                    write_csv, write_json)
from xnorpp_core.report.machine import cpu_label
from xnorpp_core.training import DataError, TrainConfig, TrainingError, train
from xnorpp_core.training.data import CALIBRATION_IMAGES, check_classes, digits_splits

PROG = "python -m studies.deploy_tradeoff"


def _checkpoints(cfg):
    """``{"real": (model, kwargs), "binary": (model, kwargs)}`` from ``--checkpoints``; one-line exits for
    unusable ones: not a ResNet-18 trained on the digits (their classes, the small-input stem, the input size of
    the networks trained here), or two of one kind."""
    loaded, digits = {}, digits_splits(TrainConfig().input_size)[2]
    for path in cfg.checkpoints:
        model, arch, kwargs, classes = load_checkpoint(PROG, path)
        if arch != "resnet18" or not kwargs["small_input"] or kwargs["input_size"] != TrainConfig().input_size:
            fail(PROG, f"checkpoint {path} is not a digits ResNet-18 (arch {arch}, small_input "
                       f"{kwargs['small_input']}, input size {kwargs['input_size']}; the digits recipe's: resnet18, "
                       f"True, {TrainConfig().input_size})")
        try:
            check_classes("the embedded digits", digits, f"checkpoint {path}",
                          kwargs["num_classes"] if classes is None else classes)
        except DataError as err:
            fail(PROG, str(err))
        kind = "real" if model.method == "real" else "binary"
        if kind in loaded:
            fail(PROG, f"--checkpoints: two {kind} networks given ({path})")
        loaded[kind] = model, kwargs
    return loaded


def _train(cfg, method, out):
    """``(model, kwargs)``: a digits ResNet-18 of ``method`` trained into ``out`` (the recipe, ``cfg.seed``; a
    complete checkpoint there of the same configuration is reused, an interrupted one continued), in eval mode."""
    config = TrainConfig(arch="resnet18", method=method, out=str(out), seed=cfg.seed, device="cpu", quiet=True,
                         resume=True, **({} if cfg.epochs is None else {"epochs": cfg.epochs}))
    print(f"training the {method} network into {out} (a finished run there is reused) ...", file=sys.stderr)
    train(config)
    model, _, kwargs, _ = load_checkpoint(PROG, out / "checkpoint.pt")
    return model, kwargs


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, DeployTradeoffConfig)
    add_out_flag(parser, "results/inference/digits/tradeoff")
    args = parser.parse_args(argv)
    cfg = config_from_args(PROG, DeployTradeoffConfig, args)
    out = check_out(PROG, args.out)
    load_before = os.getloadavg()  # before the run's own start-up (the kernel's loading spikes it)
    for path in cfg.checkpoints:
        if not Path(path).is_file():
            fail(PROG, f"checkpoint {path} does not exist")
    given = _checkpoints(cfg)
    try:
        info = backend_info(cfg.backend)
    except RuntimeError as err:
        fail(PROG, str(err))
    if "binary" in given:
        cfg = replace(cfg, method=given["binary"][0].method)
    cpu = cpu_label(environment())
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        try:
            real, _ = given.get("real") or _train(cfg, "real", out / "runs" / "real")
            binary, binary_kwargs = given.get("binary") or _train(cfg, cfg.method, out / "runs" / cfg.method)
        except (DataError, TrainingError) as err:
            fail(PROG, str(err))
        small = real.input_size[0]
        _, val, _ = digits_splits(small)
        table, unavailable, file_bytes = measure(real, binary, binary_kwargs, info, val, cfg.repeats, cfg.seed)
    finally:
        torch.set_num_threads(previous)
    disturbed = disturbed_text(load_before[0], os.cpu_count(), [1])  # one thread here
    text = conclusion(table, small) + (f" Each latency verdict here rests on {disturbed}." if disturbed else "")
    load_after = os.getloadavg()
    table.insert(0, "cpu", cpu)
    command = " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv)))
    md = [f"# What binarization costs and buys: digits ResNet-18 ({cfg.method}) against the real one", "",
          f"One thread, batch 1, median call (ms) at {small}x{small} (the digits) and {LARGE}x{LARGE}; top-1 on the "
          f"digits' {len(val)} validation images; the packed networks loaded from the binary network's model "
          f"file ({file_bytes[small]} bytes; {file_bytes[LARGE]} at {LARGE}x{LARGE}), its int8 real layers and the "
          f"real network's int8 forms calibrated on {CALIBRATION_IMAGES} training images; packed backend "
          f"{info.name}: {info.path}; {int8_arithmetic(info)}. Load average (1 min) "
          f"{load_before[0]:.2f} before, {load_after[0]:.2f} after" + (f" ({disturbed})." if disturbed else "."), "",
          cpu_markdown_table(table, ["form", "precision", "top1", f"median_ms_{small}", f"median_ms_{LARGE}",
                                     "logits_equal_emulation"], cpu),
          text, "", f"Command: `{command}`"]
    write_csv(out / "tradeoff.csv", table)
    atomic_write(out / "tradeoff.md", "\n".join(md) + "\n")
    write_json(out / "run.json", {"command": command, "config": asdict(cfg), "backend": asdict(info), "cpu": cpu,
                                  "conclusion": text, "int8_api": forms.INT8_API, "runtimes": runtimes.versions(),
                                  "calibration_images": CALIBRATION_IMAGES,
                                  "model_file_bytes": {f"{k}x{k}": v for k, v in file_bytes.items()},
                                  "forms_left_out": unavailable,
                                  "load_average_before": load_before, "load_average_after": load_after,
                                  "disturbed_threads": disturbed_threads(load_before[0], os.cpu_count(), [1]),
                                  "environment": environment("cpu")})
    print("\n".join(md))
    return table


if __name__ == "__main__":
    main()

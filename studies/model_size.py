"""Model size: the binary ResNet-18's model file against the float32 real-valued ResNet-18, per method.

    python -m studies.model_size

For each method with a packed form, the binary ResNet-18 at 224x224 with 1000
classes (random trained-like weights; its int8 real layers calibrated on four
N(0, 1) draws: a byte count does not depend on the values) is exported as the
model file a user ships (``xnorpp_core.packed.model_file``) and read back.
``file_bytes`` is that file's length; ``compression_vs_real`` the float32 real
ResNet-18's bytes (its parameters and buffers) over it. The file's tensors by
kind (``size_budget``): ``packed_weights`` (one bit per binary weight),
``scales`` (learned factors, ``xnor_alpha``'s alpha; Cases 3-4 as their
factors, never a dense Gamma), ``real_layers`` (float32 real layers and BN),
``int8_real_layers`` (their int8 form); ``container`` is the rest of the file
(header and ``torch.save``'s own bytes). ``compression_binary_weights`` is the
binary weights' float32 bytes over their packed bits.

Writes to ``--out`` (default ``results/model_size``): ``model_size.csv``,
``model_size.md`` and ``run.json`` (the command, seed, versions and hardware).
"""

import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from studies._cli import add_config_flags, add_out_flag, check_out, config_from_args, make_parser, opt
from xnorpp_core.deploy.whole_network import trained_like
from xnorpp_core.limits import SEED, check_fields
from xnorpp_core.models import build_model
from xnorpp_core.packed import SUPPORTED_METHODS, storage_bytes
from xnorpp_core.packed.model_file import export_bytes, load_model, size_budget
from xnorpp_core.provenance import atomic_write, environment, write_csv, write_json

PROG = "python -m studies.model_size"
KWARGS = {"num_classes": 1000, "input_size": 224, "pad_mode": "zero", "small_input": False}
COLUMNS = ["method", "file_bytes", "real_float32_bytes", "compression_vs_real", "packed_weights", "scales",
           "real_layers", "int8_real_layers", "container", "compression_binary_weights"]


@dataclass(frozen=True)
class ModelSizeConfig:
    """One run; written to ``run.json``."""

    seed: int = opt(0, "seed of the weights and the calibration draws", bounds=SEED)

    def __post_init__(self):
        check_fields(self)


def size_table(seed, folder):
    """One row per method (module docstring); the model files are written to ``folder``."""
    g = torch.Generator().manual_seed(seed)
    real = storage_bytes(build_model("resnet18", "real", **KWARGS))["total"]
    calibration = torch.randn(4, 3, KWARGS["input_size"], KWARGS["input_size"], generator=g)
    rows = []
    for method in SUPPORTED_METHODS:
        model = trained_like(build_model("resnet18", method, **KWARGS), g)
        path = Path(folder) / f"{method}.xnorpp"
        path.write_bytes(export_bytes(model, "resnet18", KWARGS, calibration=calibration,
                                      calibration_data="N(0, 1) draws"))
        _, payload = load_model(path)
        budget = size_budget(model, payload["int8"]["layers"])
        float_binary = storage_bytes(model)["binary_weights"]
        size = path.stat().st_size
        rows.append({"method": method, "file_bytes": size, "real_float32_bytes": real,
                     "compression_vs_real": real / size, **{k: v for k, v in budget.items() if k != "total"},
                     "container": size - budget["total"],
                     "compression_binary_weights": float_binary / budget["packed_weights"]})
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None):
    parser = make_parser(PROG, __doc__)
    add_config_flags(parser, ModelSizeConfig)
    add_out_flag(parser, "results/model_size")
    args = parser.parse_args(argv)
    cfg = config_from_args(PROG, ModelSizeConfig, args)
    out = check_out(PROG, args.out)
    with tempfile.TemporaryDirectory() as folder:
        table = size_table(cfg.seed, folder)
    command = " ".join([PROG] + (sys.argv[1:] if argv is None else list(argv)))
    md = ["# Model size: the binary ResNet-18's model file against the float32 real-valued ResNet-18", "",
          "ResNet-18 at 224x224, 1000 classes; bytes. The file holds the binary weights as bits, the scales "
          "(Cases 3-4 as their factors), the real layers in float32 and their int8 form.", "",
          table.to_markdown(index=False, floatfmt=".4g"), "", f"Command: `{command}`"]
    write_csv(out / "model_size.csv", table)
    atomic_write(out / "model_size.md", "\n".join(md) + "\n")
    write_json(out / "run.json", {"command": command, "config": asdict(cfg), "model_kwargs": KWARGS,
                                  "environment": environment("cpu")})
    print("\n".join(md))
    return table


if __name__ == "__main__":
    main()

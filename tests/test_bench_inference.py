"""The whole-network benchmark: the exactness check covers every real-layer option of the packed network."""

import pytest
import torch

from xnorpp_core.deploy import whole_network as bench
from xnorpp_core.models import build_model
from xnorpp_core.packed import backend_info


class _Progress:
    def update(self, n=1):
        pass


def test_exactness_counts_every_real_layer_option():
    cfg = bench.BenchInferenceConfig(methods=("case4",), check_inputs=3, real_layers=bench.REAL_LAYERS)
    g = torch.Generator().manual_seed(0)
    binary = {"case4": bench.trained_like(build_model("resnet18", "case4", 1000, 224), g)}
    exact = bench.exactness(cfg, backend_info("auto"), binary, _Progress())
    assert list(exact.real_layers) == list(bench.REAL_LAYERS)
    assert (exact.inputs == 3).all() and (exact.logits_equal == 3).all() and (exact.predictions_agree == 3).all()


def test_packed_names_and_real_layer_choices():
    assert bench.packed_name("case1", "float") == "packed_case1"
    assert bench.packed_name("case1", "int8") == "packed_case1_int8real"
    with pytest.raises(ValueError, match="real_layers must be among"):
        bench.BenchInferenceConfig(real_layers=("double",))

"""studies.deploy_tradeoff: the conclusion follows the numbers; bad input exits before any work."""

import pandas as pd
import pytest

from studies import deploy_tradeoff as study
from xnorpp_core.deploy import tradeoff


def _table(packed_ms, int8_ms, top1_packed=95.0, int8real_ms=None):
    rows = [("fp32_real_eager", "fp32", 98.0, 40.0, 140.0), ("fp32_real_folded_cl", "fp32", 98.0, 20.0, 120.0),
            ("bf16_real_folded_cl", "bf16", 98.0, 15.0, 70.0), ("int8_x86_real", "int8", 97.5, *int8_ms),
            ("int8_onednn_real", "int8", 97.8, int8_ms[0] + 1, int8_ms[1] + 1),
            ("emulated", "binary, fp32 emulation", top1_packed, 80.0, 300.0),
            ("packed", "binary, packed", top1_packed, *packed_ms)]
    if int8real_ms:
        rows.append(("packed_int8real", "binary, packed", 94.0, *int8real_ms))
    return pd.DataFrame(rows, columns=["form", "precision", "top1", "median_ms_16", "median_ms_224"])


def test_conclusion_follows_the_numbers():
    fast = tradeoff.conclusion(_table((2.0, 5.0), (6.0, 20.0)), 16)
    assert "at 16x16 the packed binary network (2.00 ms) is faster than the fastest int8 form (int8_x86_real, " \
           "6.00 ms: 3.0x)" in fast
    assert "at 224x224 the packed binary network (5.00 ms) is faster than the fastest int8 form (int8_x86_real, " \
           "20.00 ms: 4.0x) and faster than the fastest fp32 form (fp32_real_folded_cl, 120.00 ms: 24.0x)" in fast
    assert "top-1 of the packed binary network is 95.0% against the real network's 98.0% in fp32 (-3.0 points" \
        in fast
    assert "int8 real layers" not in fast
    slow = tradeoff.conclusion(_table((2.0, 30.0), (6.0, 20.0)), 16)
    assert "at 224x224 the packed binary network (30.00 ms) is slower than the fastest int8 form" in slow
    both = tradeoff.conclusion(_table((2.0, 30.0), (6.0, 20.0), int8real_ms=(1.0, 10.0)), 16)
    assert "slower than the fastest int8 form (int8_x86_real, 20.00 ms: 0.7x)" in both
    assert ("and the packed binary network with int8 real layers (10.00 ms) is faster than the fastest int8 form "
            "(int8_x86_real, 20.00 ms: 2.0x)") in both
    assert "the digits top-1 of the packed binary network with int8 real layers is 94.0%" in both
    band = tradeoff.EQUAL_BAND
    even = tradeoff.conclusion(_table((2.0, 20.0 / (1 + band / 2)), (6.0, 20.0)), 16)
    assert "is about as fast as the fastest int8 form (int8_x86_real" in even
    even = tradeoff.conclusion(_table((2.0, 20.0 / (1 - band / 2)), (6.0, 20.0)), 16)
    assert "is about as fast as the fastest int8 form (int8_x86_real" in even


@pytest.mark.parametrize("argv, message", [
    (["--repeats", "2"], "--repeats must be an integer from 3 to"),
    (["--epochs", "0"], "--epochs must be an integer from 1 to"),
    (["--checkpoints", "a.pt", "b.pt", "c.pt"], "at most two"),
    (["--checkpoints", "no_such_file.pt"], "does not exist"),
    (["--method", "nope"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2_before_work(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        study.main([*argv, "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_checkpoint_that_is_not_a_digits_resnet_is_refused(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as e:
        study.main(["--checkpoints", str(tmp_path / "bad.pt"), "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "is not a PyTorch file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_packed_forms_are_the_model_file_loaded_back(tmp_path):
    import torch

    from xnorpp_core.deploy.whole_network import trained_like
    from xnorpp_core.models import build_model
    from xnorpp_core.packed import backend_info

    kwargs = {"num_classes": 10, "input_size": 12, "pad_mode": "zero", "small_input": True}
    g = torch.Generator().manual_seed(0)
    real = trained_like(build_model("resnet18", "real", **kwargs), g).eval()
    binary = trained_like(build_model("resnet18", "case4", **kwargs), g).eval()
    calibration = torch.randn(8, 3, 12, 12, generator=g)
    forms, references, _, size = tradeoff.tradeoff_forms(real, binary, kwargs, backend_info("numpy"), calibration,
                                                        tmp_path)
    assert size == (tmp_path / "model.xnorpp").stat().st_size
    assert {"fp32_real_eager", "emulated", "packed", "packed_int8real"} <= set(forms)
    x = torch.randn(3, 3, 12, 12, generator=g)
    with torch.no_grad():
        for name in ("packed", "packed_int8real"):
            assert torch.equal(forms[name](x), references[name](x))
        assert not torch.equal(forms["packed"](x), forms["packed_int8real"](x))

"""The training-step benchmark script: one in-process measurement, and its bad options (no timing checked)."""

import pytest

from studies import bench_train


def test_measure_returns_every_step_and_a_peak():
    result = bench_train.measure("case4", batch_size=2, input_size=32, steps=2, warmup=1, device="cpu",
                                 channels_last=False, threads=1)
    assert len(result["step_ms"]) == 2 and all(t > 0 for t in result["step_ms"])
    assert result["peak_mib"] >= 0


@pytest.mark.parametrize("argv, match", [(["--steps", "0"], "--steps must be an integer from 1 to"),
                                         (["--warmup", "0"], "--warmup must be an integer from 1 to"),
                                         (["--methods", "case9"], "invalid choice")])
def test_bad_options(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as exit_:
        bench_train.main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and match in err
    assert not (tmp_path / "out").exists()

import json
from pathlib import Path

import pandas as pd
import pytest

from studies import speedup as study
from xnorpp_core.speedup import CONSISTENT_MODEL, speedup_ours, speedup_xnor

GOLDEN = json.loads((Path(__file__).parent / "golden" / "speedup.json").read_text())


def test_eq8_and_eq9_golden_values():
    assert speedup_xnor(256, 3, 3) == pytest.approx(GOLDEN["xnor_256_3x3_paper"], rel=1e-12)
    assert speedup_ours(256, 3, 3) == pytest.approx(GOLDEN["ours_256_3x3_paper"], rel=1e-12)
    assert speedup_xnor(256, 3, 3, CONSISTENT_MODEL) == pytest.approx(GOLDEN["xnor_256_3x3_consistent"], rel=1e-12)
    assert speedup_ours(256, 3, 3, CONSISTENT_MODEL) == pytest.approx(GOLDEN["ours_256_3x3_consistent"], rel=1e-12)
    assert speedup_xnor(64, 1, 1) == pytest.approx(GOLDEN["xnor_64_1x1_paper"], rel=1e-12)
    assert speedup_ours(64, 5, 5) == pytest.approx(GOLDEN["ours_64_5x5_paper"], rel=1e-12)


def test_printed_headline_values_against_the_formulas():
    # Eq. 8 gives 63.6959 (printed 63.69, truncated); Eq. 9 gives 63.9722 (printed 63.98).
    assert f"{speedup_xnor(256, 3, 3):.2f}" == "63.70"
    assert f"{speedup_ours(256, 3, 3):.2f}" == "63.97"


@pytest.mark.parametrize("fn", [speedup_xnor, speedup_ours])
def test_speedups_grow_with_channels_towards_64(fn):
    values = [fn(o, 3, 3) for o in (1, 8, 64, 512, 10**6)]
    assert values == sorted(values) and values[-1] < 64 and values[-1] == pytest.approx(64, rel=1e-4)


def test_study_writes_figure_and_csv(tmp_path, capsys):
    study.main(["--out", str(tmp_path), "--max-channels", "64"])
    table = pd.read_csv(tmp_path / "speedup.csv")
    assert list(table.columns) == ["kernel", "out_channels", "model", "method", "speedup"]
    assert set(table.kernel) == {1, 3, 5} and set(table.model) == {"paper", "consistent"}
    row = table.query("kernel == 3 and out_channels == 64 and model == 'paper' and method == 'ours'")
    assert row.speedup.item() == pytest.approx(speedup_ours(64, 3, 3))
    for name in ("figure1.png", "figure1.pdf", "run.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert "63.9722" in capsys.readouterr().out


def test_bad_option_exits_2_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        study.main(["--out", str(tmp_path / "x"), "--max-channels", "0"])
    assert err.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_readme_does_not_call_eq9_a_rounding_match():
    """Eq. 8's 63.696 is printed truncated (63.69); Eq. 9's 63.972 rounds to 63.97, not the printed 63.98:
    the README must not call that a match up to rounding."""
    from xnorpp_core import paper

    xnor, ours = speedup_xnor(256, 3, 3), speedup_ours(256, 3, 3)
    assert int(xnor * 100) / 100 == paper.SPEEDUP_256_3x3["xnor"] != round(xnor, 2)
    assert round(ours, 2) != paper.SPEEDUP_256_3x3["ours"] and int(ours * 100) / 100 != paper.SPEEDUP_256_3x3["ours"]
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert "up to rounding" not in readme

"""studies.kernel_bench: its layer list, option errors, and a short run on the paper's layer."""

import json
from pathlib import Path

import pandas as pd
import pytest

from studies import kernel_bench
from xnorpp_core.speedup import speedup_ours


def test_resnet18_binary_layer_shapes_counted_by_hand():
    # (c, o, k, stride, padding, input size): 4 + 1 + 3 + 1 + 3 + 1 + 3 = 16 binary convolutions
    assert kernel_bench.resnet18_layer_shapes() == {
        (64, 64, 3, 1, 1, 56): 4, (64, 128, 3, 2, 1, 56): 1, (128, 128, 3, 1, 1, 28): 3,
        (128, 256, 3, 2, 1, 28): 1, (256, 256, 3, 1, 1, 14): 3, (256, 512, 3, 2, 1, 14): 1,
        (512, 512, 3, 1, 1, 7): 3}
    assert kernel_bench.PAPER_LAYER in kernel_bench.layer_shapes("all")


@pytest.mark.parametrize("argv,message", [
    (["--threads", "0"], "--threads must be an integer from 1 to"),
    (["--methods", "xnor"], "invalid choice: 'xnor'"),
    (["--backend", "gpu"], "invalid choice: 'gpu'"),
    (["--layers", "some"], "invalid choice: 'some'"),
    (["--min-run-time", "0"], "--min-run-time must be a number in (0, 60]"),
    (["--batch-size", "0"], "--batch-size must be an integer from 1 to"),
])
def test_bad_options_exit_2_and_write_nothing(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        kernel_bench.main(argv + ["--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_every_flag_has_help(capsys):
    with pytest.raises(SystemExit):
        kernel_bench.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--threads", "--methods", "--batch-size", "--min-run-time", "--backend", "--layers",
                 "--seed", "--out"):
        assert flag in text
    assert all(f in text for f in ("kernel_bench.csv", "kernel_bench_summary.md", "run.json"))  # the outputs


def test_environment_variable_picks_the_backend(tmp_path, monkeypatch):
    # an explicit --backend auto (the default) defers to XNORPP_PACKED_BACKEND
    monkeypatch.setenv("XNORPP_PACKED_BACKEND", "numpy")
    out = tmp_path / "out"
    kernel_bench.main(["--layers", "paper", "--threads", "1", "--min-run-time", "0.01",
                       "--backend", "auto", "--out", str(out)])
    assert json.loads((out / "run.json").read_text())["backend"]["name"] == "numpy"


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as exit_:
        kernel_bench.main(["--out", str(tmp_path / "file")])
    assert exit_.value.code == 2


def test_short_run_on_the_paper_layer(tmp_path):
    out = tmp_path / "out"
    kernel_bench.main(["--layers", "paper", "--threads", "1", "--min-run-time", "0.01",
                       "--methods", "case1", "case4", "--backend", "numpy", "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"kernel_bench.csv", "kernel_bench.md", "speedup.png",
                                               "kernel_bench_summary.md", "run.json"}
    table = pd.read_csv(out / "kernel_bench.csv")
    assert len(table) == 2 and table.paper_layer.all() and list(table.method) == ["case1", "case4"]
    assert table.cpu.nunique() == 1 and "CPU: " in (out / "kernel_bench.md").read_text()
    row = table.iloc[0]
    assert row.eq9 == pytest.approx(speedup_ours(256, 3, 3))
    assert row.speedup == pytest.approx(row.float_ms / row.packed_ms)
    assert row.float_ms == min(row.float_nchw_ms, row.float_cl_ms)
    assert (table.filter(regex=r"_ms$") > 0).all(axis=None)


def test_plot_only_redraws_the_figure_from_the_files_and_names_the_arithmetic(tmp_path, monkeypatch):
    results = Path(kernel_bench.__file__).parents[1] / "results" / "kernel_bench"
    for name in ("kernel_bench.csv", "run.json"):
        (tmp_path / name).write_bytes((results / name).read_bytes())
    titles, save = [], kernel_bench.save_figure

    def save_and_read_title(fig, path, **kwargs):
        titles.append(" ".join(fig.axes[0].get_title().split()))
        save(fig, path, **kwargs)

    monkeypatch.setattr(kernel_bench, "save_figure", save_and_read_title)
    kernel_bench.main(["--plot-only", "--out", str(tmp_path)])
    assert (tmp_path / "speedup.png").stat().st_size > 0
    backend = kernel_bench.BackendInfo(**json.loads((results / "run.json").read_text())["backend"])
    assert f"backend {backend.name}: {backend.path}" in titles[0]
    # the summary, rewritten from the same files, is the committed one
    assert (tmp_path / "kernel_bench_summary.md").read_text() == (results / "kernel_bench_summary.md").read_text()
    (tmp_path / "run.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        kernel_bench.main(["--plot-only", "--out", str(tmp_path)])
    assert exit_info.value.code == 2

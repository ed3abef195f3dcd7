"""The papermill notebooks and their runner, ``python -m studies.notebooks``, on tiny parameters.

One module-scoped run of ``all`` with one seed and two rows (one epoch, one batch of 8; ResNet-18
Case 4 in both grids, trained once) executes every notebook once: train.ipynb twice,
reconstruction.ipynb (2 trials) and tables.ipynb.
"""

import json
import shutil

import nbformat
import pandas as pd
import papermill
import pytest

from studies import notebooks as runner
from xnorpp_core.report import tables
from datafiles import fashion_files
from xnorpp_core.training import METRICS_COLUMNS, TrainConfig, TrainingError, grids

TINY = ["--epochs", "1", "--limit-batches", "1", "--batch-size", "8", "--trials", "2", "--seeds", "0"]
ROWS = {"table1": (("resnet18", "case4"),), "table3": (("alexnet", "xnor"), ("resnet18", "case4"))}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        for grid, rows in ROWS.items():
            mp.setitem(tables.GRIDS, grid, rows)
        runner.main(["all", "--train", "--out", str(out)] + TINY)
    return out


def errors(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.papermill.exception is None
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def outputs(path, kind):
    nb = nbformat.read(path, as_version=4)
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind in o.get("data", {})]


def test_every_row_has_its_notebook_and_metrics(results):
    assert sorted(p.name for p in (results / "runs").iterdir()) == ["alexnet_xnor", "resnet18_case4"]
    for arch, method in dict.fromkeys(row for rows in ROWS.values() for row in rows):
        folder = results / "runs" / f"{arch}_{method}" / "seed0"
        assert [p.name for p in folder.parent.iterdir() if p.is_dir()] == ["seed0"]
        notebook = folder.with_suffix(".ipynb")
        assert errors(notebook) == []
        assert outputs(notebook, "image/png"), "no training curves"
        params = nbformat.read(notebook, as_version=4).metadata.papermill.parameters
        assert (params["arch"], params["method"], params["epochs"], params["limit_batches"]) == (arch, method, 1, 1)
        metrics = pd.read_csv(folder / "metrics.csv")
        assert list(metrics.columns) == list(METRICS_COLUMNS) and len(metrics) == 1
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["final"]["epoch"] == 1 and summary["protocol"]["config"]["method"] == method


def test_table2_notebook(results):
    folder = results / "reconstruction"
    assert errors(folder / "reconstruction.ipynb") == []
    assert len(outputs(folder / "reconstruction.ipynb", "image/png")) == 1  # the per-trial box plots, once
    trials = pd.read_csv(folder / "trials.csv")
    assert {"trial", "method", "l1", "rel_l1"} <= set(trials.columns) and trials.trial.nunique() == 2


def test_tables_notebook_writes_every_table(results):
    out = results / "tables"
    assert errors(out / "tables.ipynb") == []
    for name in ("table1", "table2", "table3", "figure1"):
        assert (out / f"{name}.md").read_text().startswith("# ")
        assert r"\begin{tabular}" in (out / f"{name}.tex").read_text()
    assert (out / "figure1.png").stat().st_size > 0 and (results / "speedup" / "speedup.csv").exists()
    runs = pd.read_csv(out / "runs.csv")
    assert list(runs.columns) == list(tables.RUN_COLUMNS)
    assert sorted(zip(runs.arch, runs.method, runs.seed)) == [("alexnet", "xnor", 0), ("resnet18", "case4", 0)]
    assert set(runs.dataset) == {"embedded digits"} and set(runs.val_images) == {8}
    table1 = (out / "table1.md").read_text()
    row = "| Case 4: α ⊗ β ⊗ γ (ours) | α ∈ R^o, β ∈ R^h_out, γ ∈ R^w_out | embedded digits | 1 "
    assert row in table1
    assert "| XNOR-Net (α, K)          | analytic α, K (Eq. 2)             | — (not run)" in table1
    assert "0.766 ±" not in (out / "table2.md").read_text()  # measured, 2 trials: not the fixture's numbers
    table3 = (out / "table3.md").read_text()  # the shared row, trained once, appears in both tables
    assert "| ResNet-18      | Case 4: α ⊗ β ⊗ γ (ours) | embedded digits" in table3


def test_finished_rows_are_skipped_and_changed_ones_refused(results, capsys, monkeypatch):
    for grid, rows in ROWS.items():
        monkeypatch.setitem(tables.GRIDS, grid, rows)
    run = results / "runs" / "resnet18_case4" / "seed0"
    before = (run / "metrics.csv").stat().st_mtime_ns
    args = runner.parse_args(["table1", "--out", str(results)] + TINY)
    plan = runner._plan_run("resnet18", "case4", 0, args)
    assert plan[-1] == "skip"
    with pytest.raises(SystemExit) as exit_:
        runner.main(["table1", "--out", str(results), "--lr", "0.01"] + TINY)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "was trained with other parameters (lr 0.001 -> 0.01)" in err and "--force" in err
    assert (run / "metrics.csv").stat().st_mtime_ns == before
    # An interrupted run (checkpoint, no summary) resumes.
    (run / "summary.json").rename(results / "summary.bak")
    try:
        assert runner._plan_run("resnet18", "case4", 0, args)[2]["resume"] is True
    finally:
        (results / "summary.bak").rename(run / "summary.json")


def test_runner_parameters_are_the_notebooks_parameters(tmp_path):
    args = runner.parse_args(["all", "--train", "--out", str(tmp_path)])
    declared = papermill.inspect_notebook(str(runner.NOTEBOOKS / "train.ipynb"))
    assert set(runner.row_parameters("resnet18", "xnor", 0, tmp_path, args)) == set(declared)
    assert set(papermill.inspect_notebook(str(runner.NOTEBOOKS / "tables.ipynb"))) == {"results", "out", "render"}
    reconstruction = papermill.inspect_notebook(str(runner.NOTEBOOKS / "reconstruction.ipynb"))
    assert {"trials", "device", "out"} <= set(reconstruction)
    for name in ("train", "reconstruction", "tables"):  # literal defaults only in the parameters cell
        nb = nbformat.read(runner.NOTEBOOKS / f"{name}.ipynb", as_version=4)
        cell = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(cell) == 1 and nb.metadata.kernelspec.name == "python3"
        assert all(c.outputs == [] for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    assert not any(tmp_path.iterdir())


def test_help_shows_values_not_names():
    """The docstring (shown by --help) states each grid's seeds, epochs, step and rows as numbers."""
    doc = " ".join(runner.__doc__.split())
    digits, fashion, check = (grids.GRID_PLANS[k] for k in (("digits", "any"), ("fashion-mnist", "cuda"),
                                                             ("fashion-mnist", "cpu")))
    assert f"{len(digits.seeds)} seeds ({' '.join(map(str, digits.seeds))}) for {digits.epochs} epochs" in doc
    assert digits.lr_step == fashion.lr_step == 1 and "divided by 10 after every epoch" in doc
    assert f"{len(fashion.rows)} rows" in doc and f"{len(fashion.seeds)} seeds for {fashion.epochs} epochs" in doc
    assert f"into ``{fashion.out}``" in doc and len(check.rows) == 2 and check.seeds == (0,)
    assert (check.epochs, check.limit_batches, check.batch_size) == (1, 1, 8)
    assert "one seed, one epoch of one batch of 8 images" in doc


def test_seeds_epochs_and_shared_rows(tmp_path):
    digits = runner.parse_args(["all", "--train", "--out", str(tmp_path)])
    plan = grids.GRID_PLANS[("digits", "any")]
    assert digits.seeds == list(plan.seeds) and len(digits.seeds) >= 5
    params = runner.row_parameters("resnet18", "xnor", 3, tmp_path, digits)
    assert (params["seed"], params["epochs"], params["lr_step"]) == (3, plan.epochs, plan.lr_step)
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split).mkdir(parents=True)
    imagenet = runner.parse_args(["all", "--train", "--data", str(tmp_path / "imagenet"),
                                  "--out", str(tmp_path / "r")])
    params = runner.row_parameters("resnet18", "xnor", 0, tmp_path, imagenet)
    assert imagenet.seeds == [0] and params["epochs"] is None and params["lr_step"] is None  # the paper's recipe
    rows = runner.unique_rows(("table1", "table3"))
    assert len(rows) == len(set(rows)) == len(set(tables.GRIDS["table1"]) | set(tables.GRIDS["table3"]))
    assert runner.unique_rows(("table3",)) == tables.GRIDS["table3"]


def test_unknown_parameter_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="declares no parameter bogus"):
        runner.execute(runner.NOTEBOOKS / "tables.ipynb", tmp_path / "x.ipynb", {"out": "x", "bogus": 1})
    assert not any(tmp_path.iterdir())


def test_cli_flags():
    assert runner.cli_flags(arch="alexnet", data=None, batch_size=8, resume=False, quiet=True, lr=0.01) == \
        ["--arch", "alexnet", "--batch-size", "8", "--no-resume", "--quiet", "--lr", "0.01"]


def test_run_training_failure_is_an_exception(tmp_path):
    with pytest.raises(ValueError, match="unknown arch 'vgg'"):
        runner.run_training(TrainConfig(arch="vgg", out=str(tmp_path / "r")))
    with pytest.raises(TrainingError, match="cannot write there"):
        runner.run_training(TrainConfig(input_size=8, out="/proc/xnorpp-no-such-run"))
    with pytest.raises(ValueError, match="nproc"):
        runner.run_training(TrainConfig(out=str(tmp_path / "r")), nproc=0)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv, message", [
    (["table2"], "invalid choice: 'table2'"),
    (["all", "--nproc", "0"], "--nproc must be an integer from 1 to"),
    (["table1", "--epochs", "0"], "--epochs must be an integer from 1 to"),
    (["table3", "--lr", "-1"], "--lr must be a number in (0, 10]"),
    (["all", "--data", "/no/such/folder"], "no train/ or val/ folder"),
    (["all", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["all", "--seeds", "1", "1"], "--seeds repeats a seed: 1 1"),
    (["all", "--threads", "0"], "--threads must be an integer from 1 to"),
    (["table1"], "no runs there yet; pass --train to start training the grid in it"),
    (["table1", "--train", "--archs", "alexnet"], "--archs alexnet: table1 has no rows of that architecture"),
    (["table3", "--train", "--epochs", "0"], "error: --epochs must be an integer from 1 to 10000, got '0'"),
])
def test_bad_options_exit_2_writing_nothing(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        runner.main([*argv, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_run_training_under_torchrun(tmp_path):
    config = TrainConfig(arch="resnet18", method="xnor", epochs=1, limit_batches=1, batch_size=8, device="cpu",
                         out=str(tmp_path / "run"), quiet=True)
    summary = runner.run_training(config, nproc=2)
    assert summary["protocol"]["processes"] == 2 and summary["final"]["epoch"] == 1


def _failure(notebook, tmp_path, parameters):
    """Execute ``notebook`` expecting it to fail; the error as papermill reports it (name and message)."""
    with pytest.raises(papermill.PapermillExecutionError) as error:
        runner.execute(runner.NOTEBOOKS / notebook, tmp_path / "executed" / notebook, parameters)
    return f"{error.value.ename}: {error.value.evalue}"


@pytest.mark.parametrize("setup", ["missing", "empty"])
def test_tables_notebook_refuses_a_results_folder_without_results(tmp_path, setup):
    results = tmp_path / "results"
    if setup == "empty":
        (results / "runs").mkdir(parents=True)
    error = _failure("tables.ipynb", tmp_path, {"results": str(results)})
    assert f"results folder {results}" in error and ("does not exist" if setup == "missing" else "no result") in error
    assert [p.name for p in tmp_path.iterdir()] == ["executed"] + (["results"] if setup == "empty" else [])
    assert not (results / "tables").exists()  # nothing written, and by default inside results, not elsewhere


def test_tables_notebook_writes_inside_its_results_folder_by_default(results, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(results / "reconstruction", target / "reconstruction")
    runner.execute(runner.NOTEBOOKS / "tables.ipynb", tmp_path / "tables.ipynb", {"results": str(target)})
    assert (target / "tables" / "table2.md").exists()


@pytest.mark.parametrize("notebook, parameters, message", [
    ("reconstruction.ipynb", {"loss": "l3"}, "ValueError: loss must be one of ('l1', 'l2'), got 'l3'"),
    ("train.ipynb", {"method": "case5"}, "ValueError: unknown method 'case5'; choose from"),
])
def test_notebook_errors_carry_their_message(tmp_path, notebook, parameters, message):
    assert message in _failure(notebook, tmp_path, {**parameters, "out": str(tmp_path / "out")})
    assert not (tmp_path / "out").exists()


# --- Fashion-MNIST: the GPU grid's plan, and its path check on a CPU ---------------------------------


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fashion")
    fashion_files(folder)
    return folder


def test_fashion_mnist_grid_on_a_gpu(fashion, monkeypatch):
    """What the prepared GPU command trains (planned here, nothing trained): ten rows, three seeds each."""
    monkeypatch.setattr(runner, "resolve_device", lambda prog, device: "cuda")
    args = runner.parse_args(["all", "--data", f"fashion-mnist:{fashion}", "--train"])
    plan = grids.GRID_PLANS[("fashion-mnist", "cuda")]
    assert args.results == runner.REPO / "results" / "fashion-mnist" and args.seeds == [0, 1, 2]
    assert sorted({(p[2]["arch"], p[2]["method"]) for p in args.plan}) == sorted(plan.rows)
    assert len(args.plan) == 30 and {p[3] for p in args.plan} == {"train"}
    params = args.plan[0][2]
    assert (params["epochs"], params["lr_step"], params["batch_size"], params["limit_batches"]) == (2, 1, None, None)
    assert params["data"] == f"fashion-mnist:{fashion}" and not args.results.exists()


def test_fashion_mnist_grid_on_a_cpu_is_a_path_check(fashion, tmp_path, capsys):
    out = tmp_path / "check"
    runner.main(["all", "--data", f"fashion-mnist:{fashion}", "--train", "--device", "cpu", "--out", str(out)])
    assert "a check of the path, not a result" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "runs").iterdir() if p.is_dir()) == ["resnet18_case4", "resnet18_xnor"]
    config = json.loads((out / "runs" / "resnet18_case4" / "seed0" / "config.json").read_text())
    assert (config["data"], config["epochs"], config["limit_batches"], config["batch_size"]) == (
        f"fashion-mnist:{fashion}", 1, 1, 8)
    assert sorted(p.name for p in out.iterdir()) == ["runs", "tables"]  # no Table 2 study, no Figure 1
    assert sorted(p.name for p in (out / "tables").glob("*.md")) == ["table1.md", "table3.md"]
    table1 = (out / "tables" / "table1.md").read_text()
    row = "| Case 4: α ⊗ β ⊗ γ (ours) | α ∈ R^o, β ∈ R^h_out, γ ∈ R^w_out | Fashion-MNIST | 1 "
    assert row in table1
    assert "On Fashion-MNIST: 1 epoch(s)" in table1 and "(`python -m studies.notebooks" not in table1


@pytest.mark.parametrize("out, message", [
    (None, "on cpu the fashion-mnist grid runs only a check of its path (not a result): pass --out DIR outside "
           "results/"),
    ("results/fashion-mnist-check", "--out results/fashion-mnist-check: on cpu the fashion-mnist grid runs only a "
                                    "check of its path, which is not a result: write it outside results/"),
])
def test_the_path_check_never_writes_into_results(fashion, capsys, out, message):
    before = sorted((runner.REPO / "results").iterdir())
    with pytest.raises(SystemExit) as exit_:
        runner.main(["all", "--data", f"fashion-mnist:{fashion}", "--train", "--device", "cpu"]
                    + ([] if out is None else ["--out", str(runner.REPO / out)]))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err.replace(str(runner.REPO) + "/", "")
    assert sorted((runner.REPO / "results").iterdir()) == before


def test_a_damaged_file_stops_the_grid_before_it_starts(tmp_path, capsys):
    folder = tmp_path / "fashion"
    fashion_files(folder)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(SystemExit) as exit_:
        runner.main(["all", "--data", f"fashion-mnist:{folder}", "--train", "--device", "cpu", "--out",
                     str(tmp_path / "out")])
    assert exit_.value.code == 2 and "train-labels-idx1-ubyte.gz is a damaged gzip file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

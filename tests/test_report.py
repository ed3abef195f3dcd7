"""The generated report: --check on the repository, a stale block after a CSV is edited, verdicts that
follow the numbers, and the hardware record."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from studies import report as report_cli
from xnorpp_core import provenance
from xnorpp_core.report import findings, generated, verdicts
from xnorpp_core.report.machine import cpu_label, machine_label, short_label
from xnorpp_core.training import grids

REPO = Path(__file__).resolve().parents[1]


def test_committed_text_matches_the_result_files():
    assert generated.stale(REPO) == []  # else: python -m studies.report, and read the diff


@pytest.fixture
def copy(tmp_path):
    """A copy of the repository's generated text and result files."""
    shutil.copytree(REPO / "results", tmp_path / "results", ignore=shutil.ignore_patterns("*.pt", "*.ipynb", "*.png"))
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    return tmp_path


def test_check_fails_naming_the_stale_blocks_after_a_csv_is_edited(copy, capsys):
    report_cli.main(["--repo", str(copy)])
    assert report_cli.main(["--check", "--repo", str(copy)]) == []
    table2 = copy / "results" / "reconstruction" / "table2.csv"
    frame = pd.read_csv(table2)
    frame.loc[frame.method == "case1", "l1_mean"] = frame.loc[frame.method == "xnor", "l1_mean"].item() / 2.5
    frame.to_csv(table2, index=False)
    with pytest.raises(SystemExit) as e:
        report_cli.main(["--check", "--repo", str(copy)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    for name in ("README.md: at-a-glance", "results/REPORT.md", "docs/reconstruction.md: table2"):
        assert f"stale: {name}" in err
    assert "docs/training.md" not in err and "results/README.md" not in err  # untouched by Table 2
    # The finding reverses with the numbers: Case 1 now 2.5x closer, as the paper prints.
    report_cli.main(["--repo", str(copy)])
    assert "**reproduced**: Case 1 is 2.50x closer" in (copy / "README.md").read_text()
    assert report_cli.main(["--check", "--repo", str(copy)]) == []


def test_unknown_block_and_missing_results_fail_with_one_line(copy, capsys):
    (copy / "docs" / "extra.md").write_text("<!-- generated:nothing -->\n<!-- /generated:nothing -->\n")
    with pytest.raises(ValueError, match="unknown generated block 'nothing'"):
        generated.stale(copy)
    with pytest.raises(SystemExit) as e:
        report_cli.main(["--repo", str(copy / "docs")])
    assert e.value.code == 2 and "no results/ folder" in capsys.readouterr().err


def test_unreadable_result_file_names_its_reader(copy):
    table2 = copy / "results" / "reconstruction" / "table2.csv"
    pd.read_csv(table2).drop(columns="l1_mean").to_csv(table2, index=False)
    with pytest.raises(findings.ReportError, match="read_table2.*l1_mean"):
        findings.read_findings(copy / "results")


def test_fill_replaces_only_the_block():
    text = "a\n<!-- generated:x -->\nold\n<!-- /generated:x -->\nb\n"
    assert generated.fill(text, {"x": "new"}) == "a\n<!-- generated:x -->\nnew\n<!-- /generated:x -->\nb\n"


# ---------------------------------------------------------------- verdicts follow the numbers
def test_table2_verdicts_reverse():
    assert verdicts.verdict_table2_ratio(2.5, 2.5).startswith("**reproduced**")
    assert verdicts.verdict_table2_ratio(2.5 * 0.81, 2.5).startswith("**reproduced**")  # inside 20%
    assert verdicts.verdict_table2_ratio(2.5 * 0.79, 2.5).startswith("**not reproduced**")
    assert verdicts.verdict_table2_ratio(1.004, 2.5).startswith("**not reproduced**")
    assert verdicts.verdict_table2_ratio(0.9, 2.5).startswith("**contradicted**")
    against = verdicts.verdict_nested_order(14.5, 14.6, 0.037, 0.035)
    assert against.startswith("**not reproduced**") and "global optima" in against
    assert verdicts.verdict_nested_order(14.6, 14.5, 0.037, 0.035).startswith("**holds**")
    # The paper's order with Case 4 above Case 3: ours with Case 4 below is not the nesting's order.
    other = verdicts.verdict_nested_order(14.6, 14.5, 0.035, 0.037)
    assert other.startswith("**not reproduced**") and "global optima" not in other


def test_protocol_verdict_compares_l1_and_counts_each_metric():
    orders = {"l1": (68, [("c19/heldout/l1", 1.0)]), "l2": (68, [("c18/heldout/l2", 0.6), ("c19/heldout/l2", 1.0)])}
    text = verdicts.verdict_protocol(1.42, "c04/train/l1", 2.5, orders)
    assert text.startswith("no cell reaches the paper's L1 ratio 2.5 (best 1.42, c04/train/l1)")
    assert "L1: 1 of 68 cell-split rows (c19/heldout/l1 in 100% of its trials)" in text
    assert "L2: 2 of 68 cell-split rows (c18/heldout/l2 in 60% of its trials" in text
    assert verdicts.verdict_protocol(2.6, "c04/train/l1", 2.5, orders).startswith("a cell reaches")
    assert "L1: none of 68" in verdicts.verdict_protocol(1.0, "c00/train/l1", 2.5, {"l1": (68, [])})


def test_protocol_finding_reads_the_l1_rows_only(copy):
    claims = copy / "results" / "protocol_sweep" / "claims.csv"
    frame = pd.read_csv(claims)
    frame.loc[frame.metric == "l2", "xnor_over_case1"] = 3.0  # a mean-squared ratio is not the paper's metric
    frame.to_csv(claims, index=False)
    finding = findings.read_protocol(copy / "results")[0]
    assert finding.verdict.startswith("no cell reaches") and "in L2 from 3.00 to 3.00" in finding.ours
    frame.loc[frame.claim_id == "c04/train/l1", "xnor_over_case1"] = 2.6
    frame.loc[frame.claim_id == "c00/train/l1", ["paper_order", "paper_order_trials"]] = [True, 0.3]
    frame.to_csv(claims, index=False)
    finding = findings.read_protocol(copy / "results")[0]
    assert finding.verdict.startswith("a cell reaches the paper's L1 ratio 2.5 (best 2.60, c04/train/l1)")
    assert "c00/train/l1 in 30% of its trials" in finding.verdict


def test_network_verdict_reverses_with_each_precision():
    band = verdicts.NETWORK_EQUAL_BAND
    fast = {"fp32": (6.0, 7.0), "bf16": (3.0, 3.5), "int8": (2.0, 2.2)}
    assert verdicts.verdict_network(fast).startswith("**faster** than fp32 and bf16 and int8 by the median call")
    assert "slower" not in verdicts.verdict_network(fast) and "about" not in verdicts.verdict_network(fast)
    mixed = {**fast, "int8": (1 - 2 * band, 1.2)}  # faster by the fastest call, slower by the median: median rules
    assert verdicts.verdict_network(mixed).startswith("**faster** than fp32 and bf16; **slower** than int8")
    near = {**fast, "int8": (1 + band / 2, 1.0)}
    assert verdicts.verdict_network(near).startswith("**faster** than fp32 and bf16; **about as fast** as int8")
    assert "**about as fast** as int8" in verdicts.verdict_network({**fast, "int8": (1 - band / 2, 1.0)})
    slow = {"fp32": (0.5, 0.9)}
    assert verdicts.verdict_network(slow).startswith("**slower** than fp32 by the median call (0.5x fp32)")
    assert "less than" not in verdicts.verdict_network({"fp32": (12.0, 13.0)}, 11.0)


def _speedup_csv(folder, rows):
    folder.mkdir(parents=True)
    columns = ["cpu", "method", "real_layers", "threads", "batch", "path"] + [
        f"speedup_vs_{p}{s}" for p in ("fp32", "bf16", "int8") for s in ("_median", "")]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "speedup.csv", index=False)


def test_network_finding_takes_the_least_headline_ratio_per_precision(tmp_path):
    """The verdict's ratios are, for each real-layer option, the least over its packed networks at 1 thread,
    batch 1; other settings only in the details; the CPU's arithmetic path is named."""
    _speedup_csv(tmp_path / "inference", [
        ("cpu", "case1", "float", 1, 1, "XNOR-popcount", 6.0, 7.0, 3.0, 3.1, 2.5, 2.6),
        ("cpu", "case4", "float", 1, 1, "XNOR-popcount", 6.5, 6.9, 3.2, 3.3, 0.8, 1.9),
        ("cpu", "case4", "int8", 1, 1, "XNOR-popcount", 9.0, 9.9, 4.0, 4.1, 3.0, 3.3),
        ("cpu", "case4", "float", 2, 8, "XNOR-popcount", 0.5, 0.5, 0.4, 0.4, 0.1, 0.1)])
    f = findings._read_network(tmp_path / "inference", None)
    assert f.verdict.startswith(
        "float real layers: **faster** than fp32 and bf16; **slower** than int8 by the median call "
        "(6.0x fp32, 3.0x bf16, 0.8x int8); int8 real layers: **faster** than fp32 and bf16 and int8 "
        "by the median call (9.0x fp32, 4.0x bf16, 3.0x int8) (load average before the run not recorded")
    # beside the headline, the weakest committed setting, whatever its precision
    assert "; weakest of the 4 settings: **slower** than int8 (0.1x, case4, 2 threads, batch 8)" in f.verdict
    assert "case4 (int8 real layers), 1 thread, batch 1: 9.0x (9.9x) over fp32" in f.ours
    assert "XNOR-popcount" in f.ours and "2 threads" not in f.ours and "2 threads, batch 8" in f.details[0]
    assert f.brief.startswith("4 settings: methods case1 and case4; real layers float and int8; threads 1 and 2")


def test_network_verdict_marks_a_disturbed_weakest_setting_and_names_the_weakest_quiet_one(tmp_path):
    _speedup_csv(tmp_path / "inference", [
        ("cpu", "case1", "float", 1, 1, "XNOR-popcount", 6.0, 7.0, 3.0, 3.1, 2.5, 2.6),
        ("cpu", "case1", "float", 1, 8, "XNOR-popcount", 4.0, 4.1, 2.0, 2.1, 1.01, 1.05),
        ("cpu", "case1", "float", 2, 8, "XNOR-popcount", 3.0, 3.1, 1.5, 1.6, 0.995, 1.2)])
    run = tmp_path / "inference" / "run.json"
    run.write_text(json.dumps({"load_average_before": [0.9, 1, 1], "environment": {"cpu_count": 2}}))
    verdict = findings._read_network(tmp_path / "inference", None).verdict
    assert verdict.startswith("**faster** than fp32 and bf16 and int8 by the median call (6.0x fp32, 3.0x bf16, "
                              "2.5x int8); weakest")  # 1 thread beside 0.9 of load: undisturbed, no mark
    assert verdict.endswith(
        "weakest of the 3 settings: **about as fast** as int8 (0.995x, case1, 2 threads, batch 8) (disturbed "
        "timings: 2 threads beside a load average of 0.9 on 2 cores); weakest of the 2 settings with undisturbed "
        "timings: **about as fast** as int8 (1.01x, case1, 1 thread, batch 8)")
    run.write_text(json.dumps({"load_average_before": [1.2, 1, 1], "environment": {"cpu_count": 2}}))
    verdict = findings._read_network(tmp_path / "inference", None).verdict
    assert "2.5x int8) (disturbed timings: 1 thread beside a load average of 1.2 on 2 cores); weakest" in verdict
    assert "undisturbed" not in verdict  # every setting disturbed: none to name


def test_network_finding_reads_files_with_fp32_only(tmp_path):
    folder = tmp_path / "inference"
    folder.mkdir()
    pd.DataFrame([("cpu", "case1", 1, 1, 4.0, 5.0)], columns=[
        "cpu", "method", "threads", "batch", "speedup_vs_best_real_median", "speedup_vs_best_real"]).to_csv(
        folder / "speedup.csv", index=False)
    f = findings._read_network(folder, None)
    assert f.verdict.startswith("**faster** than fp32 by the median call (4.0x fp32)")
    assert "bf16 not timed" in f.ours and "int8 not timed" in f.ours


def _row(method, low, high, n=5):
    return {"arch": "resnet18", "method": method, "diff_n": n, "low": low, "high": high}


def test_compression_verdict_reverses():
    text = verdicts.verdict_compression(4.57, 11.07, 32.0)
    assert "~32x model compression **not reached** by the whole model (4.57x to 11.1x)" in text
    assert "~64x space saving **not reached**" in text
    assert "**holds for some methods only**" in verdicts.verdict_compression(4.57, 31.0, 32.0)
    assert verdicts.verdict_compression(31.0, 33.0, 32.0).startswith("~32x model compression **holds**")
    assert "~64x space saving **holds**" in verdicts.verdict_compression(62.0, 64.0, 64.0)
    assert "**not reached**" in verdicts.verdict_compression(29.0, 30.0, 32.0)  # more than 5% short


def test_compression_finding_reads_the_model_file_ratios(copy):
    size = copy / "results" / "model_size" / "model_size.csv"
    frame = pd.read_csv(size)
    finding = findings.read_kernel(copy / "results")[1]
    assert finding.artifact.startswith("Model size") and "**not reached** by the whole model" in finding.verdict
    assert "evaluation.json" in " ".join(finding.files) and "exported model file" in finding.ours
    case4 = frame.set_index("method").loc["case4"]
    assert f"{case4.compression_vs_real:.2f}x (" in finding.ours and "int8 form" in finding.ours
    assert finding.command == "python -m studies.model_size"
    frame["compression_vs_real"] = 33.0
    frame.to_csv(size, index=False)
    assert findings.read_kernel(copy / "results")[1].verdict.startswith("~32x model compression **holds**")


def test_kernel_network_training_and_step_verdicts_reverse():
    assert verdicts.verdict_kernel(60.0, 64.0).startswith("**reaches**")
    assert verdicts.verdict_kernel(64.0 * 0.89, 64.0).startswith("**faster, below")  # under 90%
    assert verdicts.verdict_kernel(13.3, 64.0).startswith("**faster, below")
    assert verdicts.verdict_kernel(0.5, 64.0).startswith("**slower**")
    assert "less than the single" in verdicts.verdict_network({"fp32": (2.9, 3.0)}, 11.0)
    assert "at or above the single" in verdicts.verdict_network({"fp32": (12.0, 13.0)}, 11.0)
    assert verdicts.verdict_training(98.3).startswith("trains")
    assert verdicts.verdict_training(40.0).startswith("**does not train**")
    assert verdicts.verdict_train_step({"xnor": 1.2, "case4": 1.1}).startswith("every method within 1.25x")
    assert verdicts.verdict_train_step({"xnor": 1.3, "case4": 1.1}) == "xnor above 1.25x the real step"


def test_formula_verdicts_reverse():
    assert verdicts.verdict_formula(63.69, 63.69).startswith("**matches**")
    assert "truncated, not rounded" in verdicts.verdict_formula(63.696, 63.69)
    assert verdicts.verdict_formula(63.972, 63.98).startswith("**differs in the last printed digit**")
    assert verdicts.verdict_formula(60.0, 63.69).startswith("**differs**")


def test_each_rule_states_the_constant_its_verdict_reads(monkeypatch):
    rules = verdicts.rules_text()
    for stated in ("within 20% (relative)", "at least 90% of Eq. 9's", "at least 95% of it", "above 50%",
                   "*within* 1.25x", "95% interval", "unrounded"):
        assert stated in rules
    monkeypatch.setattr(verdicts, "TABLE2_TOLERANCE", 0.7)
    monkeypatch.setattr(verdicts, "KERNEL_REACHES", 0.5)
    monkeypatch.setattr(verdicts, "STEP_LIMIT", 1.5)
    rules = verdicts.rules_text()
    assert "within 70% (relative)" in rules and "at least 50% of Eq. 9's" in rules and "*within* 1.5x" in rules
    assert verdicts.verdict_table2_ratio(1.004, 2.5).startswith("**reproduced**")
    assert verdicts.verdict_kernel(40.0, 64.0).startswith("**reaches**")
    assert verdicts.verdict_train_step({"xnor": 1.3}).startswith("every method within 1.5x")


def test_report_lists_the_rules_and_the_recorded_commands(copy):
    run = copy / "results" / "inference" / "run.json"
    record = json.loads(run.read_text())
    record["command"] = "python -m studies.bench_inference --repeats 7"
    run.write_text(json.dumps(record))
    report_cli.main(["--repo", str(copy)])
    report = (copy / "results" / "REPORT.md").read_text()
    assert "## How each verdict is chosen" in report and verdicts.rules_text() in report
    assert "- command: `python -m studies.bench_inference --repeats 7`" in report
    assert "`python -m studies.bench_inference --repeats 7`" in (copy / "results" / "README.md").read_text()


# ---------------------------------------------------------------- the machine
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 2
flags\t\t: fpu sse4_2 popcnt avx avx2 avx512f avx512_vpopcntdq amx_tile

processor\t: 1
vendor_id\t: OtherVendor
"""


def test_cpu_details_from_cpuinfo():
    d = provenance.cpu_details(CPUINFO)
    assert (d["vendor"], d["family"], d["model"], d["stepping"]) == ("GenuineIntel", 6, 207, 2)
    assert d["isa"] == ["sse4_2", "popcnt", "avx", "avx2", "avx512f", "avx512_vpopcntdq", "amx_tile"]
    assert provenance.cpu_details("")["isa"] == []


def test_environment_keeps_its_keys_and_adds_details():
    env = provenance.environment()
    assert {"date_utc", "python", "platform", "cpu", "cpu_count", "torch_threads", "device", "versions"} <= set(env)
    assert set(env["cpu_details"]) == {"vendor", "family", "model", "stepping", "isa", "torch_capability"}


def test_machine_label():
    env = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_count": 2, "torch_threads": 1, "python": "3.11.7",
           "versions": {"torch": "2.14.1"}, "cpu_details": provenance.cpu_details(CPUINFO)}
    label = machine_label(env)
    assert label == ("Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 207; avx2 avx512f avx512_vpopcntdq "
                     "amx_tile), 1 thread of 2 cores, torch 2.14.1, Python 3.11.7")
    assert short_label(label) == "Intel(R) Xeon(R) Processor, 1 thread of 2 cores, torch 2.14.1"
    assert machine_label(env, threads="1 and 2").startswith("Intel(R) Xeon(R) Processor (") and "1 and 2 threads" in \
        machine_label(env, threads="1 and 2")
    assert cpu_label({"cpu": "AMD EPYC"}) == "AMD EPYC" and machine_label({}) == "an unrecorded machine"
    gpu = machine_label({**env, "device": "cuda", "gpu": "NVIDIA H200", "cuda": "13.0"})
    assert gpu.startswith("GPU NVIDIA H200 (CUDA 13.0), host CPU Intel") and "thread" not in gpu


def test_timings_beside_a_busy_machine_are_flagged(tmp_path):
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"load_average_before": [0.8, 1, 1], "environment": {"cpu_count": 2}}))
    assert findings._busy(run, [1]) == ""  # one thread beside 0.8 of load: a core stays free
    assert findings._busy(run, [1, 2]) == " (disturbed timings: 2 threads beside a load average of 0.8 on 2 cores)"
    run.write_text(json.dumps({"load_average_before": [1.57, 1, 1], "environment": {"cpu_count": 2}}))
    assert "1 and 2 threads beside a load average of 1.6" in findings._busy(run, [1, 2])  # 1.57, not rounded to 2
    run.write_text(json.dumps({"load_average_before": [0.0, 1, 1], "environment": {"cpu_count": 2}}))
    assert findings._busy(run, [1, 2]) == ""
    assert "not recorded" in findings._busy(tmp_path / "absent.json", [2])  # no load: it cannot be ruled out
    disturbed = provenance.disturbed_threads
    assert disturbed(0.4, 2, [1, 2]) == [2] and disturbed(1.01, 2, [1]) == [1]
    assert disturbed(1.0, 2, [1]) == [] and disturbed(1.0, 2, [1, 2]) == [2]  # load + t equal to the cores: quiet
    assert disturbed(None, 2, [1]) == [] and disturbed(0.5, None, [1]) == []


def test_results_readme_records_go_stale_when_a_run_changes(copy, capsys):
    report_cli.main(["--repo", str(copy)])
    run = copy / "results" / "speedup" / "run.json"
    record = json.loads(run.read_text())
    record["environment"]["cpu"] = "Another CPU"
    run.write_text(json.dumps(record))
    with pytest.raises(SystemExit):
        report_cli.main(["--check", "--repo", str(copy)])
    assert "stale: results/README.md: records" in capsys.readouterr().err
    rows = generated.read_records(copy / "results")
    assert ("speedup/", "run.json", "`python -m studies.speedup`") == rows[[r[0] for r in rows].index("speedup/")][:3]
    assert any(r[0] == "tables/" and r[1] == "none" for r in rows)


def test_network_is_set_beside_the_single_layer_only_on_the_same_cpu(tmp_path):
    _speedup_csv(tmp_path / "inference", [("cpu A", "case1", "float", 1, 1, "XNOR-popcount", 6.0, 7.0, 3.0, 3.1,
                                           2.5, 2.6)])
    layer = pd.DataFrame({"cpu": ["cpu A"], "threads": [1], "speedup": [10.0]})
    assert "less than the single binary layer's 10.0x" in findings._read_network(tmp_path / "inference", layer).verdict
    other = layer.assign(cpu="cpu B")
    assert "single binary layer" not in findings._read_network(tmp_path / "inference", other).verdict


# --- Tables 1 and 3 on Fashion-MNIST: not measured yet, then measured -----------------------------------


def test_fashion_mnist_rows_are_not_measured_yet_with_their_estimate(copy):
    found = [f for f in findings.read_findings(copy / "results") if f.artifact.startswith("Fashion-MNIST")]
    assert [f.artifact.split(":")[1].strip() for f in found] == ["Table 1", "Table 3"]
    step_ms = pd.read_csv(copy / "results" / "benchmarks" / "train_step" / "cuda" / "benchmark.csv").set_index(
        "method")["step_ms"].to_dict()
    minutes = grids.estimate_seconds(grids.GRID_PLANS[("fashion-mnist", "cuda")], step_ms) / 60
    for f in found:
        assert (f.ours, f.files, f.ran) == ("not measured yet", (), False)
        assert f.verdict == "not measured yet: the grid needs a GPU (`bash scripts/gpu_grid.sh`)"
        assert f.details[0].startswith(f"estimated, not measured: {minutes:.1f} min on one GPU for 10 rows x 3 "
                                       "seeds of 2 epochs")
    report_cli.main(["--repo", str(copy)])
    assert "| Fashion-MNIST: Table 1: ResNet-18, Cases 1-4 against XNOR-Net | every case above XNOR-Net on " \
           "ImageNet (+4.3 to +5.9 top-1) | not measured yet | not measured yet" in (copy / "README.md").read_text()


def test_fashion_mnist_rows_once_measured(copy):
    """The digits runs, relabelled as Fashion-MNIST runs, stand in for the grid's: the rows, their seeds and
    epochs, one row of run records for all of them, and the wall time the GPU script logged."""
    results = copy / "results"
    runs = results / "fashion-mnist" / "runs"
    shutil.copytree(results / "runs", runs)
    for config in runs.glob("*/*/config.json"):
        record = json.loads(config.read_text())
        config.write_text(json.dumps({**record, "data": "fashion-mnist"}))
    (results / "fashion-mnist" / "gpu").mkdir()
    (results / "fashion-mnist" / "gpu" / "steps.csv").write_text("step,exit_code,seconds\ngrid,124,540\ngrid,0,90\n")
    table1, table3 = [f for f in findings.read_findings(results) if f.artifact.startswith("Fashion-MNIST")]
    digits = [f for f in findings.read_findings(copy / "results") if f.artifact.startswith("Table 1:")][0]
    assert table1.ours == digits.ours.replace("the embedded digits", "Fashion-MNIST")
    assert table1.verdict == digits.verdict and table1.ran
    assert table1.files == ("results/fashion-mnist/tables/table1.md", "results/fashion-mnist/runs")
    assert table3.details[-1] == "wall time of the grid: 10.5 min over 2 call(s) (`fashion-mnist/gpu/steps.csv`)"
    rows, n = generated.read_records(results), len(list(runs.glob("*/*/summary.json")))
    assert [r[:2] for r in rows if "seed<N>" in r[0]] == [("runs/<arch>_<method>/seed<N>/", f"summary.json ({n} runs)"),
                                                         ("fashion-mnist/runs/<arch>_<method>/seed<N>/",
                                                          f"summary.json ({n} runs)")]
    assert not any(r[0].startswith("fashion-mnist/runs/resnet18") for r in rows)


def _tradeoff(folder, packed_ms, load):
    """A trade-off run: fp32, int8 and the packed network at 16x16 and 224x224, timed beside ``load``."""
    folder.mkdir(parents=True)
    rows = [("fp32_real_eager", "fp32", 99.7, 10.0, 40.0), ("int8_x86_real", "int8", 99.7, 2.0, 8.0),
            ("packed", "binary, packed", 97.8, *packed_ms)]
    pd.DataFrame([{"form": f, "precision": p, "top1": a, "median_ms_16": s, "fastest_ms_16": s,
                   "median_ms_224": b, "fastest_ms_224": b} for f, p, a, s, b in rows]).to_csv(
        folder / "tradeoff.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"load_average_before": [load, 1, 1],
                                                 "environment": {"cpu_count": 2}}))
    return findings.read_tradeoff(folder.parents[2])[0]


def test_tradeoff_verdict_follows_the_numbers_and_says_when_its_timings_are_disturbed(tmp_path):
    quiet = _tradeoff(tmp_path / "a" / "inference" / "digits" / "tradeoff", (1.0, 4.0), 0.5)
    assert quiet.verdict == ("float real layers: at 16x16 **faster** than fp32 and int8 by the median call "
                             "(10.0x fp32, 2.0x int8); at 224x224 **faster** than fp32 and int8 by the median call "
                             "(10.0x fp32, 2.0x int8)")
    busy = _tradeoff(tmp_path / "b" / "inference" / "digits" / "tradeoff", (2.05, 16.0), 1.07)
    assert busy.verdict == ("float real layers: at 16x16 **faster** than fp32; **about as fast** as int8 by the "
                            "median call (4.9x fp32, 1.0x int8); at 224x224 **faster** than fp32; **slower** than "
                            "int8 by the median call (2.5x fp32, 0.5x int8) (disturbed timings: 1 thread beside a "
                            "load average of 1.1 on 2 cores)")
    assert "top-1 97.8%" in busy.ours and "99.7%" in busy.ours


def test_sanitizer_record_gives_the_verdict_and_the_docs_sentence(tmp_path):
    assert verdicts.verdict_sanitizer(0, 0, 0) == "**passes with no sanitizer report** (exit status 0)"
    assert verdicts.verdict_sanitizer(134, 1, None) == ("**fails**: exit status 134, 1 sanitizer report, no test "
                                                         "count (the run stopped before its end)")
    assert verdicts.verdict_sanitizer(1, 0, 2) == "**fails**: exit status 1, 2 failed tests"
    assert verdicts.verdict_sanitizer(0, 1, 0).startswith("**fails**")  # a report, though pytest passed
    assert findings.read_sanitizer(tmp_path)[0].verdict.startswith("not run yet")
    (tmp_path / "sanitize").mkdir()
    record = {"command": "bash scripts/sanitize.sh", "compiler": "c++ (Debian 12.2.0-14) 12.2.0",
              "flags": ["-fsanitize=address,undefined"], "backends": {"cpp": "XNOR-popcount"},
              "test_files": ["tests/test_packed.py"], "tests": 10, "passed": 8, "failed": 0, "skipped": 2,
              "exit_status": 0, "sanitizer_reports": 0, "environment": {"cpu": "AMD EPYC", "cpu_count": 2}}
    (tmp_path / "sanitize" / "run.json").write_text(json.dumps(record))
    found = findings.read_sanitizer(tmp_path)[0]
    assert found.verdict == "**passes with no sanitizer report** (exit status 0)" and not found.glance
    assert found.ours.startswith("10 tests run (8 passed, 0 failed, 2 skipped) of `test_packed.py`")
    assert "c++ (Debian 12.2.0-14) 12.2.0" in found.ours and "AMD EPYC" in found.machine
    sentence = generated.BLOCKS["sanitizer"]([found], [], "../")
    assert sentence.startswith("The recorded run ([`run.json`](../") and sentence.endswith(
        "**passes with no sanitizer report** (exit status 0).")
    assert "AddressSanitizer" not in generated.glance_table([found])  # a section of the report, not a row
    (tmp_path / "sanitize" / "run.json").write_text(json.dumps({**record, "exit_status": 134, "tests": None,
                                                                "sanitizer_reports": 1, "failed": None}))
    assert findings.read_sanitizer(tmp_path)[0].verdict.startswith("**fails**: exit status 134, 1 sanitizer report")


def test_check_recomputes_the_trained_layer_claims_from_the_per_image_distances(copy, capsys):
    """One held-out distance of one image moved: the intervals recomputed from per_image.csv no longer give the
    committed claims.csv, and --check says which, in one line, with exit status 2."""
    images = copy / "results" / "reconstruction" / "trained" / "per_image.csv"
    frame = pd.read_csv(images)
    row = frame.index[(frame.split == "heldout") & (frame.depth == 3)][0]
    frame.loc[row, "case4"] = frame.loc[row, "case4"] * 1.001
    frame.to_csv(images, index=False)
    with pytest.raises(SystemExit) as e:
        report_cli.main(["--check", "--repo", str(copy)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "claims.csv case3_minus_case4" in err and "recomputed from per_image.csv" in err

"""The generated report: --check on the repository, a stale block after a CSV is edited, verdicts that
follow the numbers, and the hardware record."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from studies import report as report_cli
from xnorpp_core import provenance
from xnorpp_core.report import findings, generated
from xnorpp_core.report.machine import cpu_label, machine_label, short_label

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
    assert "docs/training.md" not in err  # untouched by Table 2
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
    assert findings.verdict_table2_ratio(2.5, 2.5).startswith("**reproduced**")
    assert findings.verdict_table2_ratio(1.004, 2.5).startswith("**not reproduced**")
    assert findings.verdict_table2_ratio(0.9, 2.5).startswith("**contradicted**")
    assert findings.verdict_nested_order(14.5, 14.6, 0.037, 0.035).startswith("**contradicted**")
    assert findings.verdict_nested_order(14.6, 14.5, 0.037, 0.035).startswith("**holds**")


def test_formula_kernel_weights_network_protocol_verdicts_reverse():
    assert findings.verdict_formula(63.69, 63.69).startswith("**matches**")
    assert "truncated, not rounded" in findings.verdict_formula(63.696, 63.69)
    assert findings.verdict_formula(63.972, 63.98).startswith("**differs in the last printed digit**")
    assert findings.verdict_formula(60.0, 63.69).startswith("**differs**")
    assert findings.verdict_kernel(60.0, 64.0).startswith("**reaches**")
    assert findings.verdict_kernel(13.3, 64.0).startswith("**faster, below")
    assert findings.verdict_kernel(0.5, 64.0).startswith("**slower**")
    assert findings.verdict_weights(32.0).startswith("**holds**")
    assert findings.verdict_weights(11.0).startswith("**differs**")
    assert findings.verdict_protocol(2.01, 2.5, 0, 10).startswith("no cell reaches")
    assert findings.verdict_protocol(2.6, 2.5, 3, 10).startswith("a cell reaches")


def test_network_verdict_reverses_with_each_precision():
    band = findings.NETWORK_EQUAL_BAND
    fast = {"fp32": (6.0, 7.0), "bf16": (3.0, 3.5), "int8": (2.0, 2.2)}
    assert findings.verdict_network(fast).startswith("**faster** than fp32 and bf16 and int8 by the median call")
    assert "slower" not in findings.verdict_network(fast) and "about" not in findings.verdict_network(fast)
    mixed = {**fast, "int8": (1 - 2 * band, 1.2)}  # faster by the fastest call, slower by the median: median rules
    assert findings.verdict_network(mixed).startswith("**faster** than fp32 and bf16; **slower** than int8")
    near = {**fast, "int8": (1 + band / 2, 1.0)}
    assert findings.verdict_network(near).startswith("**faster** than fp32 and bf16; **about as fast** as int8")
    assert "**about as fast** as int8" in findings.verdict_network({**fast, "int8": (1 - band / 2, 1.0)})
    slow = {"fp32": (0.5, 0.9)}
    assert findings.verdict_network(slow).startswith("**slower** than fp32 by the median call (0.5x fp32)")
    assert "less than the single" in findings.verdict_network({"fp32": (2.9, 3.0)}, 11.0)
    assert "less than" not in findings.verdict_network({"fp32": (12.0, 13.0)}, 11.0)


def _speedup_csv(folder, rows):
    folder.mkdir(parents=True)
    columns = ["cpu", "method", "real_layers", "threads", "batch", "path"] + [
        f"speedup_vs_{p}{s}" for p in ("fp32", "bf16", "int8") for s in ("_median", "")]
    pd.DataFrame(rows, columns=columns).to_csv(folder / "speedup.csv", index=False)


def test_network_finding_takes_the_least_headline_ratio_per_precision(tmp_path):
    """The verdict's ratios are the least over the packed networks at 1 thread, batch 1; other settings only in
    the details; the CPU's arithmetic path is named."""
    _speedup_csv(tmp_path / "inference", [
        ("cpu", "case1", "float", 1, 1, "XNOR-popcount", 6.0, 7.0, 3.0, 3.1, 2.5, 2.6),
        ("cpu", "case4", "float", 1, 1, "XNOR-popcount", 6.5, 6.9, 3.2, 3.3, 0.8, 1.9),
        ("cpu", "case4", "int8", 1, 1, "XNOR-popcount", 9.0, 9.9, 4.0, 4.1, 3.0, 3.3),
        ("cpu", "case4", "float", 2, 8, "XNOR-popcount", 0.5, 0.5, 0.4, 0.4, 0.1, 0.1)])
    f = findings._read_network(tmp_path / "inference", None)
    assert f.verdict.startswith("**faster** than fp32 and bf16; **slower** than int8 by the median call "
                                "(6.0x fp32, 3.0x bf16, 0.8x int8)")
    assert "case4 (int8 real layers), 1 thread, batch 1: 9.0x (9.9x) over fp32" in f.ours
    assert "XNOR-popcount" in f.ours and "2 threads" not in f.ours and "2 threads, batch 8" in f.details[0]


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


def test_rows_verdict_states_orderings_only_where_the_interval_excludes_zero():
    paper_gaps = {("resnet18", "case1"): 4.3, ("resnet18", "direct"): -9.0}
    above = findings.verdict_rows([_row("case1", 0.5, 2.0), _row("direct", -3.0, -1.0)], paper_gaps)
    assert above == "same side of XNOR-Net as the paper: resnet18 case1, resnet18 direct"
    reversed_ = findings.verdict_rows([_row("case1", -2.0, -0.5)], paper_gaps)
    assert reversed_ == "**opposite side** of XNOR-Net from the paper: resnet18 case1"
    assert findings.verdict_rows([_row("case1", -0.5, 2.0)], paper_gaps).startswith("not separable")
    assert findings.verdict_rows([_row("case1", 1.0, 2.0, n=1)], paper_gaps).startswith("fewer than 2")


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
    assert "2 threads beside a load average of 0.8 on 2 cores" in findings._busy(run, [1, 2])
    run.write_text(json.dumps({"load_average_before": [0.1, 1, 1], "environment": {"cpu_count": 2}}))
    assert findings._busy(run, [1, 2]) == ""
    assert findings._busy(tmp_path / "absent.json", [2]) == ""

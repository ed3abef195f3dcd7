#!/usr/bin/env bash
# The compiled kernels under AddressSanitizer and UndefinedBehaviorSanitizer (docs/packed.md, "Sanitizers").
# Builds every compiled backend (the kernel, and its build on emulated int8 tiles) with
# -fsanitize=address,undefined into an extension cache of its own, then runs the packed kernel tests and a
# larger fuzz of shapes under them. Any report stops the run with a non-zero exit status. Either way the run
# leaves its record in results/sanitize/run.json (CPU, compiler, tests run, passed, skipped, exit status,
# sanitizer reports); `python -m studies.report` then writes the sentence of docs/packed.md from it.
# Extra arguments go to pytest (for example -x, or -k fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cxx=${CXX:-c++}
export TORCH_EXTENSIONS_DIR=${XNORPP_SANITIZE_CACHE:-${TMPDIR:-/tmp}/xnorpp-sanitize-extensions}
export XNORPP_FUZZ_DRAWS=${XNORPP_FUZZ_DRAWS:-3}  # random layers per pad mode, stride, batch and channel count
logs=$(mktemp -d "${TMPDIR:-/tmp}/xnorpp-sanitize-logs.XXXXXX")
trap 'rm -rf "$logs"' EXIT
# python itself is not instrumented: the sanitizer runtimes must be loaded before anything else; each report also
# goes to a file under $logs (log_path), which the record counts
status=0
LD_PRELOAD="$("$cxx" -print-file-name=libasan.so) $("$cxx" -print-file-name=libubsan.so)" \
ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path="$logs/sanitizer" \
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path="$logs/sanitizer" \
.venv/bin/python - "$logs" "$@" <<'PY' || status=$?
import json
import sys

import pytest

from xnorpp_core.packed import backend

logs, args = sys.argv[1], sys.argv[2:]
sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
backend._CFLAGS = backend._CFLAGS + sanitize + ["-fno-omit-frame-pointer", "-g"]
backend._LDFLAGS = backend._LDFLAGS + sanitize
built = {}
for name in ("cpp", "cpp_amx_emulated"):
    info = backend.backend_info(name)
    binary = open(info.kernel.__file__, "rb").read()
    assert b"__asan_report" in binary and b"__ubsan_handle" in binary, f"{name}: not built with the sanitizers"
    print(f"{name}: {info.path}, built with {' '.join(sanitize)}", flush=True)
    built[name] = info.path
files = ["tests/test_packed.py", "tests/test_packed_amx.py", "tests/test_packed_network.py", "tests/test_packed_int8.py"]
with open(f"{logs}/build.json", "w") as f:
    json.dump({"flags": sanitize, "backends": built, "test_files": files, "pytest_args": args}, f)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", f"--junitxml={logs}/junit.xml", *files, *args]))
PY
# the record, written by an uninstrumented python whatever the run's outcome
.venv/bin/python - "$logs" "$status" "$cxx" "$@" <<'PY'
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from xnorpp_core.provenance import environment, write_json

logs, status, cxx, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
reports = sorted(logs.glob("sanitizer.*"))
for report in reports:
    print(report.read_text(errors="replace"), file=sys.stderr)
build = json.loads((logs / "build.json").read_text()) if (logs / "build.json").exists() else {}
counts = dict.fromkeys(("tests", "passed", "failed", "skipped"))  # unknown when the run stopped before the end
if (logs / "junit.xml").exists():
    root = ET.parse(logs / "junit.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    counts = {"tests": tests, "passed": tests - failures - errors - skipped, "failed": failures + errors,
              "skipped": skipped}
compiler = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
write_json("results/sanitize/run.json", {
    "command": " ".join(["bash scripts/sanitize.sh", *args]), "compiler": compiler[0] if compiler else cxx,
    **build, **counts, "exit_status": status, "sanitizer_reports": len(reports),
    "fuzz_draws": int(os.environ["XNORPP_FUZZ_DRAWS"]), "environment": environment("cpu")})
print(f"wrote results/sanitize/run.json (exit status {status}, {len(reports)} sanitizer report(s)); "
      "python -m studies.report writes docs/packed.md's sentence from it", file=sys.stderr)
PY
exit "$status"

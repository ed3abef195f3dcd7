#!/usr/bin/env bash
# The compiled kernels under AddressSanitizer and UndefinedBehaviorSanitizer (docs/packed.md, "Sanitizers").
# Builds every compiled backend (the kernel, and its build on emulated int8 tiles) with
# -fsanitize=address,undefined into an extension cache of its own, then runs the packed kernel tests and a
# larger fuzz of shapes under them. Any report stops the run with a non-zero exit status.
# Extra arguments go to pytest (for example -x, or -k fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cxx=${CXX:-c++}
export TORCH_EXTENSIONS_DIR=${XNORPP_SANITIZE_CACHE:-${TMPDIR:-/tmp}/xnorpp-sanitize-extensions}
# python itself is not instrumented: the sanitizer runtimes must be loaded before anything else
export LD_PRELOAD="$("$cxx" -print-file-name=libasan.so) $("$cxx" -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export XNORPP_FUZZ_DRAWS=${XNORPP_FUZZ_DRAWS:-3}  # random layers per pad mode, stride, batch and channel count
.venv/bin/python - "$@" <<'PY'
import sys

import pytest

from xnorpp_core.packed import backend

sanitize = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
backend._CFLAGS = backend._CFLAGS + sanitize + ["-fno-omit-frame-pointer", "-g"]
backend._LDFLAGS = backend._LDFLAGS + sanitize
for name in ("cpp", "cpp_amx_emulated"):
    info = backend.backend_info(name)
    binary = open(info.kernel.__file__, "rb").read()
    assert b"__asan_report" in binary and b"__ubsan_handle" in binary, f"{name}: not built with the sanitizers"
    print(f"{name}: {info.path}, built with {' '.join(sanitize)}", flush=True)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "tests/test_packed.py", "tests/test_packed_amx.py",
                      "tests/test_packed_network.py", "tests/test_packed_int8.py", *sys.argv[1:]]))
PY

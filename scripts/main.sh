#!/usr/bin/env bash
# The main job: set up .venv if needed, regenerate Table 2 and Figure 1, then regenerate the report
# (results/REPORT.md and the generated blocks of README.md, results/README.md and docs/) from the
# result files, so the committed text shows this machine's results and `scripts/test.sh` passes after it.
# Extra arguments go to the Table 2 study, e.g. `bash scripts/main.sh --device cuda`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m studies.reconstruction --trials 100 "$@"
.venv/bin/python -m studies.speedup
.venv/bin/python -m studies.report

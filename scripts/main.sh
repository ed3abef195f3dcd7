#!/usr/bin/env bash
# The main job: set up .venv if needed, then regenerate Table 2 and Figure 1.
# Extra arguments go to the Table 2 study, e.g. `bash scripts/main.sh --device cuda`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m studies.reconstruction --trials 100 "$@"
.venv/bin/python -m studies.speedup

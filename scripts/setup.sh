#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with everything
# the studies, notebooks and tests need. Idempotent: does nothing when .venv is
# already up to date with pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
stamp=.venv/.xnorpp-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
pip_install() {  # quiet pip; its full log only when it fails
  local log; log=$(mktemp)
  if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then cat "$log" >&2; rm -f "$log"; return 1; fi
  grep -v "is ignored: it is neither a file nor a directory" "$log" || true
  rm -f "$log"
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "setting up .venv (first time: about a minute)" >&2
pip_install --upgrade pip
# torch and torchvision pinned: pip takes both from this machine's local wheel store.
pip_install torch==2.14.1 torchvision==0.29.1
# setuptools reports every editable install as a warning block ("Editable installation. ... folders in your
# working directory with the same name as your package"): information, not a problem, so it is not shown.
PYTHONWARNINGS="ignore:Editable installation" pip_install -e ".[notebooks,test,deploy]"
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "$want" > "$stamp"

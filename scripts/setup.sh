#!/usr/bin/env bash
# Create .venv in the repository and install autoresearch into it (idempotent).
#   EXTRAS  pip extras to install as well, e.g. EXTRAS=test,llm (default: none)
# torch is installed first, pinned to 2.13.0, so that pip never pulls the multi-GB CUDA build
# as a dependency on a machine that has a local CPU wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
spec="."
if [ -n "${EXTRAS:-}" ]; then spec=".[${EXTRAS}]"; fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"

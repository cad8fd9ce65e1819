#!/usr/bin/env bash
# Install everything the test suite needs into .venv and run it (the command CI runs).
#   scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test,llm scripts/setup.sh
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" "$@"

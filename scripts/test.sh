#!/usr/bin/env bash
# Install everything the test suite needs into .venv and run it (the command CI runs).
#   scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
# The trackers' extras install in about 2 minutes (measured: mlflow-skinny 64 s, tensorboard 26 s,
# wandb 25 s on 2 loaded cores); their tests are in the slow tier and skip where a library is missing.
EXTRAS=test,llm,mlflow,tensorboard,wandb scripts/setup.sh
# The dashboard's browser test drives headless Chromium (Debian packages chromium, chromium-driver).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver; } \
    >/dev/null 2>&1 || echo "could not install chromium: the browser tests will be skipped" >&2
fi
# strace: the agent tests trace each agent's network calls (tests/nettrace.py); without it that
# check is a skip with the reason.
if ! command -v strace >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq strace; } \
    >/dev/null 2>&1 || echo "could not install strace: the agents' loopback checks will be skipped" >&2
fi
# The coding agents of the `cmd` presets, at their tested versions (cached in .agents/).
scripts/install-agents.sh
exec .venv/bin/python -m pytest -n "${TEST_WORKERS:-2}" "$@"

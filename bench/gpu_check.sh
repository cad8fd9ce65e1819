#!/usr/bin/env bash
# The GPU check: the first thing to run on a CUDA machine (at most 8 minutes on one H100/H200).
# From a fresh clone: sets up .venv (scripts/setup.sh; pip's torch==2.13.0 is the CUDA build on
# Linux), makes a sample corpus of its own (no network needed beyond the install), prepares the
# gpu preset's data from it, trains the gpu preset's train.py for 120 s through `autoresearch run`
# and prints its figures beside the reference's (bench/gpu_check.py). Fills BENCHMARKS.md's GPU table.
#
#   bench/gpu_check.sh [--dry] [WORKDIR]      (default WORKDIR: a new folder under /tmp)
#
# --dry (or GPU_CHECK_DRY=1): the same steps on the CPU at toy sizes, to test the check itself.
# The data cache is WORKDIR/cache unless AUTORESEARCH_CACHE is set.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=()
if [ "${1:-}" = "--dry" ]; then DRY=(--dry); shift; fi
WORK="${1:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")}"
started=$(date +%s)
if [ ! -x .venv/bin/autoresearch ]; then
  scripts/setup.sh
fi
echo "setup: $(( $(date +%s) - started )) s"
.venv/bin/python bench/gpu_check.py "$WORK" "${DRY[@]}"
echo "gpu check: $(( $(date +%s) - started )) s in all; workspace $WORK/ws"

#!/usr/bin/env bash
# The main job: install, then a short autonomous research session on the offline default corpus
# (the Python standard library) with the built-in search proposer.
#   scripts/main.sh [WORKSPACE]      (default: ./demo-research; re-running resumes it)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
BIN="$(pwd)/.venv/bin"
DIR="${1:-demo-research}"
BUDGET="${BUDGET:-60}"              # seconds of training per experiment
EXPERIMENTS="${EXPERIMENTS:-4}"     # experiments after the baseline (with at most 1 confirmation run each: < 15 min)
if [ ! -f "$DIR/autoresearch.toml" ]; then
  "$BIN/autoresearch" init "$DIR" --preset cpu --budget "$BUDGET" --set baseline_runs=2 --set confirm_runs=1
fi
cd "$DIR"
"$BIN/autoresearch" prepare
"$BIN/autoresearch" loop --proposer search --max-experiments "$EXPERIMENTS"
"$BIN/autoresearch" report
"$BIN/autoresearch" status --last 8
echo
echo "ledger:   $(pwd)/results.tsv"
echo "progress: $(pwd)/progress.png"

#!/usr/bin/env bash
# Install the coding-agent CLIs the slow tests drive (tests/test_agents_real.py), at the versions
# the `cmd` presets were tested with (src/autoresearch/proposers/agents.py), into .agents/ (git-ignored):
# the npm packages into .agents/node_modules, aider into its own venv .agents/aider-venv (its
# dependencies are heavy). Skips what is installed at the right version. A failure (no node, a
# registry down) is reported in .agents/install.log and is not an error: those tests are skipped.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
NPM_PACKAGES="@anthropic-ai/claude-code@2.1.197 @openai/codex@0.171.0 @google/gemini-cli@0.61.0 opencode-ai@1.18.33"
AIDER="aider-chat==0.86.2"
mkdir -p .agents
log=.agents/install.log
: >"$log"
export DISABLE_AUTOUPDATER=1 NO_UPDATE_NOTIFIER=1 npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

missing=""
for spec in $NPM_PACKAGES; do
  name=${spec%@*}; version=${spec##*@}
  have=$(node -p "require('./.agents/node_modules/$name/package.json').version" 2>/dev/null || true)
  [ "$have" = "$version" ] || missing="$missing $spec"
done
if [ -n "$missing" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing coding agents:$missing" >&2
    timeout 900 npm install --prefix .agents --save-exact --loglevel=error $missing >>"$log" 2>&1 \
      || echo "npm install of$missing failed (see .agents/install.log): their tests will be skipped" | tee -a "$log" >&2
  else
    echo "npm is not installed: the tests of claude, codex, gemini, opencode will be skipped" | tee -a "$log" >&2
  fi
fi

if ! .agents/aider-venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('aider-chat') != '${AIDER#*==}')" 2>/dev/null; then
  echo "installing $AIDER into .agents/aider-venv" >&2
  { [ -x .agents/aider-venv/bin/python ] || "$PYTHON" -m venv .agents/aider-venv; } >>"$log" 2>&1 &&
    timeout 900 .agents/aider-venv/bin/python -m pip install --quiet --disable-pip-version-check "$AIDER" >>"$log" 2>&1 \
    || echo "pip install $AIDER failed (see .agents/install.log): its tests will be skipped" | tee -a "$log" >&2
fi
exit 0

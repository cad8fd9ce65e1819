"""The coding-agent presets of the `cmd` proposer: command lines, permissions, the environment
each agent needs, the versions they were tested with, and the checks made before an agent starts.

Permissions, the same across agents as far as each CLI allows: edit files in the workspace, yes;
a shell, only for the syntax check the prompt suggests (`python -m py_compile train.py`) where
the CLI can say so, else none (gemini, aider) or a sandbox without network that cannot read the
data cache (codex); no web tools where they can be turned off. Inside an agent the harness's data
refuses to load (api.py): a training run it starts fails at once, saying why. Whatever an agent changes beyond train.py is undone afterwards
(containment.py), and everything it started is ended with it.

Update checks, telemetry and other calls home are turned off through each CLI's environment
variables or flags, so that the agent talks to its model endpoint only (tests/test_agents_real.py
checks it with strace): what is left is said in docs/proposers.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch.errors import SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TRAIN_FILE, DESCRIPTION_FILE = "train.py", "proposal.md"
SYNTAX_CHECK = "python -m py_compile train.py"  # the one command the prompt suggests

# opencode reads this (JSON) over its own configuration: the shell allows the syntax check only
OPENCODE_CONFIG = json.dumps({
    "permission": {"edit": "allow", "webfetch": "deny", "external_directory": "deny",
                   "bash": {"*": "deny", SYNTAX_CHECK: "allow", "python3 -m py_compile train.py": "allow"}},
    "autoupdate": False, "share": "disabled",
})


# gemini's settings for the harness: no usage statistics (sent to play.googleapis.com by default),
# telemetry, update checks, web tools, subagents (local and remote). Given twice:
# - as system defaults (GEMINI_CLI_SYSTEM_DEFAULTS_PATH, under the user's settings), which gemini
#   0.61 reads only when the file and every folder above it are owned by root and writable by no one
#   else: a file in a user's virtual environment, or anywhere under /tmp, is skipped without a word;
# - so also as the workspace's settings (.gemini/settings.json, over the user's), which have no such
#   check: written before the agent starts, removed after it (`workspace_settings`). gemini applies
#   them in a trusted folder only, and loads them before it reads --skip-trust: hence
#   GEMINI_CLI_TRUST_WORKSPACE (what --skip-trust sets, for this run's workspace only).
GEMINI_DEFAULTS = Path(__file__).with_name("gemini-defaults.json")
GEMINI_WORKSPACE_SETTINGS = Path(".gemini") / "settings.json"

# codex's permission profile (config.toml's [permissions.NAME], given with -c): its built-in
# `:workspace` (writes in the workspace and the temp folders, no network) with the data cache
# unreadable, so that a command reads no validation shard and cannot train (no data to open).
# analytics.enabled=false: no metrics to ab.chatgpt.com; --disable plugins: no sync of the curated
# plugins (api.github.com, chatgpt.com) at start; both seen with strace (tests/test_agents_real.py)
CODEX_PROFILE = "autoresearch"


@dataclass(frozen=True)
class AgentPreset:
    name: str
    template: tuple[str, ...]
    tested_version: str  # the CLI version the preset was last run end to end with
    package: str  # how it is installed
    permissions: str  # what the agent may do, in words (docs/proposers.md has the table)
    env: Mapping[str, str] = field(default_factory=dict)  # set for the agent: no update checks, no telemetry
    model_flag: str = "--model"
    # (path in the workspace, shipped file): put there while the agent runs (`workspace_settings`)
    settings_file: tuple[Path, Path] | None = None


AGENTS: dict[str, AgentPreset] = {
    "claude": AgentPreset(
        "claude",
        ("claude", "-p", "{prompt}", "{model_args}", "--permission-mode", "acceptEdits",
         "--allowedTools", f"Bash({SYNTAX_CHECK})", "Bash(python3 -m py_compile train.py)",
         "--disallowedTools", "WebFetch", "WebSearch"),
        "2.1.197", "npm install -g @anthropic-ai/claude-code",
        "edits: yes; shell: the syntax check only; web: no",
        {"DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
         "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}),
    "codex": AgentPreset(
        "codex",
        ("codex", "exec", "{model_args}", "-c", f'default_permissions="{CODEX_PROFILE}"',
         "-c", f'permissions.{CODEX_PROFILE}={{extends=":workspace", filesystem={{"{{data_dir}}"="none"}}}}',
         "--skip-git-repo-check", "-c", "check_for_update_on_startup=false", "-c", "analytics.enabled=false",
         "--disable", "plugins", "{prompt}"),
        "0.171.0", "npm install -g @openai/codex",
        "edits: yes; shell: in codex's sandbox (writes only in the workspace, no network, the data cache "
        "unreadable); web: no"),
    "aider": AgentPreset(
        "aider",
        ("aider", "{model_args}", "--message-file", "{prompt_file}", "--yes-always", "--no-auto-commits",
         "--no-dirty-commits", "--no-gitignore", "--no-check-update", "--no-stream", "--no-pretty", "--map-tokens", "0",
         "--analytics-disable", "--no-show-model-warnings", "--no-suggest-shell-commands", "--no-detect-urls",
         "--no-auto-lint", "--no-auto-test", "--no-show-release-notes",
         "--chat-history-file", "{proposal_dir}/aider.chat.md", "--input-history-file", "{proposal_dir}/aider.input",
         TRAIN_FILE, DESCRIPTION_FILE),
        "0.86.2", "pipx install aider-chat",
        "edits: train.py and proposal.md (the files on its command line); shell: no; web: no",
        {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}),  # else litellm fetches its price list from GitHub at import
    "gemini": AgentPreset(
        "gemini", ("gemini", "{model_args}", "-p", "{prompt}", "--approval-mode", "auto_edit", "--skip-trust"),
        "0.61.0", "npm install -g @google/gemini-cli",
        "edits: yes (in the workspace); shell: no (not offered under auto_edit); web: no",
        {"GEMINI_TELEMETRY_ENABLED": "false", "GEMINI_CLI_SYSTEM_DEFAULTS_PATH": str(GEMINI_DEFAULTS),
         "GEMINI_CLI_TRUST_WORKSPACE": "true"},
        settings_file=(GEMINI_WORKSPACE_SETTINGS, GEMINI_DEFAULTS)),
    "opencode": AgentPreset(
        "opencode", ("opencode", "run", "{model_args}", "{prompt}"),
        "1.18.33", "npm install -g opencode-ai",
        "edits: yes; shell: the syntax check only; web: no; files outside the workspace: no",
        {"OPENCODE_CONFIG_CONTENT": OPENCODE_CONFIG, "OPENCODE_DISABLE_AUTOUPDATE": "1",
         "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1"}),
}


# --- before the agent starts ------------------------------------------------------------------


def _home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HOME") or Path.home())


def _check_codex(model: str, env: Mapping[str, str]) -> None:
    codex_home = Path(env.get("CODEX_HOME") or _home(env) / ".codex")
    config_path = codex_home / "config.toml"
    try:
        config = tomllib.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    except (tomllib.TOMLDecodeError, OSError) as e:
        raise SettingsError(f"codex's configuration {config_path} cannot be read: {e}") from None
    provider = str(config.get("model_provider", ""))
    if provider and provider != "openai":
        spec = config.get("model_providers", {}).get(provider)
        if not isinstance(spec, dict):
            raise SettingsError(f"{config_path} sets model_provider = {provider!r} but has no "
                                f"[model_providers.{provider}] table (base_url, env_key, wire_api)")
        key = spec.get("env_key")
        if key and not env.get(str(key)):
            raise SettingsError(f"codex's provider {provider!r} reads its key from ${key}, which is not set")
        return
    if env.get("OPENAI_API_KEY") or env.get("CODEX_API_KEY") or (codex_home / "auth.json").exists():
        return
    raise SettingsError(
        "codex has no provider: run `codex login`, set OPENAI_API_KEY, or set model_provider in "
        f"{config_path} with a [model_providers.NAME] table (base_url, env_key, wire_api); without one it "
        "waits for a network it cannot reach")


def _check_aider(model: str, env: Mapping[str, str]) -> None:
    if not model and not env.get("AIDER_MODEL"):
        raise SettingsError(
            "aider needs a model: pass --model (e.g. openai/NAME with OPENAI_API_BASE and OPENAI_API_KEY set, or "
            "anthropic/NAME with ANTHROPIC_API_KEY) or set AIDER_MODEL; without one it offers an OpenRouter login "
            "in a browser and waits minutes for it")


def _check_opencode(model: str, env: Mapping[str, str]) -> None:
    if not model:
        raise SettingsError(
            "opencode needs --model PROVIDER/MODEL (a provider of your opencode.json, e.g. anthropic/claude-sonnet-4-5); "
            "without one it uses opencode's own hosted model and hangs without a network")
    if "/" not in model:
        raise SettingsError(f"opencode's --model must be PROVIDER/MODEL, got {model!r} (a bare name fails with "
                            "'Unexpected server error')")


def _check_gemini(model: str, env: Mapping[str, str]) -> None:
    if env.get("GOOGLE_GENAI_USE_VERTEXAI") or env.get("GOOGLE_GENAI_USE_GCA"):
        return
    path = Path(env.get("GEMINI_CLI_HOME") or _home(env)) / ".gemini" / "settings.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (json.JSONDecodeError, OSError):
        return  # gemini reads it with comments allowed: let it say what is wrong
    auth = settings.get("security", {}).get("auth", {}) if isinstance(settings.get("security"), dict) else {}
    if not (isinstance(auth, dict) and auth.get("selectedType")) and not settings.get("selectedAuthType"):
        raise SettingsError(
            f"gemini has no auth method: set {{\"security\": {{\"auth\": {{\"selectedType\": \"gemini-api-key\"}}}}}} in "
            f"{path} (with GEMINI_API_KEY set), or run `gemini` once to log in; otherwise it exits with code 41")


PREFLIGHT: dict[str, Callable[[str, Mapping[str, str]], None]] = {
    "codex": _check_codex, "aider": _check_aider, "opencode": _check_opencode, "gemini": _check_gemini,
}


def preflight(agent: str, model: str, env: Mapping[str, str] | None = None) -> None:
    """Refuse a missing model, key or configuration before the agent starts, naming the setting."""
    check = PREFLIGHT.get(agent)
    if check is not None:
        check(model, os.environ if env is None else env)


def agent_env(agent: str) -> dict[str, str]:
    """The preset's variables, under the ones the user set."""
    preset = AGENTS.get(agent)
    return {**(preset.env if preset else {}), **os.environ}


@contextlib.contextmanager
def workspace_settings(preset: AgentPreset | None, root: Path, exclude: Callable[[str], None]) -> Iterator[None]:
    """The preset's settings file in the workspace while its agent runs, kept out of git by
    `exclude(pattern)`. A settings file the workspace has already is left as it is."""
    if preset is None or preset.settings_file is None or (root / preset.settings_file[0]).exists():
        yield
        return
    where, shipped = preset.settings_file
    path = root / where
    exclude(f"/{where.parts[0]}/")
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(shipped.read_bytes())
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # unless the agent left something else there


# --- the version check ------------------------------------------------------------------------

VERSION = re.compile(r"\d+\.\d+\.\d+")


def installed_version(executable: str, env: Mapping[str, str] | None = None, timeout: float = 60.0) -> str:
    """The version `EXECUTABLE --version` prints; "" when it cannot tell."""
    try:
        out = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL, env=dict(env) if env is not None else None)
    except (OSError, subprocess.SubprocessError):
        return ""
    found = VERSION.search(out.stdout) or VERSION.search(out.stderr)
    return found.group(0) if found else ""


def version_note(agent: str, executable: str, env: Mapping[str, str] | None = None) -> str:
    """A note when the installed agent is not the version its preset was tested with; "" otherwise."""
    preset = AGENTS.get(agent)
    if preset is None:
        return ""
    found = installed_version(executable, env)
    if not found or found == preset.tested_version:
        return ""
    return (f"note: {agent} {found} is installed; the preset was tested with {preset.tested_version} "
            "(it still runs; see docs/proposers.md if it fails)")

"""The `cmd` presets driven end to end by the real agent CLIs, against a scripted model on loopback.

scripts/test.sh installs the agents at their tested versions into .agents/ (npm packages) and
.agents/aider-venv (aider); an agent missing there is a skipped test with the reason. Each agent
gets its own HOME with the configuration that points it at the fake server (tests/fakeagents.py),
and the variables that turn its update checks and telemetry off.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoresearch import hparams, loop as loop_module
from autoresearch.cli import main
from autoresearch.errors import ProposerError
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.proposers.agents import AGENTS
from autoresearch.proposers.cmd import CmdProposer
from autoresearch.proposers.config import ProposerConfig
from autoresearch.research import Limits
from tests.fakeagents import FakeAgentModel, finish, shell, standard_script
from tests.scripted import ScriptedExecutor
from tests.test_proposers_cmd import make_context

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
AGENTS_DIR = REPO / ".agents"
# Skipped, not xfail: failing, these took 7 minutes of a CI whose whole budget is 30.
OPENCODE_OPEN = pytest.mark.skip(reason="open: under the loop, opencode 1.18.33 refuses read/edit in the workspace "
                                  "('a rule which prevents you from using this specific tool call'); the same "
                                  "preset edits a plain git folder")
NAMES = ("claude", "codex", "gemini", pytest.param("opencode", marks=OPENCODE_OPEN), "aider")
PROPOSAL = "Description: matrix lr 0.04 -> 0.05 (from proposal.md)\nHypothesis: faster learning in the budget\n"
QUIET = {  # no update checks, no telemetry, no model lists fetched: nothing leaves loopback
    "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1", "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1", "OPENCODE_DISABLE_LSP_DOWNLOAD": "1", "GEMINI_TELEMETRY_ENABLED": "false",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True", "NO_UPDATE_NOTIFIER": "1", "DO_NOT_TRACK": "1",
}
KEYS = ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE",
        "GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "CODEX_HOME", "AIDER_MODEL")


def executable(name: str) -> Path:
    """The installed agent, or a skip saying why it is missing."""
    path = AGENTS_DIR / ("aider-venv/bin/aider" if name == "aider" else f"node_modules/.bin/{name}")
    if not path.exists():
        log = AGENTS_DIR / "install.log"
        why = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        pytest.skip(f"{name} is not installed in {path.parent} (scripts/test.sh installs it)"
                    + (f": {why[0]}" if why else ""))
    return path


@dataclass
class Setup:
    env: dict[str, str]
    model: str


def configure(name: str, home: Path, url: str) -> Setup:
    """HOME, configuration files and variables that point `name` at the model server `url`."""
    home.mkdir(parents=True, exist_ok=True)
    path = f"{executable(name).parent}:{os.environ['PATH']}"
    env = {"HOME": str(home), "PATH": path, **QUIET}
    if name == "claude":
        env |= {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-ant-fake"}
        return Setup(env, "fake-model")
    if name == "codex":
        codex = home / ".codex"
        codex.mkdir()
        (codex / "config.toml").write_text(
            f'model_provider = "fake"\ncheck_for_update_on_startup = false\n[model_providers.fake]\nname = "fake"\n'
            f'base_url = "{url}/v1"\nenv_key = "FAKE_MODEL_KEY"\nwire_api = "responses"\nrequest_max_retries = 1\n'
            'stream_max_retries = 1\nstream_idle_timeout_ms = 10000\n')
        env |= {"CODEX_HOME": str(codex), "FAKE_MODEL_KEY": "sk-fake"}
        return Setup(env, "fake-model")
    if name == "gemini":
        (home / ".gemini").mkdir()
        (home / ".gemini/settings.json").write_text(json.dumps({
            "security": {"auth": {"selectedType": "gemini-api-key"}}, "privacy": {"usageStatisticsEnabled": False},
            "telemetry": {"enabled": False}, "general": {"disableAutoUpdate": True, "disableUpdateNag": True}}))
        env |= {"GOOGLE_GEMINI_BASE_URL": url, "GEMINI_API_KEY": "fake-key"}
        return Setup(env, "fake-model")
    if name == "opencode":
        (home / ".config/opencode").mkdir(parents=True)
        (home / ".config/opencode/opencode.json").write_text(json.dumps({
            "autoupdate": False, "share": "disabled", "provider": {"fake": {
                "npm": "@ai-sdk/openai-compatible", "name": "fake", "options": {"baseURL": url + "/v1", "apiKey": "sk"},
                "models": {"fake-model": {"name": "fake"}}}}}))
        return Setup(env, "fake/fake-model")
    env |= {"OPENAI_API_BASE": url + "/v1", "OPENAI_API_KEY": "sk-fake"}  # aider
    return Setup(env, "openai/fake-model")


def use(monkeypatch, setup: Setup) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in setup.env.items():
        monkeypatch.setenv(key, value)


def lr_of(ws) -> float:
    return hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value


def tool_results(body: dict) -> list[str]:
    """The tool results in a request, in order: what the agent told the model its tools did."""
    found = []
    for message in body.get("messages", []):
        if message.get("role") == "tool":
            found.append(json.dumps(message.get("content")))
        elif isinstance(message.get("content"), list):
            found += [json.dumps(b.get("content")) for b in message["content"]
                      if isinstance(b, dict) and b.get("type") == "tool_result"]
    return found


def assert_loopback_only(server: FakeAgentModel) -> None:
    """Every request reached a route of the fake model (the agents were configured for nothing else)."""
    assert server.requests, "the agent never called the model"
    unknown = [r["path"] for r in server.requests if r["method"] != "POST"]
    assert unknown == [], unknown


@pytest.mark.parametrize("name", NAMES)
def test_the_real_agent_makes_an_experiment_through_the_loop(name, make_workspace, tmp_path, monkeypatch, capsys):
    """`autoresearch loop --proposer cmd --agent NAME`: the agent reads train.py, edits one line and
    writes proposal.md through its own tools; the harness runs and records the experiment."""
    executable(name)
    ws = make_workspace(budget=2, baseline_runs=1)
    script = standard_script(PROPOSAL)[:-1] + [finish("All done.")]
    with FakeAgentModel(name, ws.root, script) as server:
        setup = configure(name, tmp_path / "home", server.url)
        use(monkeypatch, setup)
        monkeypatch.chdir(ws.root)
        code = main(["loop", "--proposer", "cmd", "--agent", name, "--model", setup.model, "--max-experiments", "1",
                     "--agent-timeout", "300", "--agent-idle-timeout", "120"])
    out = capsys.readouterr().out
    assert code == 0, out
    experiment = next(r for r in Ledger.open(ws.ledger_path).rows if r.kind != "baseline")
    assert experiment.kind == "experiment" and experiment.status in ("keep", "discard"), (experiment, out)
    assert experiment.val_bpb and experiment.description == "matrix lr 0.04 -> 0.05 (from proposal.md)"
    assert experiment.proposer == "cmd"
    proposal = json.loads((ws.runs_dir / experiment.run_id / "proposal.json").read_text())
    assert proposal["params"]["agent"] == name and proposal["params"]["exit_code"] == 0
    assert "discarded" not in proposal["params"], proposal["params"]  # it changed nothing beyond train.py
    assert "is installed; the preset was tested with" not in out  # the pinned version is the tested one
    assert_loopback_only(server)
    assert ws.git.dirty_paths() == []


@pytest.mark.parametrize("name", NAMES)
def test_the_real_agent_against_a_dead_endpoint_ends_with_a_reason(name, make_workspace, tmp_path, monkeypatch):
    """Nothing listens at the endpoint: each proposal ends within the watchdog time (or at once),
    the ledger says why, and the loop stops cleanly after its limit of failures in a row."""
    executable(name)
    ws = make_workspace()
    with FakeAgentModel(name, ws.root) as server:
        dead = server.url  # closed when the block ends: a port where nothing listens
    setup = configure(name, tmp_path / "home", dead)
    use(monkeypatch, setup)
    monkeypatch.setattr(loop_module, "MAX_PROPOSER_FAILURES", 2)
    idle = 20
    config = ProposerConfig(name="cmd", agent=name, model=setup.model, agent_timeout=600, agent_idle_timeout=idle)
    logs: list[str] = []
    started = time.monotonic()
    with Loop.open(ws.root, log=logs.append, executor=ScriptedExecutor(ws)) as lp:
        with pytest.raises(ProposerError):
            lp.run(CmdProposer(config, log=logs.append), Limits(max_experiments=1))
    elapsed = time.monotonic() - started
    assert elapsed < 2 * (idle + 90), elapsed  # two proposals, each bounded by the watchdog, not agent_timeout
    failed = [r for r in Ledger.open(ws.ledger_path).rows if r.kind == "experiment"]
    assert [r.status for r in failed] == ["invalid", "invalid"], failed
    reasons = " | ".join(r.reason for r in failed)
    assert any(why in reasons for why in ("made no progress", "exited with code", "made no change to train.py")), reasons
    assert lr_of(ws) == 0.04 and ws.git.dirty_paths() == []


DENIED = {  # how each agent reports a shell command its permissions refuse, in the tool result it sends back
    "claude": ("permission", "approv", "denied", "not allowed"),
    "opencode": ("denied", "permission", "rejected", "not allowed"),
}


@pytest.mark.parametrize("name", ["claude", pytest.param("opencode", marks=OPENCODE_OPEN)])
def test_the_model_asks_for_a_training_run_and_the_agent_refuses(name, make_workspace, tmp_path, monkeypatch):
    """The scripted model asks to train and to read the validation shards: the agent's permissions
    refuse both (the refusal goes back to the model and into agent.log); the edit still lands."""
    executable(name)
    ws = make_workspace()
    shards = Path(os.environ["AUTORESEARCH_CACHE"])
    script = [shell("python train.py"), shell(f"ls {shards} && cat {shards}/*/val* | head"),
              *standard_script(PROPOSAL)[:-1], finish("All done.")]
    with FakeAgentModel(name, ws.root, script) as server:
        setup = configure(name, tmp_path / "home", server.url)
        use(monkeypatch, setup)
        config = ProposerConfig(name="cmd", agent=name, model=setup.model, agent_timeout=300, agent_idle_timeout=120)
        proposal = CmdProposer(config, log=[].append).propose(make_context(ws))
    assert proposal.description == "matrix lr 0.04 -> 0.05 (from proposal.md)" and lr_of(ws) == 0.05
    results = tool_results(server.requests[-1]["body"])
    assert len(results) >= 2, results
    for answer in results[:2]:  # the two commands: refused, and said so to the model
        assert any(w in answer.lower() for w in DENIED[name]), results
    assert not (ws.runs_dir.exists() and any(ws.runs_dir.iterdir()))  # no training run happened
    assert proposal.params["exit_code"] == 0

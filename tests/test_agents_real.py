"""The `cmd` presets driven end to end by the real agent CLIs, against a scripted model on loopback.

scripts/test.sh installs the agents at their tested versions into .agents/ (npm packages) and
.agents/aider-venv (aider); an agent missing there is a skipped test with the reason. Each agent
gets its own HOME with the configuration that points it at the fake server (tests/fakeagents.py)
and nothing more: the presets turn update checks and telemetry off themselves. Each runs under
strace (tests/nettrace.py), and a test fails when the agent tried any address beyond loopback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoresearch import hparams, loop as loop_module
from autoresearch.cli import main
from autoresearch.data.prepare import open_prepared
from autoresearch.errors import ProposerError
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.proposers.agents import AGENTS
from autoresearch.proposers.cmd import CmdProposer
from autoresearch.proposers.config import ProposerConfig
from autoresearch.research import Limits
from tests.fakeagents import FakeAgentModel, finish, read, shell, standard_script
from tests.nettrace import NetTrace, usable
from tests.scripted import ScriptedExecutor
from tests.test_proposers_cmd import make_context

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
AGENTS_DIR = REPO / ".agents"
NAMES = ("claude", "codex", "gemini", "opencode", "aider")
PROPOSAL = "Description: matrix lr 0.04 -> 0.05 (from proposal.md)\nHypothesis: faster learning in the budget\n"
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
    trace: NetTrace | None = None  # None: strace cannot run here

    def assert_loopback_only(self, url: str, server: FakeAgentModel | None = None) -> None:
        """The agent reached nothing but loopback: it called the model at `url`, every connect/send it
        made named 127.0.0.1 or ::1 (strace), and every request the fake model got was one of its routes."""
        if server is not None:
            assert server.requests, "the agent never called the model"
            unknown = [r["path"] for r in server.requests if r["method"] != "POST"]
            assert unknown == [], unknown
        if self.trace is None:
            pytest.skip(f"all else passed; the loopback check did not run: {usable()}")
        assert self.trace.tried(int(url.rsplit(":", 1)[1])), "strace saw no call to the model's port"
        assert self.trace.remote() == [], "the agent tried addresses beyond loopback:\n" + "\n".join(self.trace.remote())


def configure(name: str, home: Path, url: str) -> Setup:
    """HOME, configuration files and variables that point `name` at the model server `url`; the
    agent runs under strace when it can."""
    home.mkdir(parents=True, exist_ok=True)
    trace = None if usable() else NetTrace(home.parent / "nettrace")
    path = ":".join(([str(trace.wrap(executable(name)))] if trace else []) + [str(executable(name).parent), os.environ["PATH"]])
    env = {"HOME": str(home), "PATH": path}  # the presets turn update checks and telemetry off themselves
    if name == "claude":
        env |= {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": "sk-ant-fake"}
        return Setup(env, "fake-model", trace)
    if name == "codex":
        codex = home / ".codex"
        codex.mkdir()
        (codex / "config.toml").write_text(
            f'model_provider = "fake"\n[model_providers.fake]\nname = "fake"\n'
            f'base_url = "{url}/v1"\nenv_key = "FAKE_MODEL_KEY"\nwire_api = "responses"\nrequest_max_retries = 1\n'
            'stream_max_retries = 1\nstream_idle_timeout_ms = 10000\n')
        env |= {"CODEX_HOME": str(codex), "FAKE_MODEL_KEY": "sk-fake"}
        return Setup(env, "fake-model", trace)
    if name == "gemini":
        (home / ".gemini").mkdir()
        (home / ".gemini/settings.json").write_text(json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}}))
        env |= {"GOOGLE_GEMINI_BASE_URL": url, "GEMINI_API_KEY": "fake-key"}
        return Setup(env, "fake-model", trace)
    if name == "opencode":
        config = home / ".config/opencode"
        (config / "node_modules").mkdir(parents=True)
        # as after opencode's first start: its plugin SDK is in the config folder's lock file, so it does
        # not install it again (from registry.npmjs.org, in the background of every start until it is)
        (config / "package-lock.json").write_text(json.dumps(
            {"packages": {"": {"dependencies": {"@opencode-ai/plugin": "*"}}}}))
        (config / "opencode.json").write_text(json.dumps({"provider": {"fake": {
                "npm": "@ai-sdk/openai-compatible", "name": "fake", "options": {"baseURL": url + "/v1", "apiKey": "sk"},
                "models": {"fake-model": {"name": "fake"}}}}}))
        return Setup(env, "fake/fake-model", trace)
    # aider: the model's metadata, else aider fetches litellm's price list from raw.githubusercontent.com
    (home / ".aider.model.metadata.json").write_text(json.dumps({"openai/fake-model": {
        "max_input_tokens": 32000, "max_output_tokens": 4096, "input_cost_per_token": 0, "output_cost_per_token": 0,
        "litellm_provider": "openai", "mode": "chat"}}))
    env |= {"OPENAI_API_BASE": url + "/v1", "OPENAI_API_KEY": "sk-fake"}
    return Setup(env, "openai/fake-model", trace)


def use(monkeypatch, setup: Setup) -> None:
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in setup.env.items():
        monkeypatch.setenv(key, value)


def done(params: dict) -> bool:
    """The agent exited 0, or wrote proposal.md and then neither exited nor did more (codex 0.171 at
    times, after its last message: the watchdog ends it and its change goes on)."""
    return params["exit_code"] == 0 or params.get("ended", "").startswith("by the watchdog")


def lr_of(ws) -> float:
    return hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value


def tool_results(body: dict) -> list[str]:
    """The tool results in a request, in order: what the agent told the model its tools did
    (Chat Completions, Anthropic Messages, OpenAI Responses, Gemini)."""
    found = []
    for message in body.get("messages", []):
        if message.get("role") == "tool":
            found.append(json.dumps(message.get("content")))
        elif isinstance(message.get("content"), list):
            found += [json.dumps(b.get("content")) for b in message["content"]
                      if isinstance(b, dict) and b.get("type") == "tool_result"]
    for item in body.get("input", []) if isinstance(body.get("input"), list) else []:
        if isinstance(item, dict) and str(item.get("type", "")).endswith("call_output"):
            found.append(json.dumps(item.get("output")))
    for content in body.get("contents", []):
        found += [json.dumps(p["functionResponse"]) for p in content.get("parts", []) if "functionResponse" in p]
    return found


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
    assert proposal["params"]["agent"] == name and done(proposal["params"])
    assert "discarded" not in proposal["params"], proposal["params"]  # it changed nothing beyond train.py
    assert "is installed; the preset was tested with" not in out  # the pinned version is the tested one
    assert ws.git.dirty_paths() == []
    setup.assert_loopback_only(server.url, server)


@pytest.mark.parametrize("name", NAMES)
def test_the_real_agent_against_a_dead_endpoint_ends_with_a_reason(name, make_workspace, tmp_path, monkeypatch):
    """Nothing listens at the endpoint: the proposal ends within the watchdog time (or at once), the
    ledger says why, and the loop stops cleanly at its limit of failures in a row (1 here: that the
    loop goes on after a failure is tests/test_loop_fast.py's; each agent run here costs half a minute)."""
    executable(name)
    ws = make_workspace()
    with FakeAgentModel(name, ws.root) as server:
        dead = server.url  # closed when the block ends: a port where nothing listens
    setup = configure(name, tmp_path / "home", dead)
    use(monkeypatch, setup)
    monkeypatch.setattr(loop_module, "MAX_PROPOSER_FAILURES", 1)
    idle = 30  # long enough for each agent to start and call the endpoint on a loaded machine (checked below)
    config = ProposerConfig(name="cmd", agent=name, model=setup.model, agent_timeout=600, agent_idle_timeout=idle)
    logs: list[str] = []
    started = time.monotonic()
    with Loop.open(ws.root, log=logs.append, executor=ScriptedExecutor(ws)) as lp:
        with pytest.raises(ProposerError):
            lp.run(CmdProposer(config, log=logs.append), Limits(max_experiments=1))
    elapsed = time.monotonic() - started
    assert elapsed < idle + 90, elapsed  # bounded by the watchdog, not by agent_timeout
    failed = [r for r in Ledger.open(ws.ledger_path).rows if r.kind == "experiment"]
    assert [r.status for r in failed] == ["invalid"], failed
    reasons = " | ".join(r.reason for r in failed)
    assert any(why in reasons for why in ("made no progress", "exited with code", "made no change to train.py")), reasons
    assert lr_of(ws) == 0.04 and ws.git.dirty_paths() == []
    setup.assert_loopback_only(dead)  # no fallback to the agent's own API, nor anything else


# How each agent answers the model when it refuses: claude and opencode by their permission rules;
# gemini offers no shell under auto_edit and reads only in the workspace; codex runs commands in its
# sandbox, where the data cache is unreadable and the harness's data refuses to load inside an agent.
# aider is not here: it has no tools (the model answers with whole files for the two files on its
# command line), and --no-suggest-shell-commands keeps it from running commands a reply mentions.
REFUSED = {
    "claude": ("requires approval", "haven't granted"),
    "codex": ("the data is refused inside a proposer's agent", "permission denied"),
    "gemini": ('tool "run_shell_command" not found', "path not in workspace"),
    "opencode": ("a rule which prevents you from using this specific tool call",),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_the_model_asks_for_a_training_run_and_the_validation_shards_and_the_agent_refuses(
        name, make_workspace, tmp_path, monkeypatch):
    """The scripted model asks to train, to print a validation shard with the shell and to read it
    with the agent's file tool: each is refused and the refusal goes back to the model; no run
    happens; the edit still lands."""
    executable(name)
    ws = make_workspace()
    shard = open_prepared(ws.settings()).shard_paths("val")[0]
    script = [shell(f"{sys.executable} train.py"), shell(f"head -c 256 {shard} | od -c"), read(str(shard)),
              *standard_script(PROPOSAL)[:-1], finish("All done.")]
    with FakeAgentModel(name, ws.root, script) as server:
        setup = configure(name, tmp_path / "home", server.url)
        use(monkeypatch, setup)
        config = ProposerConfig(name="cmd", agent=name, model=setup.model, agent_timeout=300, agent_idle_timeout=120)
        proposal = CmdProposer(config, log=[].append).propose(make_context(ws))
    assert proposal.description == "matrix lr 0.04 -> 0.05 (from proposal.md)" and lr_of(ws) == 0.05
    assert done(proposal.params)
    results = tool_results(server.requests[-1]["body"])
    assert len(results) >= 5, results
    for answer in results[:3]:  # the three asks: refused, and said so to the model
        assert any(why in answer.lower().replace('\\"', '"') for why in REFUSED[name]), (answer, results)
    assert "ARTOK" not in " ".join(results)  # no shard's bytes reached the model
    assert not (ws.runs_dir.exists() and any(ws.runs_dir.iterdir()))  # no training run happened
    setup.assert_loopback_only(server.url, server)

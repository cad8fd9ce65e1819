"""The `llm` proposer against a real HTTP server on loopback speaking OpenAI's chat completions
and Anthropic's messages protocols, through the official client libraries."""

from __future__ import annotations

import socket
import time

import pytest

from autoresearch import hparams
from autoresearch.errors import ProposerError, SettingsError
from autoresearch.ledger import Ledger, Row
from autoresearch.proposers.base import Context, proposal_dir
from autoresearch.proposers.chat import ChatError
from autoresearch.proposers.config import ProposerConfig
from autoresearch.proposers.llm import LLMProposer
from tests.fakellm import FakeLLM, error, reply, stall

SECRET = "sk-test-5f3a9c1e7d2b4a6f8e0c"
PROVIDERS = ["openai", "anthropic"]


def make_context(ws) -> Context:
    return Context(ws=ws, settings=ws.settings(), ledger=Ledger.open(ws.ledger_path), best_commit=ws.git.head(),
                   best_source=ws.train_py.read_text(), best_bpb=None, sigma=0.005)


def config_for(provider: str, url: str, **overrides) -> ProposerConfig:
    base = url + "/v1" if provider == "openai" else url
    values = dict(name="llm", provider=provider, model="gpt-4o-mini" if provider == "openai" else "claude-3-5-haiku",
                  base_url=base, api_key_env="FAKE_LLM_KEY", retry_delay=0.01, request_timeout=10.0,
                  prices={"gpt-4o-mini": (1.0, 2.0), "claude-3-5-haiku": (1.0, 2.0)})
    values.update(overrides)
    return ProposerConfig(**values)


def edit(search: str, replace: str, description: str = "raise the matrix lr", fence: bool = False) -> str:
    block = f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE"
    if fence:
        block = f"```python\n{block}\n```"
    return f"Description: {description}\nHypothesis: a larger lr learns faster in a short budget\n\n{block}\n"


def lr_line(ws) -> str:
    return next(line for line in ws.train_py.read_text().splitlines() if line.startswith("MATRIX_LR ="))


def last_user_message(body: dict) -> str:
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    return SECRET


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_good_edit_is_applied_and_accounted(make_workspace, key, provider):
    ws = make_workspace()
    line = lr_line(ws)
    with FakeLLM([reply(edit(line, line.replace("0.04", "0.05")), 1200, 300)]) as server:
        logs: list[str] = []
        proposer = LLMProposer(config_for(provider, server.url), log=logs.append)
        proposal = proposer.propose(make_context(ws))
    assert hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value == 0.05
    assert proposal.description == "raise the matrix lr"
    assert proposal.hypothesis == "a larger lr learns faster in a short budget"
    assert proposal.tokens == 1500 and proposal.cost_usd == pytest.approx((1200 * 1.0 + 300 * 2.0) / 1e6)
    assert proposal.params["provider"] == provider and proposal.params["replies"] == 1
    request = server.requests[0]
    assert request["path"] == ("/v1/chat/completions" if provider == "openai" else "/v1/messages")
    assert SECRET in (request["headers"].get("authorization", "") + request["headers"].get("x-api-key", ""))
    body = request["body"]
    system = body["messages"][0]["content"] if provider == "openai" else body["system"]
    assert "<<<<<<< SEARCH" in system and "Description:" in system
    assert "# The current train.py" in last_user_message(body) and "# The brief (program.md)" in last_user_message(body)
    prompt = (proposal_dir(ws) / "prompt.md").read_text()
    assert "# System prompt" in prompt and line in prompt and SECRET not in prompt
    assert "raise the matrix lr" in ws.notes_path.read_text()


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_non_matching_edit_and_a_syntax_error_are_fed_back_and_retried(make_workspace, key, provider):
    ws = make_workspace()
    line = lr_line(ws)
    script = [
        reply(edit("MATRIX_LR = 0.07  # not what the file says", "MATRIX_LR = 0.05"), 1000, 100),
        reply(edit(line, line.replace("0.04", "(0.05")), 1100, 100),
        reply(edit(line, line.replace("0.04", "0.05"), fence=True), 1200, 100),
    ]
    with FakeLLM(script) as server:
        logs: list[str] = []
        proposal = LLMProposer(config_for(provider, server.url), log=logs.append).propose(make_context(ws))
    bodies = server.bodies()
    assert len(bodies) == 3
    second, third = last_user_message(bodies[1]), last_user_message(bodies[2])
    assert "block 1 does not match train.py" in second and "MATRIX_LR = 0.07  # not what the file says" in second
    assert bodies[1]["messages"][-2]["role"] == "assistant"  # the model sees its own failed reply
    assert "does not compile after the edits" in third and "line" in third
    assert hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value == 0.05
    assert proposal.tokens == 3600 and proposal.params["replies"] == 3
    assert sum("not applied" in m for m in logs) == 2
    conversation = (proposal_dir(ws) / "conversation.md").read_text()
    assert conversation.count("## Not applied") == 2 and "## Applied" in conversation


def test_the_retry_limit_ends_in_a_proposer_error_with_the_spend(make_workspace, key):
    ws = make_workspace()
    original = ws.train_py.read_text()
    bad = reply(edit("NOT_IN_THE_FILE = 1", "NOT_IN_THE_FILE = 2"), 1000, 1000)
    with FakeLLM([bad, bad]) as server:
        proposer = LLMProposer(config_for("openai", server.url, edit_attempts=2), log=lambda _: None)
        with pytest.raises(ProposerError, match="no applicable edit after 2 replies") as e:
            proposer.propose(make_context(ws))
    assert e.value.tokens == 4000 and e.value.cost_usd == pytest.approx(2 * (1000 * 1.0 + 1000 * 2.0) / 1e6)
    assert e.value.description == "raise the matrix lr"
    assert ws.train_py.read_text() == original
    assert "failed before running" in ws.notes_path.read_text()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("status", [429, 500])
def test_rate_limits_and_server_errors_are_retried_with_backoff(make_workspace, key, provider, status):
    ws = make_workspace()
    line = lr_line(ws)
    with FakeLLM([error(status, retry_after=0.2), error(status), reply(edit(line, line.replace("0.04", "0.05")))]) as server:
        logs: list[str] = []
        waits: list[float] = []
        proposer = LLMProposer(config_for(provider, server.url), log=logs.append, sleep=waits.append)
        proposal = proposer.propose(make_context(ws))
    assert len(server.requests) == 3 and proposal.description == "raise the matrix lr"
    what = "rate limited (HTTP 429" if status == 429 else "server error (HTTP 500"
    assert sum(what in m for m in logs) == 2
    assert waits == [0.2, 0.02]  # the server's Retry-After, then exponential backoff from retry_delay


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_hung_endpoint_times_out_with_a_clear_error(make_workspace, key, provider):
    ws = make_workspace()
    with FakeLLM([stall(30), stall(30)]) as server:
        proposer = LLMProposer(config_for(provider, server.url, request_timeout=0.5, max_retries=1), log=lambda _: None)
        started = time.monotonic()
        with pytest.raises(ChatError, match=r"failed 2 time\(s\), last: no answer within 0.5 s"):
            proposer.propose(make_context(ws))
        assert time.monotonic() - started < 10


def test_a_dead_endpoint_is_a_clear_error(make_workspace, key):
    ws = make_workspace()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs: list[str] = []
    proposer = LLMProposer(config_for("openai", f"http://127.0.0.1:{port}", max_retries=2), log=logs.append)
    with pytest.raises(ChatError, match=r"failed 3 time\(s\), last: connection failed.*is the server up"):
        proposer.propose(make_context(ws))
    assert sum("retry" in m for m in logs) == 2


def test_refused_key_and_missing_key_are_not_retried(make_workspace, key, monkeypatch):
    ws = make_workspace()
    with FakeLLM([error(401)]) as server:
        proposer = LLMProposer(config_for("openai", server.url), log=lambda _: None)
        with pytest.raises(ChatError, match="HTTP 401.*API key was refused"):
            proposer.propose(make_context(ws))
        assert len(server.requests) == 1
    monkeypatch.delenv("FAKE_LLM_KEY")
    with pytest.raises(SettingsError, match="FAKE_LLM_KEY is not set"):
        LLMProposer(config_for("openai", "http://127.0.0.1:9"))


def test_observe_appends_the_outcome_to_the_notes(make_workspace, key):
    ws = make_workspace()
    line = lr_line(ws)
    with FakeLLM([reply("Description: lr up\nNotes: lr 0.04 is the baseline's\n\n"
                        f"<<<<<<< SEARCH\n{line}\n=======\n{line.replace('0.04', '0.05')}\n>>>>>>> REPLACE")]) as server:
        proposer = LLMProposer(config_for("openai", server.url), log=lambda _: None)
        proposal = proposer.propose(make_context(ws))
    proposer.observe(proposal, [Row("abc1234", 1.91, 0.1, "discard", "lr up", gain=-0.01, rule="gain within noise")])
    notes = ws.notes_path.read_text()
    assert "lr 0.04 is the baseline's" in notes
    assert 'outcome of "lr up": discard val_bpb 1.910000 gain -0.0100 (gain within noise)' in notes

"""LLM proposers inside the research loop: accounting, caps, failed proposals, what a run folder
keeps, and the API key never written anywhere.

The fast tests run the loop with a scripted executor (tests/scripted.py) (the measurement is not under test
here); the slow one runs the real command line with real tiny training runs.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from autoresearch import hparams, status
from autoresearch.cli import main
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.proposers.config import ProposerConfig
from autoresearch.proposers.llm import LLMProposer
from autoresearch.research import Limits
from tests.fakellm import FakeLLM, reply
from tests.scripted import ScriptedExecutor

SECRET = "sk-live-7c1d0e9b3a5f4e2d8b6a"


def edit(ws_source: str, name: str, value, description: str) -> str:
    line = next(ln for ln in ws_source.splitlines() if ln.startswith(f"{name} ="))
    new = hparams.rewrite(line + "\n", {name: value}).rstrip("\n")
    return (f"Description: {description}\nHypothesis: it should help\nNotes: tried {name}={value}\n\n"
            f"<<<<<<< SEARCH\n{line}\n=======\n{new}\n>>>>>>> REPLACE\n")


def files_holding(root: Path, secret: str) -> list[str]:
    """Every file under `root` (git objects decompressed) that contains `secret`."""
    found = []
    needle = secret.encode()
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if ".git/objects/" in path.as_posix() and "/pack/" not in path.as_posix():
            try:
                data = zlib.decompress(data)
            except zlib.error:
                pass
        if needle in data:
            found.append(str(path.relative_to(root)))
    return found


def test_loop_with_llm_accounts_records_failures_stops_at_the_cost_cap(make_workspace, prepared, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", SECRET)
    ws = make_workspace(baseline_runs=2)
    source = ws.train_py.read_text()
    lr_up = edit(source, "MATRIX_LR", 0.05, "raise the matrix lr")
    source_after = hparams.rewrite(source, {"MATRIX_LR": 0.05})
    bad = "Description: an edit that cannot apply\n<<<<<<< SEARCH\nNOT_IN_FILE = 1\n=======\nNOT_IN_FILE = 2\n>>>>>>> REPLACE\n"
    deeper = edit(source_after, "DEPTH", 3, "one more layer")
    script = [reply(lr_up, 1000, 200), reply(bad, 1000, 200), reply(bad, 1000, 200), reply(deeper, 1000, 200),
              reply(lr_up, 1000, 200)]
    logs: list[str] = []
    with FakeLLM(script) as server:
        config = ProposerConfig(name="llm", provider="openai", model="gpt-4o-mini", base_url=server.url + "/v1",
                                api_key_env="TEST_LLM_KEY", edit_attempts=2, retry_delay=0.01,
                                prices={"gpt-4o-mini": (1.0, 2.0)})
        proposer = LLMProposer(config, log=logs.append)
        with Loop.open(ws.root, log=logs.append, executor=ScriptedExecutor(ws, values=[2.0, 2.0, 1.9, 1.95])) as loop:
            done = loop.run(proposer, Limits(max_experiments=10, max_cost=0.005))
        assert len(server.requests) == 4  # the cap stopped it before a fifth request
    assert done == 2
    assert any("stopping: cost cap reached (0.0056 USD spent, --max-cost 0.005)" in m for m in logs)
    rows = Ledger.open(ws.ledger_path).rows
    assert [(r.kind, r.status) for r in rows] == [("baseline", "keep")] * 2 + [
        ("experiment", "keep"), ("experiment", "invalid"), ("experiment", "discard")]
    keep, failed, discard = rows[2:]
    assert (keep.tokens, keep.cost_usd, keep.proposer) == (1200, pytest.approx(0.0014), "llm")
    assert failed.run_id == "" and failed.description == "an edit that cannot apply"
    assert failed.rule == "proposal-failed" and failed.reason.startswith("no applicable edit after 2 replies")
    assert (failed.tokens, failed.cost_usd) == (2400, pytest.approx(0.0028))
    assert any("proposer llm failed (1/5)" in m for m in logs)
    # the failed proposal's conversation is kept
    failed_dir = ws.root / failed.flags.removeprefix("files in ")
    assert failed_dir.parent == ws.runs_dir / "failed" and "## Not applied" in (failed_dir / "conversation.md").read_text()
    # each run folder holds exactly what the model saw, its replies and the proposal with its spend
    run = ws.runs_dir / discard.run_id
    prompt = (run / "prompt.md").read_text()
    assert "# System prompt" in prompt and "MATRIX_LR = 0.05" in prompt  # the train.py it saw: the kept change
    assert "raise the matrix lr" in prompt.split("Best kept changes")[1]
    assert "proposal-failed: no applicable edit" in prompt and "# The last run" in prompt
    assert 'outcome of "raise the matrix lr": keep' in prompt  # notes carry memory across experiments
    assert "## Applied" in (run / "conversation.md").read_text()
    record = json.loads((run / "proposal.json").read_text())
    assert record["proposer"] == "llm" and record["tokens"] == 1200 and record["params"]["model"] == "gpt-4o-mini"
    # notes.md survives the loop's resets; the git tree is clean; the key is nowhere
    assert 'outcome of "one more layer": discard' in ws.notes_path.read_text()
    assert ws.git.dirty_paths() == []
    assert files_holding(ws.root, SECRET) == [] and not any(SECRET in m for m in logs)
    summary = status.summarize(rows)
    assert summary.cost_usd == pytest.approx(0.0056) and summary.tokens == 4800 and summary.paid_proposals == 3


def test_token_cap_and_five_failures_in_a_row(make_workspace, prepared, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", SECRET)
    ws = make_workspace(baseline_runs=1)
    bad = "Description: nothing that applies\nno blocks at all"
    with FakeLLM([reply(bad, 100, 10)]) as server:
        config = ProposerConfig(name="llm", provider="anthropic", model="claude-3-5-haiku", base_url=server.url,
                                api_key_env="TEST_LLM_KEY", edit_attempts=1, retry_delay=0.01)
        logs: list[str] = []
        loop = Loop.open(ws.root, log=logs.append, executor=ScriptedExecutor(ws, values=[2.0]))
        assert loop.run(LLMProposer(config, log=logs.append), Limits(max_experiments=3, max_tokens=300)) == 0
        assert any("stopping: token cap reached (330 tokens spent, --max-tokens 300)" in m for m in logs)
        rows = Ledger.open(ws.ledger_path).rows
        assert [r.status for r in rows] == ["keep", "invalid", "invalid", "invalid"]
        with pytest.raises(Exception, match="no applicable edit"):
            loop.run(LLMProposer(config, log=logs.append), Limits(max_experiments=3))  # 5 failures in a row
        assert [r.status for r in Ledger.open(ws.ledger_path).rows].count("invalid") == 8
    assert ws.git.dirty_paths() == []


@pytest.mark.slow
def test_cli_loop_with_a_hosted_style_endpoint_end_to_end(make_workspace, monkeypatch, capsys):
    """`autoresearch loop --proposer llm ...` with real tiny training runs against the fake endpoint."""
    monkeypatch.setenv("TEST_LLM_KEY", SECRET)
    ws = make_workspace(budget=2, baseline_runs=1)
    settings_file = ws.root / "autoresearch.toml"
    settings_file.write_text(settings_file.read_text() + '\n[proposer]\nedit_attempts = 2\nretry_delay = 0.01\n'
                             '[proposer.prices]\n"my-model" = [2.0, 4.0]\n')
    ws.git.commit_all("proposer settings", paths=["autoresearch.toml"])
    source = ws.train_py.read_text()
    snoop = ("<<<<<<< SEARCH\nimport os\n=======\nimport os\nprint('KEY SEEN BY THE RUN:', "
             "os.environ.get('TEST_LLM_KEY'), flush=True)\n>>>>>>> REPLACE\n")  # a train.py that tries to leak it
    script = [reply("Description: a reply with no edit\nI would like to think more.", 900, 50),
              reply(edit(source, "MATRIX_LR", 0.05, "raise the matrix lr") + snoop, 1000, 200)]
    monkeypatch.chdir(ws.root)
    with FakeLLM(script) as server:
        code = main(["loop", "--proposer", "llm", "--provider", "openai", "--model", "my-model",
                     "--base-url", server.url + "/v1", "--api-key-env", "TEST_LLM_KEY", "--max-experiments", "1",
                     "--tag", "llm"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = Ledger.open(ws.ledger_path).rows
    # the experiment's own row (a borderline gain may be followed by a confirmation run's row)
    experiment = next(r for r in rows if r.kind != "baseline")
    assert experiment.kind == "experiment" and experiment.status in ("keep", "discard") and experiment.val_bpb, experiment
    assert experiment.description == "raise the matrix lr" and experiment.tokens == 2150
    assert experiment.cost_usd == pytest.approx((1900 * 2.0 + 250 * 4.0) / 1e6)
    run = ws.runs_dir / experiment.run_id
    assert {"prompt.md", "conversation.md", "proposal.json", "train.log", "result.json"} <= {p.name for p in run.iterdir()}
    assert "no SEARCH/REPLACE block" in (run / "conversation.md").read_text()  # fed back, then applied
    assert "KEY SEEN BY THE RUN: None" in (run / "train.log").read_text()
    assert files_holding(ws.root, SECRET) == [] and SECRET not in out
    assert main(["status"]) == 0
    assert "tokens over 1 proposal (" in capsys.readouterr().out  # the cost line of the summary

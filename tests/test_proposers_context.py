"""What LLM proposers are shown (context within a token budget), their configuration, prices and
notes."""

from __future__ import annotations

import json

import pytest

from autoresearch import settings as settings_mod
from autoresearch.errors import ProposerError, SettingsError
from autoresearch.ledger import Ledger, Row
from autoresearch.proposers import config as pconfig
from autoresearch.proposers import context
from autoresearch.proposers.base import Context
from autoresearch.proposers.notes import Notes
from autoresearch.proposers.pricing import price_of
from autoresearch.rundir import RunResult


def make_context(ws) -> Context:
    return Context(ws=ws, settings=ws.settings(), ledger=Ledger.open(ws.ledger_path), best_commit=ws.git.head(),
                   best_source=ws.train_py.read_text(), best_bpb=1.9, sigma=0.004)


def fake_history(ws, n_experiments: int = 30) -> None:
    """A ledger with a baseline, kept/discarded/crashed experiments, and the last run's files."""
    head = ws.git.head()
    rows = [Row(head, 2.0, 0.1, "keep", "baseline", run_id="0001", kind="baseline")]
    for i in range(n_experiments):
        status = ("keep", "discard", "discard", "crash")[i % 4]
        val = None if status == "crash" else 2.0 - 0.01 * i
        rule = "RuntimeError: CUDA out of memory in block 3" if status == "crash" else "gain within noise"
        rows.append(Row(f"{i:07x}", val, 0.1, status, f"idea number {i}", run_id=f"{i + 2:04d}", gain=0.01 * i,
                        rule=rule))
    Ledger.open(ws.ledger_path).append(*rows)
    last = ws.runs_dir / rows[-1].run_id
    last.mkdir(parents=True)
    records = [{"step": s, "loss": 6.0 - s * 0.01, "tokens_per_s": 12000.0 + s, "mfu": 1.5, "grad_norm": 0.5,
                "epoch": 1, "training_seconds": s * 0.1, "lr": 1.0} for s in range(300)]
    (last / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "{broken\n")
    (last / "train.log").write_text("starting\n" + "".join(f"\rstep {s:05d} | loss {6 - s * 0.01:.3f}" for s in range(300))
                                    + "\nTraceback (most recent call last):\nRuntimeError: CUDA out of memory in block 3\n")
    RunResult(run_id=rows[-1].run_id, commit=head, outcome="crash", wall_seconds=41.0, handover_seconds=None,
              summary={"training_seconds": 30.0}, error="train.py exited with code 1").save(last)


def test_context_shows_brief_code_ledger_last_run_and_notes(make_workspace):
    ws = make_workspace()
    fake_history(ws)
    Notes(ws.notes_path).record_proposal("llm", "idea number 3", "bigger batch", "batch 2^14 ran out of memory")
    ctx = make_context(ws)
    counter = context.token_counter("workspace", ctx.settings)
    assert counter.name.startswith("workspace BPE")
    prompt = context.build(ctx, Notes(ws.notes_path).read(), counter, budget=200_000)
    text = prompt.text
    assert prompt.shortened == ()
    assert text.index("# The brief (program.md)") < text.index("# The research so far") < text.index("# The current train.py")
    assert ws.train_py.read_text().strip() in text
    assert "baseline val_bpb 2.000000 (mean of 1 runs)" in text and "sigma 0.004000" in text
    assert "Best kept changes (lowest val_bpb first)" in text
    best_table = text.split("Best kept changes")[1].split("Most recent")[0]
    assert best_table.index("idea number 28") < best_table.index("idea number 0")  # lowest val_bpb first
    assert "Crashes, timeouts and invalid proposals" in text and "CUDA out of memory in block 3" in text
    assert "# The last run" in text and "Run 0031 (experiment, discard, val_bpb 1.710000): idea number 29" in text
    assert "Error: train.py exited with code 1" in text
    assert "loss (smoothed) step 0 t=0s: " in text and "-> step 299 t=30s: 3.0" in text
    assert "tokens/s: median 12," in text and "grad norm: median 0.5" in text
    log_tail = text.split("The end of its train.log")[1]
    assert "RuntimeError: CUDA out of memory" in log_tail
    assert "[... 298 progress lines ...]\nstep 00298 | loss 3.020\nstep 00299 | loss 3.010\nTraceback" in log_tail
    assert "# Your notes (notes.md)" in text and "batch 2^14 ran out of memory" in text
    assert "# Earlier experiments" in text and "idea number 1\n" in text


def test_context_fits_the_budget_by_shortening_and_refuses_too_small_a_budget(make_workspace):
    ws = make_workspace()
    fake_history(ws, n_experiments=120)
    notes = Notes(ws.notes_path)
    for i in range(60):
        notes.record_proposal("llm", f"note entry {i}", "h", "learned something " * 20)
    ctx = make_context(ws)
    counter = context.token_counter("workspace", ctx.settings)
    full = context.build(ctx, notes.read(), counter, budget=1_000_000)
    required = counter.count(context.sections(ctx, "")[0][0].levels[0]) + counter.count(ctx.best_source)
    budget = required + (full.tokens - required) // 3
    small = context.build(ctx, notes.read(), counter, budget=budget)
    assert small.tokens <= budget and small.shortened
    assert ws.train_py.read_text().strip() in small.text  # never shortened
    assert "note entry 59" in small.text  # the newest notes survive
    with pytest.raises(ProposerError, match="context budget is too small.*raise context_tokens"):
        context.build(ctx, notes.read(), counter, budget=required // 2)


def test_curve_summary_and_time_summary():
    records = [{"step": i, "loss": 5.0 - i / 100, "tokens_per_s": 1000.0, "mfu": 2.0, "grad_norm": 1.0} for i in range(101)]
    text = context.curve_summary(records)
    assert text.startswith("101 logged steps") and "lowest loss 4.0000; last 4.0000" in text
    assert context.curve_summary([]) == "no training metrics were logged"
    timing = context.time_summary({"wall_seconds": 50.0, "handover_seconds": 45.0, "eval_seconds": 3.0,
                                   "summary": {"training_seconds": 30.0, "num_steps": 120}})
    assert "launch to hand-over 45.0 s: 30.0 s of timed training steps, 15.0 s for everything else" in timing
    assert "the harness's evaluation 3.0 s" in timing and "120 steps" in timing


def test_proposer_section_is_outside_the_frozen_settings(tmp_path):
    s = settings_mod.from_preset("tiny")
    settings_mod.save(s, tmp_path)
    path = tmp_path / settings_mod.SETTINGS_FILE
    path.write_text(path.read_text() + '\n[proposer]\nname = "llm"\nmodel = "gpt-4.1"\napi_key_env = "MY_KEY"\n'
                    '[proposer.prices]\n"gpt-4.1" = [1.0, 2.0]\n')
    assert settings_mod.load(tmp_path) == s  # same settings, same hash: results stay comparable
    config = pconfig.load(tmp_path)
    assert (config.name, config.model, config.api_key_env, config.prices) == ("llm", "gpt-4.1", "MY_KEY", {"gpt-4.1": (1.0, 2.0)})
    assert config.replace(model="other", base_url=None).model == "other"
    path.write_text(path.read_text().replace('name = "llm"', 'name = "llm"\napi_key = "sk-oops"'))
    with pytest.raises(SettingsError, match="API keys are never stored in files"):
        pconfig.load(tmp_path)


def test_config_errors_and_keys_from_the_environment(monkeypatch):
    with pytest.raises(SettingsError, match="unknown key"):
        pconfig.from_table({"modle": "x"})
    with pytest.raises(SettingsError, match="unknown provider"):
        pconfig.from_table({"provider": "bard"})
    with pytest.raises(SettingsError, match="edit_attempts must be positive"):
        pconfig.ProposerConfig().replace(edit_attempts=0)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(SettingsError, match="OPENAI_API_KEY is not set"):
        pconfig.api_key(pconfig.ProposerConfig(name="llm"))
    monkeypatch.setenv("MY_KEY", "sk-test-0123456789abcdef")
    config = pconfig.ProposerConfig(api_key_env="MY_KEY")
    assert pconfig.api_key(config) == "sk-test-0123456789abcdef"
    assert pconfig.api_key(pconfig.ProposerConfig(base_url="http://127.0.0.1:1/v1")) == pconfig.LOCAL_KEY
    assert pconfig.redact("bad key sk-test-0123456789abcdef and sk-test-...", "sk-test-0123456789abcdef") == \
        "bad key *** and ***..."


def test_prices_table_overrides_and_unknown_models():
    cfg = pconfig.ProposerConfig
    assert price_of(cfg(model="gpt-4o-2024-08-06")).input_per_mtok == 2.5
    assert price_of(cfg(model="openai/gpt-4o-mini")).output_per_mtok == 0.6
    assert price_of(cfg(model="gpt-4o-mini", prices={"gpt-4o-mini": (1.0, 1.0)})).cost(500_000, 500_000) == 1.0
    assert price_of(cfg(model="mine", price_input=3.0)).cost(1_000_000, 1_000_000) == 3.0
    unknown = price_of(cfg(model="llama3.1:8b"))
    assert unknown.cost(10**6, 10**6) == 0 and "no price known for model 'llama3.1:8b'" in unknown.source


def test_notes_are_appended_atomically_and_kept(tmp_path):
    notes = Notes(tmp_path / "notes.md")
    assert notes.read() == ""
    notes.record_proposal("llm", "deeper", "more capacity", "depth 6 next")
    notes.record_outcome("deeper", "discard val_bpb 1.9 (gain within noise)")
    notes.record_failure("llm", "wider", "block 1 does not match train.py\n(details)")
    text = notes.read()
    assert text.startswith("# Research notes")
    assert text.index("llm: deeper") < text.index('outcome of "deeper": discard') < text.index("failed before running")
    assert "block 1 does not match train.py" in text and "(details)" not in text


def test_context_lists_what_parallel_workers_run_and_the_stale_wins_given_back(make_workspace):
    import dataclasses

    ws = make_workspace()
    ctx = dataclasses.replace(make_context(ws), in_flight=("DEPTH 8 -> 10",),
                              returned=("MATRIX_LR 0.04 -> 0.05", "a rotary base of 50000"))
    text = context.build(ctx, "", context.token_counter("workspace", ctx.settings), budget=200_000).text
    running = text.split("# Being run right now by other workers")[1]
    assert running.startswith(" (propose something different)\n\n- DEPTH 8 -> 10")
    given_back = text.split("# Won against an older best, but conflict with the current best train.py")[1]
    assert "- MATRIX_LR 0.04 -> 0.05\n- a rotary base of 50000" in given_back
    plain = context.build(make_context(ws), "", context.token_counter("workspace", ctx.settings), budget=200_000).text
    assert "Being run right now" not in plain and "Won against an older best" not in plain

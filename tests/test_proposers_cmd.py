"""The `cmd` proposer with small scripted agent executables (real subprocesses)."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from autoresearch import hparams
from autoresearch.errors import ProposerError, SettingsError
from autoresearch.ledger import Ledger
from autoresearch.proposers.base import Context, proposal_dir
from autoresearch.proposers.agents import AGENTS, GEMINI_WORKSPACE_SETTINGS, preflight, version_note, workspace_settings
from autoresearch.proposers.cmd import CmdProposer, command_for, last_output_line
from autoresearch.proposers.config import ProposerConfig

AGENT = textwrap.dedent('''\
    import os, pathlib, subprocess, sys, time
    workspace, prompt_file, mode = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
    prompt = prompt_file.read_text()
    assert "Edit only `train.py`" in prompt and "# The research so far" in prompt, prompt[:500]
    train = workspace / "train.py"
    def bump():
        train.write_text(train.read_text().replace("MATRIX_LR = 0.04", "MATRIX_LR = 0.05", 1))
    print("agent starting in", workspace)
    if mode == "edit":
        bump()
        (workspace / "proposal.md").write_text(
            "Description: raise the matrix lr\\nHypothesis: faster learning\\nNotes: lr 0.04 is the baseline's\\n")
    elif mode == "sprawl":
        bump()
        (workspace / "prepare.py").write_text("EVIL = 1\\n")
        (workspace / "stray.txt").write_text("left behind\\n")
        (workspace / "scratch").mkdir()
        (workspace / "scratch" / "notes.txt").write_text("x\\n")
        with open(workspace / "results.tsv", "a") as f:
            f.write("forged\\trow\\n")
        (workspace / "runs" / "0001" / "train.log").unlink()
        subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qam", "agent commit"],
                       cwd=workspace, check=True)
        print("Description: lr up, and some things I should not have done")
    elif mode == "hang":
        bump()
        pids = [subprocess.Popen(["sleep", "600"]).pid,
                subprocess.Popen(["setsid", "sleep", "600"]).pid, os.getpid()]
        (workspace.parent / "pids.txt").write_text(" ".join(map(str, pids)))
        time.sleep(600)
    elif mode == "fail":
        bump()
        print("error: out of credits", file=sys.stderr)
        sys.exit(3)
    elif mode == "broken":
        train.write_text(train.read_text().replace("MATRIX_LR = 0.04", "MATRIX_LR = (0.05", 1))
    elif mode == "busy":  # meanwhile a parallel worker's run under way writes its folder
        bump()
        (workspace / "runs" / "0007" / "metrics.jsonl").write_text('{"step": 1}\\n')
        (workspace / "runs" / "0001" / "planted.txt").write_text("not a run's\\n")
        print("Description: lr up while run 0007 trains")
    elif mode == "empty":  # aider: proposal.md is on its command line, so it exists, empty
        bump()
        (workspace / "proposal.md").write_text("")
        print("Description: lr up, said on the last line")
    elif mode == "idle":
        print("I looked around and changed nothing")
    elif mode == "linger":  # done, proposal written, but it does not exit
        bump()
        (workspace / "proposal.md").write_text("Description: raise the matrix lr, then linger\\n")
        print("All done.", flush=True)
        time.sleep(600)
    elif mode == "train":  # starts a training run itself, against the rules
        done = subprocess.run([sys.executable, "train.py"], cwd=workspace, capture_output=True, text=True)
        print("train.py exited with", done.returncode, done.stderr.strip().splitlines()[-1])
        bump()
''')


def make_context(ws) -> Context:
    return Context(ws=ws, settings=ws.settings(), ledger=Ledger.open(ws.ledger_path), best_commit=ws.git.head(),
                   best_source=ws.train_py.read_text(), best_bpb=None, sigma=0.005)


def proposer_for(tmp_path, mode: str, timeout: float = 60.0, logs: list[str] | None = None) -> CmdProposer:
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT)
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(agent))} {{workspace}} {{prompt_file}} {mode}"
    config = ProposerConfig(name="cmd", command=command, agent_timeout=timeout)
    return CmdProposer(config, log=(logs if logs is not None else []).append)


def test_an_agent_that_edits_train_py(make_workspace, tmp_path):
    ws = make_workspace()
    proposal = proposer_for(tmp_path, "edit").propose(make_context(ws))
    assert hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value == 0.05
    assert (proposal.description, proposal.hypothesis) == ("raise the matrix lr", "faster learning")
    assert proposal.params["exit_code"] == 0 and "discarded" not in proposal.params
    assert ws.git.changed_since("HEAD") == ["train.py"]  # proposal.md was read and removed
    assert "lr 0.04 is the baseline's" in ws.notes_path.read_text()
    log = (proposal_dir(ws) / "agent.log").read_text()
    assert "agent starting in" in log and log.startswith("$ ") and "prompt.md" in log


def test_a_training_run_started_by_the_agent_is_refused_by_the_data(make_workspace, tmp_path):
    """Inside an agent (its AUTORESEARCH_RUN_ID says so) the harness's data does not load: train.py
    fails at once with the reason, which the agent sees; its edit still goes on."""
    ws = make_workspace()
    proposal = proposer_for(tmp_path, "train").propose(make_context(ws))
    log = (proposal_dir(ws) / "agent.log").read_text()
    assert "train.py exited with 1" in log and "the data is refused inside a proposer's agent" in log, log
    assert proposal.params["exit_code"] == 0 and "discarded" not in proposal.params
    assert not ws.runs_dir.exists() or not any(ws.runs_dir.iterdir())  # no run came of it


def test_an_empty_proposal_md_counts_as_none(make_workspace, tmp_path):
    ws = make_workspace()
    proposal = proposer_for(tmp_path, "empty").propose(make_context(ws))
    assert proposal.description == "lr up, said on the last line" and "discarded" not in proposal.params
    assert not (ws.root / "proposal.md").exists()


def test_changes_beyond_train_py_are_discarded_and_reported(make_workspace, tmp_path):
    ws = make_workspace()
    (ws.runs_dir / "0001").mkdir(parents=True)
    (ws.runs_dir / "0001" / "train.log").write_text("an earlier run\n")
    head = ws.git.head()
    ledger_before = ws.ledger_path.read_bytes() if ws.ledger_path.exists() else None
    logs: list[str] = []
    proposal = proposer_for(tmp_path, "sprawl", logs=logs).propose(make_context(ws))
    assert proposal.description == "lr up, and some things I should not have done"  # its last output line
    assert hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value == 0.05  # kept
    assert ws.git.head() == head and ws.git.changed_since(head) == ["train.py"]  # its commit undone
    assert (ws.root / "prepare.py").read_text().startswith('"""Fixed harness API')
    assert not (ws.root / "stray.txt").exists() and not (ws.root / "scratch").exists()
    assert (ws.ledger_path.read_bytes() if ws.ledger_path.exists() else None) == ledger_before
    discarded = " | ".join(proposal.params["discarded"])
    for what in ("prepare.py was modified", "results.tsv was", "git HEAD moved", "stray.txt was created (deleted)",
                 "scratch/notes.txt was created (deleted)", "runs/0001/train.log was deleted (untracked: it cannot"):
        assert what in discarded, discarded
    assert any("discarded changes beyond train.py" in m and "prepare.py" in m for m in logs)


@pytest.mark.slow  # waits out the agent's time limit
def test_a_hung_agent_is_killed_at_its_limit_with_everything_it_started(make_workspace, tmp_path):
    ws = make_workspace()
    started = time.monotonic()
    with pytest.raises(ProposerError, match="did not finish within agent_timeout 3 s"):
        proposer_for(tmp_path, "hang", timeout=3).propose(make_context(ws))
    assert time.monotonic() - started < 20
    pids = [int(p) for p in (ws.root.parent / "pids.txt").read_text().split()]
    time.sleep(0.2)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []


@pytest.mark.parametrize("mode, message", [
    ("fail", "exited with code 3"),
    ("idle", "made no change to train.py"),
    ("broken", "left a train.py that does not compile"),
])
def test_a_dead_agent_is_a_clear_error(make_workspace, tmp_path, mode, message):
    ws = make_workspace()
    with pytest.raises(ProposerError, match=message):
        proposer_for(tmp_path, mode).propose(make_context(ws))
    with pytest.raises(ProposerError, match="agent command 'no-such-agent-xyz' was not found"):
        CmdProposer(ProposerConfig(name="cmd", command="no-such-agent-xyz {prompt}")).propose(make_context(ws))


def test_presets_and_templates():
    values = {"prompt": "DO IT", "prompt_file": "/w/.autoresearch/proposal/prompt.md", "workspace": "/w",
              "description_file": "proposal.md", "model": "", "proposal_dir": "/w/.autoresearch/proposal",
              "data_dir": "/c/autoresearch"}
    argv = {name: command_for(ProposerConfig(name="cmd", agent=name), values) for name in AGENTS}
    assert argv["claude"][:5] == ["claude", "-p", "DO IT", "--permission-mode", "acceptEdits"]
    assert "Bash(python -m py_compile train.py)" in argv["claude"]  # the check the prompt suggests
    assert argv["codex"] == [  # --full-auto is gone; a sandbox profile that cannot read the data
        "codex", "exec", "-c", 'default_permissions="autoresearch"',
        "-c", 'permissions.autoresearch={extends=":workspace", filesystem={"/c/autoresearch"="none"}}',
        "--skip-git-repo-check", "-c", "check_for_update_on_startup=false", "-c", "analytics.enabled=false",
        "--disable", "plugins", "DO IT"]
    assert argv["gemini"] == ["gemini", "-p", "DO IT", "--approval-mode", "auto_edit", "--skip-trust"]
    defaults = json.loads(Path(AGENTS["gemini"].env["GEMINI_CLI_SYSTEM_DEFAULTS_PATH"]).read_text())  # shipped
    assert defaults["privacy"] == {"usageStatisticsEnabled": False} and "web_fetch" in defaults["tools"]["exclude"]
    assert argv["opencode"] == ["opencode", "run", "DO IT"]
    assert argv["aider"][:3] == ["aider", "--message-file", "/w/.autoresearch/proposal/prompt.md"]
    assert argv["aider"][-2:] == ["train.py", "proposal.md"] and "--no-auto-commits" in argv["aider"]
    with_model = command_for(ProposerConfig(name="cmd", agent="codex", model="o4-mini"), values)
    assert with_model[:4] == ["codex", "exec", "--model", "o4-mini"]
    custom = command_for(ProposerConfig(name="cmd", command="my-agent --in '{prompt_file}' --cwd={workspace} {model_args}",
                                        model="m1"), values)
    assert custom == ["my-agent", "--in", "/w/.autoresearch/proposal/prompt.md", "--cwd=/w", "--model", "m1"]
    quoting = command_for(ProposerConfig(name="cmd", command="a {prompt} {data_dir}"),
                          {**values, "prompt": "keep {model} and {workspace} as written"})
    assert quoting == ["a", "keep {model} and {workspace} as written", "/c/autoresearch"]  # one pass
    with pytest.raises(SettingsError, match="unknown agent 'cursor'"):
        command_for(ProposerConfig(name="cmd", agent="cursor"), values)
    with pytest.raises(SettingsError, match="needs --agent"):
        CmdProposer(ProposerConfig(name="cmd"))


def test_a_missing_model_key_or_configuration_is_refused_before_the_agent_starts(tmp_path):
    home = {"HOME": str(tmp_path), "PATH": "/usr/bin"}
    with pytest.raises(SettingsError, match="aider needs a model.*OpenRouter login"):
        preflight("aider", "", home)
    preflight("aider", "openai/m", home)
    with pytest.raises(SettingsError, match="opencode needs --model PROVIDER/MODEL"):
        preflight("opencode", "", home)
    with pytest.raises(SettingsError, match="must be PROVIDER/MODEL, got 'gpt-4.1'"):
        preflight("opencode", "gpt-4.1", home)
    preflight("opencode", "fake/m", home)
    with pytest.raises(SettingsError, match="codex has no provider: run `codex login`"):
        preflight("codex", "", home)
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "config.toml").write_text(
        'model_provider = "local"\n[model_providers.local]\nbase_url = "http://127.0.0.1:1/v1"\nenv_key = "LOCAL_KEY"\n')
    with pytest.raises(SettingsError, match=r"reads its key from \$LOCAL_KEY, which is not set"):
        preflight("codex", "", home)
    preflight("codex", "", {**home, "LOCAL_KEY": "k"})
    with pytest.raises(SettingsError, match="gemini has no auth method.*selectedType"):
        preflight("gemini", "", home)
    (tmp_path / ".gemini").mkdir()
    (tmp_path / ".gemini" / "settings.json").write_text('{"security": {"auth": {"selectedType": "gemini-api-key"}}}')
    preflight("gemini", "", home)
    preflight("claude", "", home)  # claude says itself, at once, that it is not logged in


def test_the_last_line_in_a_reason_says_something(tmp_path):
    """What real agents end with on a dead endpoint: gemini a page of stack frames, opencode a
    terminal reset; the reason quotes the line before."""
    log = tmp_path / "agent.log"
    log.write_text("$ gemini -p '{prompt}'\nAttempt 3 failed. Error: fetch failed\n    at async Models.x (file:///b.js:2:1)\n"
                   "    at async Turn.run (file:///b.js:3:1)\n\x1b[0m\n")
    assert last_output_line(log) == "Attempt 3 failed. Error: fetch failed"
    log.write_text("$ agent\n\x1b[91m\x1b[1mError: \x1b[0mboom\nTraceback:\n  File \"a.py\", line 3, in <module>\n")
    assert last_output_line(log) == "Traceback:"
    log.write_text("$ agent\n\x1b[0m\n")
    assert last_output_line(log) == ""


def test_the_version_check_names_the_tested_version(tmp_path):
    fake = tmp_path / "claude"
    fake.write_text("#!/bin/sh\necho '9.9.9 (Claude Code)'\n")
    fake.chmod(0o755)
    note = version_note("claude", str(fake))
    assert f"claude 9.9.9 is installed; the preset was tested with {AGENTS['claude'].tested_version}" in note
    assert "it still runs" in note
    fake.write_text(f"#!/bin/sh\necho '{AGENTS['claude'].tested_version} (Claude Code)'\n")
    assert version_note("claude", str(fake)) == ""
    assert version_note("claude", str(tmp_path / "missing")) == ""


@pytest.mark.slow  # waits out the watchdog
def test_an_agent_that_only_repeats_itself_is_stopped_by_the_watchdog(make_workspace, tmp_path):
    """No new output (a counting retry message is not new) and no file change: ended long before
    agent_timeout, with the reason."""
    ws = make_workspace()
    script = tmp_path / "retry.sh"
    script.write_text("#!/bin/sh\ni=0\nwhile true; do i=$((i+1)); echo \"Reconnecting... $i/5\"; sleep 0.3; done\n")
    script.chmod(0o755)
    config = ProposerConfig(name="cmd", command=str(script), agent_timeout=120, agent_idle_timeout=3)
    started = time.monotonic()
    with pytest.raises(ProposerError, match="made no progress .* for agent_idle_timeout 3 s"):
        CmdProposer(config, log=[].append).propose(make_context(ws))
    assert time.monotonic() - started < 60


@pytest.mark.slow  # waits out the watchdog
def test_an_agent_that_is_done_but_does_not_exit_keeps_its_change(make_workspace, tmp_path):
    """proposal.md written, train.py changed, then no exit (codex 0.171 at times): the watchdog
    ends it and the change goes on, saying so."""
    ws = make_workspace()
    logs: list[str] = []
    config = dataclasses.replace(proposer_for(tmp_path, "linger").config, agent_idle_timeout=3)
    proposal = CmdProposer(config, log=logs.append).propose(make_context(ws))
    assert proposal.description == "raise the matrix lr, then linger"
    assert proposal.params["ended"] == "by the watchdog, 3 s after it wrote proposal.md"
    assert proposal.params["exit_code"] is None and any("its change goes on" in line for line in logs)
    assert hparams.read_block(ws.train_py.read_text())["MATRIX_LR"].value == 0.05


def test_run_folders_under_way_keep_what_they_write_while_the_agent_works(make_workspace, tmp_path):
    """With parallel workers a run under way writes its folder while the agent works: kept; a file
    in another run's folder is still the agent's and is removed."""
    ws = make_workspace()
    for run_id in ("0001", "0007"):
        (ws.runs_dir / run_id).mkdir(parents=True)
    ctx = dataclasses.replace(make_context(ws), busy_runs=("0007",))
    proposal_for = proposer_for(tmp_path, "busy").propose(ctx)
    assert proposal_for.description == "lr up while run 0007 trains"
    assert (ws.runs_dir / "0007" / "metrics.jsonl").exists()
    assert not (ws.runs_dir / "0001" / "planted.txt").exists()


def test_the_test_install_pins_the_versions_the_presets_were_tested_with():
    script = (Path(__file__).resolve().parent.parent / "scripts" / "install-agents.sh").read_text()
    packages = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex", "gemini": "@google/gemini-cli",
                "opencode": "opencode-ai", "aider": "aider-chat="}
    for name, package in packages.items():
        assert f"{package}@{AGENTS[name].tested_version}" in script or \
            f"{package}={AGENTS[name].tested_version}" in script, name


def test_gemini_gets_the_harness_settings_in_the_workspace_while_it_runs_only(make_workspace):
    """gemini skips a system-defaults file that is not root's all the way up (a venv, /tmp): the
    settings go into the workspace's .gemini/settings.json for the run, out of git, and away after."""
    ws = make_workspace()
    settings = ws.root / GEMINI_WORKSPACE_SETTINGS
    with workspace_settings(AGENTS["gemini"], ws.root, ws.git.exclude):
        assert json.loads(settings.read_text())["privacy"] == {"usageStatisticsEnabled": False}
        assert ws.git.dirty_paths() == []  # excluded in this clone: git status stays clean
    assert not settings.parent.exists() and ws.git.dirty_paths() == []
    with workspace_settings(AGENTS["claude"], ws.root, ws.git.exclude):
        assert not settings.parent.exists()  # the other presets need none
    settings.parent.mkdir()
    settings.write_text('{"model": {"name": "mine"}}')
    with workspace_settings(AGENTS["gemini"], ws.root, ws.git.exclude):
        assert settings.read_text() == '{"model": {"name": "mine"}}'  # the workspace's own is left alone
    assert settings.exists()
    assert AGENTS["gemini"].env["GEMINI_CLI_TRUST_WORKSPACE"] == "true"  # else gemini ignores the file

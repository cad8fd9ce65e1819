"""`cmd`: a coding-agent CLI, run headless in the workspace, makes each change to train.py.

Presets (proposers/agents.py: command lines, permissions, tested versions, checks made before
the agent starts) run the agents' non-interactive modes, allowed to edit files, with a shell at
most for a syntax check:

    claude    claude -p PROMPT --permission-mode acceptEdits --allowedTools "Bash(python -m py_compile train.py)" ...
    codex     codex exec -c default_permissions=... --skip-git-repo-check PROMPT   (a sandbox profile:
              writes in the workspace, no network, the data cache unreadable)
    aider     aider --message-file PROMPT_FILE --yes-always --no-auto-commits ... train.py proposal.md
    gemini    gemini -p PROMPT --approval-mode auto_edit --skip-trust
    opencode  opencode run PROMPT   (OPENCODE_CONFIG_CONTENT: shell denied but the syntax check)

(`--model M` is passed on when a model is configured.) A custom `--command TEMPLATE` is split
like a shell line and its placeholders replaced in each word: {prompt} (the prompt text, one
argument), {prompt_file}, {workspace}, {description_file}, {proposal_dir}, {model}, {data_dir}
(the data cache, $AUTORESEARCH_CACHE: shards and downloads, for a rule that denies it to the
agent), and {model_args} (a word of its own: the preset's model flag and the model, or nothing).

Conventions for the agent (the prompt states them):
- change `train.py` only; the harness runs the experiment after the agent exits;
- describe the change in `proposal.md` in the workspace (`Description: <one line>`, optionally
  `Hypothesis:` and `Notes:`), or else make `Description: <one line>` the last line it prints:
  the last non-empty output line is the description when the file is missing.

Watchdog: no new output line and no change to train.py or proposal.md for agent_idle_timeout
seconds ends the agent (an unreachable endpoint, a question nobody answers), besides agent_timeout.
An agent ended so after it wrote proposal.md (done, but it did not exit) keeps its change.

Containment: the agent runs in its own process group with the environment marker the harness
uses for runs; at `agent_timeout` (and after it exits) the whole group, and every process that
carries the marker, is ended. Whatever it changed beyond train.py (and its proposal.md) is
discarded and reported (containment.py): fixed files, the ledger, git refs and HEAD (a commit it
made is undone, its train.py kept), harness code, other tracked files, new files. A dead agent
(non-zero exit, timeout, no change, train.py that does not compile) is a `ProposerError`: the loop
logs it, records it as `invalid` and moves on, with the agent's log kept in `runs/failed/`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autoresearch import containment, processes
from autoresearch.data.prepare import cache_root
from autoresearch.proposers.agents import AGENTS, agent_env, preflight, version_note, workspace_settings
from autoresearch.errors import ProposerError, SettingsError
from autoresearch.ledger import Row
from autoresearch.proposers import context
from autoresearch.proposers.base import Context, Proposal, begin_proposal
from autoresearch.proposers.config import ProposerConfig
from autoresearch.proposers.edits import EditError, check_syntax, parse_reply
from autoresearch.proposers.llm import outcome_text
from autoresearch.proposers.notes import Notes
from autoresearch.workspace import RUNS_DIR, TRAIN_FILE, Workspace

DESCRIPTION_FILE = "proposal.md"  # in the workspace root, written by the agent, read and removed by the harness
PROMPT_FILE = "prompt.md"
LOG_FILE = "agent.log"
MAX_DESCRIPTION = 200
ALLOWED = (TRAIN_FILE, DESCRIPTION_FILE)  # what the agent may change: the rest is undone (containment.py)


INSTRUCTIONS = """\
# Your task: one experiment

You are the proposer of an autonomous research loop, working in the workspace {workspace}.
Make ONE change to `train.py` that you expect to lower val_bpb (validation bits per byte) within
the fixed training budget, then exit. The harness then commits your change, trains and evaluates
it with its own code, records the result in results.tsv, and keeps or discards the commit.

Rules for this step (the harness enforces them):
- Edit only `train.py`. Changes to any other file (prepare.py, autoresearch.toml, program.md,
  results.tsv, new files...) are discarded. Do not commit: the harness does.
- Do not run training, `python train.py` or `autoresearch run/loop`: the harness runs the
  experiment after you exit. Reading files and quick checks (e.g. `python -m py_compile train.py`)
  are fine.
- No new packages. You have {timeout:g} seconds; then you are stopped and the change is lost.
- Read `program.md` (the brief) and `notes.md` (notes of earlier experiments) before deciding;
  do not retry what failed or was discarded unless you change why.

When done, write the file `{description_file}` in the workspace with:

Description: <one line: what you changed and why>
Hypothesis: <what you expect to happen to val_bpb, and why>
Notes: <optional: what to remember for later experiments>

If you cannot write that file, make the last line you print `Description: <one line>`.

The state of the research follows.
"""


@dataclass(frozen=True)
class AgentRun:
    exit_code: int | None
    timed_out: bool
    seconds: float
    ended_processes: int  # processes still alive after the agent ended (killed)
    stalled: bool = False  # ended by the watchdog: no new output and no file change for idle_timeout


POLL = 0.5  # seconds between the watchdog's looks
PLACEHOLDER = re.compile(r"\{(\w+)\}")
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # terminal colours and cursor moves
STACK_FRAME = re.compile(r'\s+(at \S|File ".*", line \d+)')  # JavaScript, Python


@dataclass
class Watchdog:
    """Progress of an agent: a new line in its output (digits aside: a counting retry message is
    not progress) or a change to one of the watched files. `idle()`: seconds without progress."""

    log_path: Path
    files: tuple[Path, ...]
    _offset: int = 0
    _seen: set[str] = field(default_factory=set)
    _stamps: dict[Path, tuple[int, int] | None] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self._stamps = {p: self._stamp(p) for p in self.files}

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _new_output(self) -> bool:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return False
        cut = data.rfind(b"\n") + 1  # whole lines only
        self._offset += cut
        fresh = False
        for line in data[:cut].decode(errors="replace").replace("\r", "\n").splitlines():
            key = re.sub(r"[\d\s.]+", " ", line).strip()
            if key and key not in self._seen:
                self._seen.add(key)
                fresh = True
        return fresh

    def idle(self) -> float:
        stamps = {p: self._stamp(p) for p in self.files}
        changed = stamps != self._stamps
        self._stamps = stamps
        if self._new_output() or changed:
            self._last = time.monotonic()
        return time.monotonic() - self._last


def expand(template: list[str] | tuple[str, ...], values: dict[str, str], model_args: list[str]) -> list[str]:
    """Replace the placeholders in each word; {model_args} alone in a word expands to 0+ words."""
    argv: list[str] = []
    for word in template:
        if word == "{model_args}":
            argv.extend(model_args)
            continue
        # one pass: a placeholder's name inside a value (the prompt quoting "{model}") stays as it is
        argv.append(PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), word))
    return argv


def command_for(config: ProposerConfig, values: dict[str, str]) -> list[str]:
    """The agent's argv from the custom template or the preset."""
    if config.command:
        try:
            template = shlex.split(config.command)
        except ValueError as e:
            raise SettingsError(f"--command {config.command!r} is not a valid command line: {e}") from None
        model_args = ["--model", config.model] if config.model else []
        if not template:
            raise SettingsError("--command is empty")
        return expand(template, values, model_args)
    if not config.agent:
        raise SettingsError(f"the cmd proposer needs --agent ({', '.join(AGENTS)}) or --command TEMPLATE")
    preset = AGENTS.get(config.agent)
    if preset is None:
        raise SettingsError(f"unknown agent {config.agent!r}; presets: {', '.join(AGENTS)}, or use --command TEMPLATE")
    model_args = [preset.model_flag, config.model] if config.model else []
    return expand(preset.template, values, model_args)


def run_agent(argv: list[str], cwd: Path, timeout: float, log_path: Path, idle_timeout: float = 0.0,
              env: dict[str, str] | None = None) -> AgentRun:
    """Run the agent in its own process group, output to `log_path`; end everything it started:
    at `timeout`, or after `idle_timeout` seconds without progress (0: no watchdog)."""
    marker = f"{processes.AGENT_KEY_PREFIX}{uuid.uuid4().hex[:12]}"  # the data refuses to load under it (api.py)
    # PWD as a shell would set it: an inherited one names the loop's folder, and some agents take
    # their project from it (opencode: files outside it are "external" and its tools refuse them)
    env = {**(os.environ if env is None else env), processes.ENV_RUN_ID: marker, "PWD": str(cwd)}
    started = time.monotonic()
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        except FileNotFoundError:
            raise ProposerError(f"agent command {argv[0]!r} was not found: install it, or give the full path in "
                                "--command") from None
        except PermissionError:
            raise ProposerError(f"agent command {argv[0]!r} is not executable") from None
        except OSError as e:  # e.g. E2BIG: an argument longer than the system allows
            raise ProposerError(f"agent command {argv[0]!r} could not start ({e}); if the prompt is too long for a "
                                "command-line argument, lower agent_context_tokens or pass {prompt_file}") from None
        timed_out = stalled = False
        watchdog = Watchdog(log_path, (cwd / TRAIN_FILE, cwd / DESCRIPTION_FILE))
        try:
            while proc.poll() is None:
                left = timeout - (time.monotonic() - started)
                if left <= 0 or (idle_timeout > 0 and watchdog.idle() >= idle_timeout):
                    timed_out, stalled = left <= 0, left > 0
                    processes.kill_group(proc.pid)
                    proc.wait()
                    break
                try:
                    proc.wait(timeout=min(POLL, left))
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:  # Ctrl-C of the loop: the agent, in its own session, did not get it
            processes.kill_group(proc.pid)
            proc.wait()
            raise
    leftovers = processes.run_processes(marker, proc.pid, set())
    if leftovers:
        processes.kill_all(leftovers)
    processes.reap_orphans(set())
    ended = timed_out or stalled
    return AgentRun(None if ended else proc.returncode, timed_out, time.monotonic() - started, len(leftovers), stalled)


def stated_description(ws: Workspace) -> tuple[str, str, str] | None:
    """(description, hypothesis, notes) from the agent's proposal.md, when it wrote one."""
    path = ws.root / DESCRIPTION_FILE
    if not path.exists():
        return None
    text = path.read_text(encoding="utf-8", errors="replace")
    path.unlink()
    try:
        reply = parse_reply(text)
        return reply.description, reply.hypothesis, reply.notes
    except EditError:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        return (first[:MAX_DESCRIPTION], "", "") if first else None


def last_output_line(log_path: Path) -> str:
    """The last line the agent printed that says something, "" when none: terminal escapes removed,
    stack-trace frames skipped (gemini's retries end with a page of `    at ...` lines)."""
    try:
        output = log_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    raw = ESCAPE.sub("", output).replace("\r", "\n").splitlines()[1:]  # [0]: the command
    lines = [ln.strip() for ln in raw if ln.strip() and not STACK_FRAME.match(ln)]
    return lines[-1] if lines else ""


def read_description(ws: Workspace, log_path: Path, agent: str) -> tuple[str, str, str]:
    """(description, hypothesis, notes) from the agent's proposal.md, else its last output line."""
    stated = stated_description(ws)
    if stated:
        return stated
    last = last_output_line(log_path)
    for prefix in ("description:", "**description:**"):
        if last.lower().startswith(prefix):
            last = last[len(prefix):].strip()
    if last:
        return last[:MAX_DESCRIPTION], "", ""
    return f"change by {agent} (it gave no description)", "", ""


# --- the proposer ----------------------------------------------------------------------------


@dataclass
class CmdProposer:
    config: ProposerConfig
    log: Callable[[str], None] = print
    name: str = field(default="cmd", init=False)
    _ws: Workspace | None = field(default=None, init=False, repr=False)
    _counter: context.TokenCounter | None = field(default=None, init=False, repr=False)

    _checked: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        command_for(self.config, {})  # refuse a bad preset or template before the loop starts
        if not self.config.command:
            preflight(self.config.agent, self.config.model, agent_env(self.config.agent))

    def _check_version(self, executable: str, env: dict[str, str]) -> None:
        """Once: say so when the installed agent is not the version its preset was tested with."""
        if self._checked or self.config.command:
            return
        self._checked = True
        note = version_note(self.config.agent, executable, env)
        if note:
            self.log(f"  {note}")

    @property
    def agent(self) -> str:
        return self.config.agent if not self.config.command else "custom command"

    def propose(self, ctx: Context) -> Proposal:
        ws = self._ws = ctx.ws
        folder = begin_proposal(ws)
        prompt_file, log_file = folder / PROMPT_FILE, folder / LOG_FILE
        notes = Notes(ws.notes_path)
        if self._counter is None:
            self._counter = context.token_counter(self.config.token_encoding, ctx.settings)
        instructions = INSTRUCTIONS.format(workspace=ws.root, timeout=self.config.agent_timeout,
                                           description_file=DESCRIPTION_FILE)
        state = context.build(ctx, notes.read(), self._counter, self.config.agent_context_tokens, include_train=False,
                              reserved=self._counter.count(instructions))
        prompt = f"{instructions}\n{state.text}\n"
        prompt_file.write_text(prompt, encoding="utf-8")
        values = {"prompt": prompt, "prompt_file": str(prompt_file), "workspace": str(ws.root),
                  "description_file": DESCRIPTION_FILE, "model": self.config.model, "proposal_dir": str(folder),
                  "data_dir": str(cache_root())}
        argv = command_for(self.config, values)
        (ws.root / DESCRIPTION_FILE).unlink(missing_ok=True)
        shown = [a if a != prompt else "{prompt}" for a in argv]
        log_file.write_text(f"$ {shlex.join(shown)}\n", encoding="utf-8")
        env = agent_env(self.config.agent) if not self.config.command else dict(os.environ)
        self._check_version(argv[0], env)
        idle = self.config.agent_idle_timeout
        self.log(f"  {self.agent}: running (time limit {self.config.agent_timeout:g} s"
                 + (f", {idle:g} s without progress" if idle > 0 else "") + ")")
        preset = None if self.config.command else AGENTS.get(self.config.agent)
        with workspace_settings(preset, ws.root, ws.git.exclude):
            before = containment.take(ws)
            run = run_agent(argv, ws.root, self.config.agent_timeout, log_file, idle, env)
            stated = stated_description(ws)
            description, hypothesis, agent_notes = stated or read_description(ws, log_file, self.agent)
            # with parallel workers, runs under way write their folders while the agent works
            busy = tuple(f"{RUNS_DIR}/{run_id}/" for run_id in ctx.busy_runs)
            discarded = containment.contain(ws, before, allow=ALLOWED + busy).phrases()
        if discarded:
            self.log(f"  {self.agent}: discarded changes beyond train.py: {'; '.join(discarded)}")
        if run.ended_processes:
            discarded.append(f"{run.ended_processes} process(es) it left running were ended")
        # It wrote proposal.md, its sign of being done, then neither exited nor did anything more
        # (codex 0.171 at times, after its last message): the change goes on; the checks still apply.
        finished = run.stalled and stated is not None
        if finished:
            self.log(f"  {self.agent}: no progress for {idle:g} s after it wrote {DESCRIPTION_FILE}: ended; "
                     "its change goes on")
        # A failure is recorded under what was asked (or what the agent said it did), never under
        # whatever it printed last: that goes into the reason.
        self._check(run, ctx, stated[0] if stated else f"agent proposal ({self.agent})", discarded, log_file,
                    finished)
        notes.record_proposal(self.name, description, hypothesis, agent_notes)
        params = {"agent": self.agent, "command": shlex.join(shown), "seconds": round(run.seconds, 1),
                  "exit_code": run.exit_code}
        if finished:
            params["ended"] = f"by the watchdog, {idle:g} s after it wrote {DESCRIPTION_FILE}"
        if discarded:
            params["discarded"] = discarded
        return Proposal(description=description, hypothesis=hypothesis, params=params)

    def _check(self, run: AgentRun, ctx: Context, description: str, discarded: list[str], log_file: Path,
               finished: bool = False) -> None:
        last = last_output_line(log_file)
        where = "its output is in the proposal's agent.log" + (f" (last line: {last[:160]!r})" if last else "")
        extra = f" (also discarded: {'; '.join(discarded)})" if discarded else ""
        if run.stalled and not finished:
            raise ProposerError(f"{self.agent} made no progress (no new output, no change to {TRAIN_FILE} or "
                                f"{DESCRIPTION_FILE}) for agent_idle_timeout {self.config.agent_idle_timeout:g} s and "
                                f"was stopped with everything it started (an unreachable endpoint or a question "
                                f"nobody answers?); {where}{extra}", description=description)
        if run.timed_out:
            raise ProposerError(f"{self.agent} did not finish within agent_timeout {self.config.agent_timeout:g} s and "
                                f"was stopped with everything it started; {where}{extra}", description=description)
        if run.exit_code != 0 and not finished:
            raise ProposerError(f"{self.agent} exited with code {run.exit_code}; {where}{extra}", description=description)
        if not ctx.ws.train_py.exists():
            raise ProposerError(f"{self.agent} deleted train.py; {where}{extra}", description=description)
        source = ctx.ws.train_py.read_text(encoding="utf-8", errors="replace")
        if source == ctx.best_source:
            raise ProposerError(f"{self.agent} made no change to train.py; {where}{extra}", description=description)
        try:
            check_syntax(source)
        except EditError as e:
            raise ProposerError(f"{self.agent} left a train.py that does not compile: {e}", description=description) from None

    def observe(self, proposal: Proposal, rows: list[Row]) -> None:
        if self._ws is None or not rows:
            return
        Notes(self._ws.notes_path).record_outcome(proposal.description, outcome_text(rows))

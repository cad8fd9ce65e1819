"""The parallel loop: one coordinator, N runs at a time on an executor.

The coordinator is the only writer of the ledger and the branch, exactly like the single loop
(it drives a `Researcher` and uses its rules), and the executor only runs jobs. Proposals are
made one at a time in the workspace's working tree, each on the current best; each becomes a
candidate commit made beside the branch (`refs/autoresearch/candidates/`), and its runs go to
the executor. When a candidate is decided:
- kept, on the current best: the branch moves to it;
- kept, but the best moved while it ran (a stale win): it is recorded as `discard` with rule
  `stale`, and its change applied onto the new best (frontier.py) is the next experiment;
  a conflict goes back to the proposer (the context's `returned`).

What is under way is written to `.autoresearch/flights.json` before it starts; a killed
coordinator resumes it: a recorded candidate finishes its git step, a finished run is decided,
an interrupted run (its processes ended) runs again. A worker that dies mid-run is retried once
elsewhere, then recorded as a crash: never lost, never logged twice.

Parallel runs slow each other, so the loop measures the baseline with `workers` runs at once,
and compares only results made under the same parallelism (`Row.workers`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import autoresearch
from autoresearch import atomic
from autoresearch.errors import ProposerError, WorkspaceError
from autoresearch.ledger import Row, render
from autoresearch.loop import MAX_PROPOSER_FAILURES, Pending, Researcher, Spent, _commit_message
from autoresearch.proposers.base import Proposer, clear_proposal_files, proposal_dir
from autoresearch.rundir import HANDED_OVER, RunResult, now
from autoresearch.scale import frontier
from autoresearch.scale.executors import Executor, Finished
from autoresearch.scale.job import REFUSED, Job
from autoresearch.workspace import TRAIN_FILE, Workspace

FLIGHTS_FILE = "flights.json"
FLIGHT_FILES = "flights"  # under .autoresearch/: each candidate's proposal files until its runs are done
CANDIDATES = "refs/autoresearch/candidates/"
MAX_ATTEMPTS = 2  # tries of one run when its worker dies


def interrupted(ws: Workspace) -> bool:
    """Whether a parallel loop left work under way in this workspace (it resumes with the coordinator)."""
    path = ws.state_dir / FLIGHTS_FILE
    return path.exists() and path.read_text().strip() not in ("", "[]")


class Coordinator:
    def __init__(self, researcher: Researcher, executor: Executor, log: Callable[[str], None] = print) -> None:
        self.r = researcher
        self.ws = researcher.ws
        self.ex = executor
        self.log = log
        researcher.workers = executor.workers
        self.flights: list[Pending] = []  # candidates (and the baseline) under way or queued
        self.by_run: dict[str, Pending] = {}  # run id in flight -> its candidate
        self.returned: list[str] = []  # stale wins that conflicted with the new best
        self.proposer: Proposer | None = None
        self.failures = 0
        self._files: dict[str, dict[str, str]] = {}
        self._recover()
        self.head = self.ws.git.head()  # where the coordinator left the branch

    # --- persistence ------------------------------------------------------------------------

    def _save(self) -> None:
        atomic.write_json(self.ws.state_dir / FLIGHTS_FILE, [dataclasses.asdict(p) for p in self.flights])

    def _recover(self) -> None:
        path = self.ws.state_dir / FLIGHTS_FILE
        if not path.exists():
            return
        try:
            saved = [Pending(**p) for p in json.loads(path.read_text())]
        except (json.JSONDecodeError, TypeError):
            self.log(f"warning: unreadable {path}; what was under way is dropped")
            saved = []
        recorded = self.r.ledger.run_ids()
        git = self.ws.git
        for pending in saved:
            if pending.kind == "experiment" and pending.runs and set(pending.runs) <= recorded:
                rows = [r for r in self.r.ledger.rows if r.run_id in pending.runs]
                if rows[0].status == "keep" and git.head() == pending.parent:
                    git.run("reset", "--quiet", "--hard", pending.candidate)  # the branch step that was cut short
                if rows[0].rule == "stale" and not any(
                        p.params.get("combined_from") == pending.candidate for p in saved):
                    self._combine(pending, queue=True)
                self._forget(pending)
                continue
            kept = []
            for run_id in pending.runs:
                if run_id in recorded or RunResult.load(self.ws.runs_dir / run_id) is not None:
                    kept.append(run_id)
                    continue
                self.r.drop_interrupted_run(run_id)
            pending.runs, pending.phase = kept, "queued"
            self.log(f"recovering: resuming {pending.kind} {pending.description or pending.parent[:7]!r}")
            self.flights.append(pending)
        self._save()

    def _forget(self, pending: Pending) -> None:
        if pending in self.flights:
            self.flights.remove(pending)
        if pending.candidate:
            shutil.rmtree(self._proposal_files(pending), ignore_errors=True)

    def _proposal_files(self, pending: Pending) -> Path:
        return self.ws.state_dir / FLIGHT_FILES / (pending.candidate or pending.parent)

    # --- the loop ---------------------------------------------------------------------------

    def loop(self, proposer: Proposer, max_experiments: int | None = None, hours: float | None = None,
             max_cost: float | None = None, max_tokens: int | None = None) -> int:
        """Run experiments `workers` at a time until a limit; returns how many were decided.
        Limits stop new proposals; what is under way (and combinations it schedules) finishes."""
        self.proposer = proposer
        try:
            return self._loop(proposer, max_experiments, hours, max_cost, max_tokens)
        except BaseException:
            self.ex.cancel_all()  # interrupted runs run again on resume
            raise

    def _loop(self, proposer: Proposer, max_experiments: int | None, hours: float | None,
              max_cost: float | None, max_tokens: int | None) -> int:
        self._ensure_baseline()
        started, done, proposed = time.monotonic(), 0, 0
        spent, stopping = Spent(), ""
        while True:
            while self.ex.free() > 0:
                queued = next((p for p in self.flights if p.phase == "queued"), None)
                if queued is not None:
                    done += self._advance(queued)
                    continue
                if any(p.kind == "baseline" for p in self.flights):
                    break
                stopping = stopping or self._limit(proposed, max_experiments, started, hours,
                                                   spent.reached(max_cost, max_tokens))
                if stopping:
                    break
                outcome = self._propose(proposer, spent)
                if outcome == "invalid":
                    proposed += 1
                    done += 1
                elif outcome == "launched":
                    proposed += 1
            if not self.by_run:
                if any(p.phase == "queued" for p in self.flights):
                    continue
                break
            for finished in self.ex.wait(timeout=1.0):
                done += self._finished(finished)
        if stopping:
            self.log(f"stopping: {stopping}")
        return done

    def _limit(self, proposed: int, max_experiments: int | None, started: float, hours: float | None,
               cap: str) -> str:
        if max_experiments is not None and proposed >= max_experiments:
            return f"{max_experiments} experiment(s) proposed"
        if hours is not None and time.monotonic() - started >= hours * 3600:
            return f"{hours:g} h reached"
        return cap

    # --- the baseline -------------------------------------------------------------------------

    def _ensure_baseline(self) -> None:
        """The best commit measured `workers` (at least `baseline_runs`) times, that many at once."""
        if not any(p.kind == "baseline" for p in self.flights) and len(self.r.best_runs()) < self._baseline_target():
            self.flights.append(Pending(phase="queued", parent=self.ws.git.head(), kind="baseline",
                                        proposer="baseline"))
            self._save()
        while any(p.kind == "baseline" for p in self.flights):
            for pending in [p for p in self.flights if p.phase == "queued" and p.kind == "baseline"]:
                self._advance(pending)
            for finished in self.ex.wait(timeout=1.0):
                self._finished(finished)

    def _baseline_target(self) -> int:
        return max(self.r.settings.baseline_runs, self.ex.workers if self.ex.workers > 1 else 0)

    def _advance_baseline(self, pending: Pending) -> None:
        results = [RunResult.load(self.ws.runs_dir / r) for r in pending.runs if r not in self.by_run]
        results = [r for r in results if r is not None]
        failed = next((r for r in results if r.outcome != "ok"), None)
        if failed is not None:
            self.ex.cancel_all()
            try:
                self.r.fail_baseline(pending, failed)
            finally:
                self._forget(pending)
                self._save()
        under_way = [r for r in pending.runs if r in self.by_run]
        missing = self._baseline_target() - len(self.r.best_runs()) - len(results) - len(under_way)
        pending.phase = "running"
        for _ in range(min(missing, self.ex.free())):
            self._launch(pending)
        if missing <= 0 and not under_way:
            self.r.record_baseline(pending, results)
            self._forget(pending)
            self._save()

    # --- proposing ----------------------------------------------------------------------------

    def _in_flight(self) -> tuple[str, ...]:
        return tuple(p.description for p in self.flights if p.kind == "experiment")

    def _propose(self, proposer: Proposer, spent: Spent) -> str:
        """Ask for one proposal on the current best; commit it beside the branch and launch it.
        Returns launched | invalid (refused by the guard, recorded) | failed (recorded)."""
        git = self.ws.git
        parent = git.head()
        self.r._save(Pending(phase="proposing", parent=parent, proposer=proposer.name))
        clear_proposal_files(self.ws)
        proposal = None
        try:
            proposal = proposer.propose(self.r.context(in_flight=self._in_flight(), returned=tuple(self.returned[-5:])))
            spent.add(proposal.tokens, proposal.cost_usd)
            refused = self.r.refuse_other_files(proposal, proposer.name, parent)
            if refused:
                self.r._save(None)
                clear_proposal_files(self.ws)
                proposer.observe(proposal, refused)
                return "invalid"
            candidate = git.commit_file(parent, TRAIN_FILE, self.ws.train_py.read_bytes(),
                                        _commit_message(proposal, proposer.name), keep_under=CANDIDATES)
        except ProposerError as e:
            self.failures += 1
            self.r.proposal_failed(e, proposal, proposer.name, parent, spent, self.failures)
            if self.failures >= MAX_PROPOSER_FAILURES:
                raise
            return "failed"
        self.failures = 0
        git.reset_clean(parent)
        pending = Pending(phase="queued", parent=parent, proposer=proposer.name, description=proposal.description,
                          hypothesis=proposal.hypothesis, params=proposal.params, candidate=candidate,
                          tokens=proposal.tokens, cost_usd=proposal.cost_usd)
        if proposal_dir(self.ws).is_dir():
            self._proposal_files(pending).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(proposal_dir(self.ws)), str(self._proposal_files(pending)))
        self.flights.append(pending)
        self._save()
        self.r._save(None)
        self._advance(pending)
        return "launched"

    # --- runs ---------------------------------------------------------------------------------

    def _launch(self, pending: Pending) -> None:
        run_id = self.r._new_run_id(reserved=set(self.by_run))
        pending.runs.append(run_id)
        pending.phase = "running"
        self.by_run[run_id] = pending
        self._save()
        commit = pending.candidate or pending.parent
        if commit not in self._files:
            self._files[commit] = {p: b.decode() for p, b in self.ws.git.tracked_files(commit).items()}
        job = Job(run_id=run_id, commit=commit, files=self._files[commit], settings_sha256=self.r.settings.sha256(),
                  data_sha256=self.r.prepared.data_sha256, version=autoresearch.__version__)
        self.log(f"run {run_id}: {pending.description or 'baseline'} (commit {commit[:7]}, {self.ex.name} executor, "
                 f"{len(self.by_run)}/{self.ex.workers} running)")
        self.ex.submit(job)

    def _finished(self, finished: Finished) -> int:
        """Record what a worker returned; returns 1 when it decided an experiment."""
        job = finished.job
        pending = self.by_run.pop(job.run_id)
        run_dir = self.ws.runs_dir / job.run_id
        if finished.answer is None:
            if job.attempt < MAX_ATTEMPTS:
                self.log(f"run {job.run_id}: {finished.error}; retrying (attempt {job.attempt + 1} of {MAX_ATTEMPTS})")
                job.attempt += 1
                self.by_run[job.run_id] = pending
                self.ex.submit(job)
                return 0
            run_dir.mkdir(parents=True, exist_ok=True)
            stamp = now()
            result = RunResult(run_id=job.run_id, commit=job.commit, outcome="crash", started=stamp, ended=stamp,
                               error=f"its worker died {job.attempt} times (last: {finished.error})")
            result.save(run_dir)
        elif finished.answer.status == REFUSED:
            self.by_run[job.run_id] = pending  # ended with the others; it runs again on resume
            raise WorkspaceError(finished.answer.error)
        else:
            run_dir.mkdir(parents=True, exist_ok=True)
            for name, data in finished.files.items():
                atomic.write_bytes(run_dir / Path(name).name, data)
            result = RunResult(**finished.answer.result)
            changed = self._check_workspace()
            if changed:
                result.flags.append(f"the coordinator's workspace changed while this run was under way: {changed}")
            result.save(run_dir)
        self.r.attach(pending, run_dir, self._proposal_files(pending))
        return self._advance(pending)

    def _check_workspace(self) -> str:
        """Runs work in workspaces of their own, but a local run could still reach this one: after each
        run, the fixed files, the branch, the working tree and the ledger must be as the coordinator
        left them. What changed is restored and returned, in words (empty when nothing did)."""
        git = self.ws.git
        changed = self.ws.check_fixed_files() + git.dirty_paths()
        if git.head() != self.head:
            changed.append(f"the branch (moved to {git.head()[:7]})")
        if changed:
            git.reset_clean(self.head)
        try:
            ledger = self.ws.ledger_path.read_text(encoding="utf-8")
        except OSError:
            ledger = ""
        if self.r.ledger.rows and ledger != render(self.r.ledger.rows):
            changed.append(self.ws.ledger_path.name)
            atomic.write_text(self.ws.ledger_path, render(self.r.ledger.rows))
        if changed:
            what = ", ".join(changed) + " (restored)"
            self.log(f"warning: {what}")
            return what
        return ""

    def _advance(self, pending: Pending) -> int:
        """Take a candidate one step: decide it, or start its next run. 1 when decided."""
        if pending.kind == "baseline":
            self._advance_baseline(pending)
            return 0
        if any(r in self.by_run for r in pending.runs):
            return 0
        results = [RunResult.load(self.ws.runs_dir / r) for r in pending.runs]
        results = [r for r in results if r is not None]
        rows = self.r.judge(pending, results) if results else None
        if rows is None:
            self._launch(pending)  # its first run, or a confirmation run
            return 0
        self._conclude(pending, rows)
        return 1

    def _conclude(self, pending: Pending, rows: list[Row]) -> None:
        head = self.ws.git.head()
        kept = rows[0].status == "keep"
        combination = None
        if kept and pending.parent != head:
            combination, how = self._combine(pending, queue=False)
            rows = [dataclasses.replace(
                row, status="discard", rule="stale",
                reason=f"beat its parent {pending.parent[:7]} ({row.reason}), but the best moved to {head[:7]} "
                       f"while it ran: {how}") for row in rows]
            kept = False
        self.r.record(rows)
        if kept:
            self.ws.git.run("reset", "--quiet", "--hard", pending.candidate)
            self.head = pending.candidate
        else:
            for row in rows:
                (self.ws.runs_dir / row.run_id / HANDED_OVER).unlink(missing_ok=True)
        self._forget(pending)
        if combination is not None:
            self.flights.append(combination)
        self._save()
        first = rows[0]
        measured = [r.val_bpb for r in rows if r.val_bpb is not None]
        val = f"{statistics.fmean(measured):.6f}" if measured else "-"
        self.log(f"{first.status:8s} val_bpb {val}  {pending.description}  [{first.why}]")
        if self.proposer is not None:
            self.proposer.observe(pending.proposal, rows)

    def _combine(self, pending: Pending, queue: bool) -> tuple[Pending | None, str]:
        """The stale win's change on the current best, as a queued experiment (and what became of it)."""
        git = self.ws.git
        head = git.head()
        base, ours, theirs = (git.show(c, TRAIN_FILE).decode() for c in (pending.parent, head, pending.candidate))
        merged = frontier.merge(base, ours, theirs)
        if merged is None:
            self.returned.append(pending.description)
            self.log(f"stale win {pending.description!r} conflicts with the new best {head[:7]}: back to the proposer")
            return None, "its change conflicts with the new best (returned to the proposer)"
        if merged == ours:
            return None, "the new best already has its change"
        description = f"combine: {pending.description}"
        commit = git.commit_file(head, TRAIN_FILE, merged.encode(),
                                 f"{description} (onto {head[:7]})\n\nproposer: {pending.proposer}", keep_under=CANDIDATES)
        combination = Pending(
            phase="queued", parent=head, proposer=pending.proposer, description=description,
            hypothesis=f"it beat {pending.parent[:7]}; the same change on the new best {head[:7]}",
            params={"combined_from": pending.candidate}, candidate=commit)
        self.log(f"stale win {pending.description!r}: its change on the new best {head[:7]} runs next")
        if queue:
            self.flights.append(combination)
        return combination, f"its change on {head[:7]} is the next experiment"

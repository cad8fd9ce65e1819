"""The research loop: propose -> guard -> commit -> run -> decide -> record, until a limit.

One driver for any number of workers. The loop is the only writer of the ledger and the branch;
an executor (scale/executors.py) only runs jobs: in this process for one worker, N processes of
this machine, or Ray tasks. Proposals are made one at a time in the workspace's working tree,
each on the current best; each becomes a candidate commit made beside the branch (refs under
`refs/autoresearch/candidates/`), so HEAD moves only when a change is kept. When a candidate is
decided:
- kept, on the current best: the branch moves to it;
- kept, but the best moved while it ran (a stale win, parallel workers only): it is recorded as
  `discard` with rule `stale`, and its change applied onto the new best (frontier.py) is the next
  experiment; a conflict goes back to the proposer (the context's `returned`).

`autoresearch run` goes through the same driver: the change an outside proposer (a coding agent)
left in the working tree is committed beside the branch as a candidate, the tree goes back to
the best, and the candidate is run and decided like any other.

What is under way is written to `.autoresearch/flights.json` before each step, so a kill at any
point is resumed by `Loop.open`, one recovery path for every phase: a proposal that was never
committed is dropped; a recorded candidate finishes its git step; a finished run is decided; an
interrupted run (its processes ended) runs again. A worker that dies mid-run is retried once,
then recorded as a crash: never lost, never logged twice. A workspace left by an older version
with `.autoresearch/state.json` is migrated once.

Between runs, the best commit the loop decided and the ledger it wrote are recorded in
`.autoresearch/best.json` and checked when the loop opens (integrity.py): commits made on the best
outside the harness are judged as one experiment, a branch moved elsewhere is refused until
`rebaseline` measures it as a baseline of its own kind (`Loop.rebaseline`, also the best measured
again on demand).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import autoresearch
from autoresearch import atomic, devices, holder, integrity, ledger_check, processes
from autoresearch.audit import AUDIT, Report, commits
from autoresearch.data.prepare import PreparedData, open_prepared
from autoresearch.errors import ProposerError, SettingsError, WorkspaceError
from autoresearch.interference import Interference
from autoresearch.ledger import Ledger, Row, damaged_path
from autoresearch.proposers.base import (
    Proposal,
    Proposer,
    clear_proposal_files,
    copy_proposal_files,
    keep_failed_proposal,
    proposal_dir,
    save_proposal,
)
from autoresearch.research import (
    BASELINE_KINDS, MAX_PROPOSER_FAILURES, REBASELINE, REMEASURES, Limits, Pending, Research, Spent, commit_message,
)
from autoresearch.rundir import DIFF_FILE, HANDED_OVER, RunResult, now
from autoresearch.scale import frontier
from autoresearch.scale.executors import Executor, Finished, make_executor
from autoresearch.scale.job import REFUSED, Job
from autoresearch.settings import Settings
from autoresearch.tracking import config as tracking_config
from autoresearch.tracking.publisher import CLOSE_WAIT_S, STOPPING_WAIT_S, Publisher
from autoresearch.workspace import FLIGHTS_FILE, TRAIN_FILE, Workspace, find

BRANCH_PREFIX = "autoresearch/"
CANDIDATES = "refs/autoresearch/candidates/"
FLIGHT_FILES = "flights"  # under .autoresearch/: each candidate's proposal files until its runs are done
OLD_STATE_FILE = "state.json"  # under .autoresearch/: the single loop of versions before the one driver
OLD_WAITING_EDIT = "waiting-train.py"  # under .autoresearch/: an older `run`'s edit, set aside during a baseline
MAX_ATTEMPTS = 2  # tries of one run when its worker dies
MANUAL = "manual"  # the proposer name of a change made outside the harness (`autoresearch run`)
OUTSIDE = "outside"  # the proposer name of commits made outside the harness, found by `autoresearch loop`
DISTURBED_BUT_USED = "disturbed, but judged"  # the flag of a disturbed run kept after its re-runs ran out


def check_machine(settings: Settings) -> None:
    """Refuse a preset that cannot run here, with the fix."""
    device = devices.best_device()
    needs = {"gpu": "cuda", "mps": "mps"}.get(settings.preset)
    if needs and device != needs:
        raise SettingsError(
            f"this workspace uses preset '{settings.preset}', which needs a {needs} device, but this machine "
            f"has {devices.describe()}: create a workspace with `autoresearch init DIR --preset cpu`"
        )


def open_workspace(root: Path | None = None) -> tuple[Workspace, Settings, PreparedData]:
    """The workspace around `root` (default: the current folder), checked to be runnable here."""
    ws = find(root)
    if not ws.git.is_repo():
        raise WorkspaceError(f"{ws.root} is not a git repository: create workspaces with `autoresearch init DIR`")
    settings = ws.settings()
    check_machine(settings)
    problems = ws.check_fixed_files()
    if problems:
        raise WorkspaceError(
            f"fixed file(s) {', '.join(problems)} differ from what the harness wrote: restore them with "
            f"`git checkout -- {' '.join(problems)}`")
    return ws, settings, open_prepared(settings)


class Loop:
    """The research loop of one workspace over one executor."""

    def __init__(self, ws: Workspace, settings: Settings, prepared: PreparedData, executor: Executor,
                 log: Callable[[str], None] = print) -> None:
        self.ws = ws
        self.settings = settings
        self.prepared = prepared
        self.ex = executor
        self.log = log
        self.research = Research(ws, settings, prepared.data_sha256, executor.workers, log)
        self.flights: list[Pending] = []  # what is under way or queued, in order (persisted)
        self.by_run: dict[str, Pending] = {}  # run id under way -> its candidate
        self.returned: list[str] = []  # stale wins that conflicted with the new best
        self.proposer: Proposer | None = None
        self.failures = 0  # proposals that failed in a row
        self.decided: dict[str, list[Row]] = {}  # candidate commit -> its rows, decided by this object
        self.resumed = 0  # experiments the last run() took over from a killed loop
        self.set_aside: list[str] = []  # files besides train.py that `run` found changed (and stashed)
        self.best = ""  # where the loop left the branch: the best commit
        self.outside: integrity.Moved | None = None  # commits made outside the harness, taken off the branch
        self.research.recorded = self._remember
        self.publisher: Publisher | None = None  # the experiment trackers and webhooks (tracking/), if any
        self.stopped = "nothing left to run"  # why run() ended, when no error ended it
        self._files: dict[str, dict[str, str]] = {}  # commit -> its files, for jobs

    @classmethod
    def open(cls, root: Path | None = None, tag: str | None = None, log: Callable[[str], None] = print,
             workers: int = 1, executor: str | Executor = "local", ray_address: str | None = None,
             cpus_per_run: int | None = None, edited_train: bool = False, accept: bool = False,
             track: list[str] | None = None, notify: list[str] | None = None) -> Loop:
        """Open the workspace, resume what a killed loop left, and enter the research branch.

        `executor`: local or ray (make_executor), or an executor to use as it is.
        `edited_train`: a change to train.py in the working tree is expected (`autoresearch run`);
        a change to any other file makes it invalid: it is set aside (a git stash) and recorded by
        `run_edit`.
        The branch and the ledger are checked against what the loop last decided (integrity.py):
        commits made on the best outside the harness are taken off the branch and their change is
        judged (by `run_edit`, or queued first for `loop`); a branch moved elsewhere, or ledger rows
        lost for good, are refused. `accept` (`autoresearch rebaseline`): they are accepted as they are.
        `track`: the experiment trackers each recorded row goes to, `notify`: the webhooks told of kept
        changes, crashes and the end (else [tracking] of autoresearch.toml; checked before anything else)."""
        found = find(root)
        tracking = tracking_config.load(found.root).with_trackers(track).with_notify(notify)
        holder.claim(found)  # before anything is resumed: resuming ends the runs it finds unfinished
        try:
            outside = None if accept else _take_outside_commits(found, log)
            set_aside = _set_aside_other_edits(found, log) if edited_train or outside else []
            ws, settings, prepared = open_workspace(root)
            ex = make_executor(executor, ws, settings, workers, ray_address, cpus_per_run) \
                if isinstance(executor, str) else executor
        except BaseException:
            holder.release(found)
            raise
        try:
            loop = cls(ws, settings, prepared, ex, log)
            loop.set_aside, loop.outside = set_aside, outside
            processes.mark_harness()  # the trackers' helper processes are the harness's, not a run's
            loop.publisher = Publisher.open(ws, tracking, log, lambda: loop.research.ledger.rows)
            if loop.publisher is not None:
                loop.research.on_record = loop.publisher.publish
            ws.git.exclude(f"/{damaged_path(ws.ledger_path).name}")  # a workspace older than that file
            ledger_check.restore(loop.research.ledger, ws.runs_dir, log)
            edit = edited_train or outside is not None
            if not _left_work(ws):  # else recovery decides what the tree's changes and the branch's moves are
                loop._check_between_runs(accept)
                loop._check_clean(edit)
            _enter_branch(ws, tag, log)
            loop._recover()
            loop._check_between_runs(accept)  # another branch entered, or what recovery left
            loop._check_clean(edit)
            loop.best = ws.git.head()
            if not accept:  # rebaseline records the best once it is measured
                loop._remember()
            if outside is not None and not edited_train:  # `loop`: the outside change is the first experiment
                loop._take_edit("", OUTSIDE)
        except BaseException:
            ex.close()
            holder.release(found)
            raise
        return loop

    def close(self, tracking_wait_s: float = CLOSE_WAIT_S, why: str = "") -> None:
        """End the executor; tell the webhooks the loop ended (`why`: else why run() stopped) and give
        the trackers and webhooks up to `tracking_wait_s` to finish."""
        try:
            self.ex.close()
        finally:
            try:
                if self.publisher is not None:
                    self.publisher.ended(self._closing_line(), why or self.stopped)
                    self.publisher.close(tracking_wait_s)
            finally:
                holder.release(self.ws)

    def __enter__(self) -> Loop:
        return self

    def __exit__(self, exc_type: object, error: BaseException | None, *exc: object) -> None:
        if error is None:
            self.close(CLOSE_WAIT_S)
            return
        why = "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else \
            f"stopped: {' '.join(str(error).split())[:300] or type(error).__name__}"
        self.close(STOPPING_WAIT_S, why)  # a Ctrl-C does not wait long for trackers

    @property
    def head(self) -> str:
        return self.ws.git.head()

    def _check_between_runs(self, accept: bool) -> None:
        """The branch and the ledger as the loop left them (integrity.py); with `accept`, what changed is said."""
        rows = self.research.ledger.rows
        move = integrity.moved(self.ws, rows)
        lost = integrity.lost_rows(self.ws, rows)
        if accept:
            if move is not None:
                self.log(f"{REBASELINE}: accepting {move.head[:7]} as the best of {move.branch} "
                         f"(the harness had decided {move.best[:7]})")
            for line in lost:
                self.log(f"{REBASELINE}: accepting the ledger as it is: {line}")
            return
        if move is not None:
            raise move.refusal()
        integrity.refuse_lost_rows(self.ws, rows)

    def _remember(self) -> None:
        """Record the best commit and the ledger as the loop leaves them (.autoresearch/best.json)."""
        if self.best:
            integrity.remember(self.ws, self.ws.git.branch(), self.best, self.research.ledger.rows)

    def _check_clean(self, edited_train: bool) -> None:
        dirty = self.ws.git.dirty_paths()
        if dirty and not (edited_train and set(dirty) <= {TRAIN_FILE}):
            raise WorkspaceError(
                f"uncommitted changes in {', '.join(dirty[:5])}: commit or stash them first "
                "(the loop resets the working tree between experiments)")

    # --- persistence and recovery ---------------------------------------------------------------

    def _save(self) -> None:
        atomic.write_json(self.ws.state_dir / FLIGHTS_FILE, [dataclasses.asdict(p) for p in self.flights])

    def _recover(self) -> None:
        """Resume what a killed loop left, whatever step it was at (the one recovery path)."""
        saved = self._read_flights() + self._migrate_old_state()
        if not saved:
            (self.ws.state_dir / OLD_STATE_FILE).unlink(missing_ok=True)  # unreadable, or nothing left to do
            return
        workers = {p.workers for p in saved if p.workers}
        if workers and workers != {self.ex.workers}:
            w = workers.pop()
            raise SettingsError(
                f"a loop with {w} worker(s) was interrupted here: resume it with `autoresearch loop --workers {w}` "
                "(and the same --executor); what it had under way is in .autoresearch/flights.json")
        git = self.ws.git
        recorded = self.research.ledger.run_ids()
        for pending in saved:
            if pending.phase == "proposing":  # never committed: the proposal is dropped
                self.log("recovering: dropping an uncommitted proposal")
                git.reset_clean(pending.parent)
                clear_proposal_files(self.ws)
                continue
            if pending.runs and set(pending.runs) <= recorded:  # decided and recorded: finish the git step
                rows = [r for r in self.research.ledger.rows if r.run_id in pending.runs]
                if pending.kind == "experiment":
                    if rows[0].status == "keep" and git.head() == pending.parent:
                        git.move_branch(pending.candidate)
                    if rows[0].rule == "stale" and not any(
                            p.params.get("combined_from") == pending.candidate for p in saved):
                        self._combine(pending, queue=True)
                self._forget(pending)
                continue
            finished = []
            for run_id in pending.runs:
                if RunResult.load(self.ws.runs_dir / run_id) is not None:
                    finished.append(run_id)
                    continue
                self._drop_interrupted_run(run_id)
            pending.runs, pending.phase = finished, "queued"
            self.log(f"recovering: resuming {pending.kind} {pending.description or pending.parent[:7]!r}")
            self.flights.append(pending)
        self._restore_captured_edit()
        self._save()
        (self.ws.state_dir / OLD_STATE_FILE).unlink(missing_ok=True)

    def _read_flights(self) -> list[Pending]:
        return self._read_pending(self.ws.state_dir / FLIGHTS_FILE)

    def _read_pending(self, path: Path) -> list[Pending]:
        """The steps a state file holds (flights.json: a list; an old state.json: one step)."""
        if not path.exists():
            return []
        try:
            data = json.loads(path.read_text())
            return [Pending(**p) for p in (data if isinstance(data, list) else [data])]
        except (json.JSONDecodeError, TypeError):
            self.log(f"warning: unreadable {path}; what was under way is dropped")
            return []

    def _migrate_old_state(self) -> list[Pending]:
        """What an older single-worker loop had under way (.autoresearch/state.json), as flights.

        That loop committed a candidate onto the branch before running it; here the branch stays
        at the best until a keep, so such a commit is moved beside the branch."""
        git = self.ws.git
        waiting = self.ws.state_dir / OLD_WAITING_EDIT
        if waiting.exists():  # an older `run` set the user's edit aside while it measured the baseline
            if not git.dirty_paths():
                self.ws.train_py.write_bytes(waiting.read_bytes())
                self.log("recovering: your uncommitted change to train.py is back in the working tree")
            waiting.unlink()
        path = self.ws.state_dir / OLD_STATE_FILE
        saved = self._read_pending(path)
        if not saved:
            return []
        old = saved[0]
        self.log(f"migrating {path.name} (from an older version) to {FLIGHTS_FILE}")
        old.workers = 1
        if old.phase == "committing" and git.head() != old.parent and git.rev("HEAD~1") == old.parent:
            old.phase, old.candidate = "running", git.head()  # the commit made it onto the branch
        if old.phase in ("proposing", "committing"):
            old.phase = "proposing"
            return [old]
        if old.kind == "experiment" and old.candidate and git.head() == old.candidate:
            rows = [r for r in self.research.ledger.rows if r.run_id in old.runs]
            decided = bool(old.runs) and len(rows) == len(old.runs)
            if not decided or rows[0].status != "keep":
                git.update_ref(f"{CANDIDATES}{old.candidate}", old.candidate)
                git.move_branch(old.parent)
            if decided:
                return []
        if old.kind == "experiment":
            self._keep_proposal_files(old)
        return [old]

    def _restore_captured_edit(self) -> None:
        """A `run` killed after its change was committed but before the tree went back to the best:
        the tree still holds the change, which is now a queued candidate."""
        if self.ws.git.dirty_paths() != [TRAIN_FILE]:
            return
        content = self.ws.train_py.read_bytes()
        if any(p.candidate and self.ws.git.show(p.candidate, TRAIN_FILE) == content for p in self.flights):
            self.ws.git.restore_paths([TRAIN_FILE])

    def _drop_interrupted_run(self, run_id: str) -> None:
        """A run cut short by a kill: end the processes it left (found by its key) and remove its
        folder; it will run again."""
        run_dir = self.ws.runs_dir / run_id
        orphans = processes.run_processes(processes.run_key(run_dir), None, set())
        if orphans:
            self.log(f"recovering: ending {len(orphans)} process(es) left by interrupted run {run_id}")
            processes.kill_all(orphans)
        shutil.rmtree(run_dir, ignore_errors=True)

    def _forget(self, pending: Pending) -> None:
        if pending in self.flights:
            self.flights.remove(pending)
        if pending.candidate:
            shutil.rmtree(self._flight_files(pending), ignore_errors=True)

    def _flight_files(self, pending: Pending) -> Path:
        return self.ws.state_dir / FLIGHT_FILES / pending.commit

    def _keep_proposal_files(self, pending: Pending) -> None:
        """The proposer's files of a committed candidate, kept beside it until its runs are done."""
        if proposal_dir(self.ws).is_dir():
            self._flight_files(pending).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(proposal_dir(self.ws)), str(self._flight_files(pending)))

    # --- the loop -------------------------------------------------------------------------------

    def run(self, proposer: Proposer | None, limits: Limits = Limits()) -> int:
        """Measure the baseline, then run experiments `workers` at a time until a limit; returns how
        many were decided. Limits stop new proposals; what is under way (and combinations it
        schedules) finishes. Without a proposer, only what is already queued runs."""
        self.proposer = proposer
        self.failures = 0
        with self._ending_runs_on_error():
            self.ensure_baseline()
            return self._loop(proposer, limits)

    @contextlib.contextmanager
    def _ending_runs_on_error(self):
        """An error or Ctrl-C ends the runs under way (unrecorded: they run again on resume)."""
        try:
            yield
        except BaseException as e:
            if self.by_run:
                why = "interrupted" if isinstance(e, KeyboardInterrupt) else "stopping"
                self.log(f"{why}: ending run(s) {', '.join(sorted(self.by_run))}; not recorded, they run again "
                         "when the loop resumes")
            self.ex.cancel_all()
            raise

    def _loop(self, proposer: Proposer | None, limits: Limits) -> int:
        # an experiment resumed from a killed loop is one of this call's experiments
        self.resumed = sum(p.kind == "experiment" for p in self.flights)
        started, done, proposed = time.monotonic(), 0, self.resumed
        spent, stopping = Spent(), ""
        while True:
            while self.ex.free() > 0:
                queued = next((p for p in self.flights if p.phase == "queued"), None)
                if queued is not None:
                    done += self._advance(queued)
                    continue
                if any(p.kind in BASELINE_KINDS for p in self.flights) or proposer is None:
                    break
                stopping = stopping or limits.reached(proposed, started, spent)
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
            self.stopped = stopping
        return done

    def run_edit(self, message: str) -> list[Row] | None:
        """`autoresearch run`: the change to train.py in the working tree, run and decided (after
        the baseline, if it is not measured yet). Its rows; None when train.py is unchanged."""
        pending, rows = self._take_edit(message, MANUAL)
        if rows:
            return rows
        self.run(None)
        if pending is not None:
            return self.decided.get(pending.candidate)
        return next(reversed(self.decided.values()), None)  # a change an interrupted `run` left, resumed

    def _take_edit(self, message: str, proposer: str) -> tuple[Pending | None, list[Row]]:
        """The change left in the working tree (by an agent's edit, or by commits made outside the
        harness, taken off the branch) as a queued candidate; or, when it changed other files than
        train.py (set aside as a stash when the loop opened), its `invalid` row. (None, []) when
        nothing changed. Nothing runs while it is captured; run() ends what it starts."""
        flags = self.outside.describe() if self.outside else ""
        subjects = "; ".join(c.partition(" ")[2] for c in self.outside.commits) if self.outside else ""
        proposal = Proposal(message or subjects or "(no description)")
        if self.set_aside:
            row = self.research.refused_edit_row(proposal, proposer, self.head, self.set_aside, stashed=True,
                                                 flags=flags)
            self.research.record([row])
            self.log(f"invalid: {row.description!r} {row.reason}")
            return None, [row]
        if self.ws.git.dirty_paths():
            return self._capture(proposal, proposer, outside=flags)
        return None, []

    def rebaseline(self, message: str = "") -> list[Row]:
        """`autoresearch rebaseline`: measure HEAD anew, `baseline_target` runs whatever it already has,
        recorded as kind `rebaseline`; it is the best from then on. Accepts on purpose a branch moved
        outside the harness (Loop.open with accept), and re-measures the best on demand. Its rows."""
        if any(p.kind == "experiment" for p in self.flights):
            raise WorkspaceError("a killed loop left experiments under way: finish them first with "
                                 "`autoresearch loop --max-experiments 0`, then rebaseline")
        decided = integrity.load(self.ws, self.ws.git.branch())
        head = self.head
        was = f" (the harness had decided {decided.commit[:7]})" if decided and decided.commit != head else ""
        pending = next((p for p in self.flights if p.kind == REBASELINE and p.parent == head), None)  # a killed one
        if pending is None:
            pending = Pending(phase="queued", parent=head, kind=REBASELINE, proposer=REBASELINE,
                              description=message or f"rebaseline: measures {head[:7]} as the best{was}",
                              workers=self.ex.workers)
            self.flights.insert(0, pending)
            self._save()
        self.ensure_baseline()
        self.best = head
        self._remember()
        return [r for r in self.research.ledger.rows if r.run_id in pending.runs]

    def audit(self, runs: int = 1) -> Report:
        """`autoresearch audit`: run the baseline and every kept change that leads to the best again,
        `runs` times each, in rounds, as runs of kind `audit` (audit.py); then what the audit runs say
        of each kept change. An audit a stopped call left is finished first, and no new one queued;
        `runs` 0 runs nothing (the report of the audit runs already recorded). The branch and the
        working tree stay at the best."""
        others = [p for p in self.flights if p.kind != AUDIT]
        if others:
            what = ", ".join(sorted({f"{p.kind} {p.description or p.commit[:7]!r}" for p in others}))
            raise WorkspaceError(f"work is under way or queued in this workspace ({what}): finish it first with "
                                 "`autoresearch loop --max-experiments 0`, then audit")
        changes = self.research.kept_changes()
        elsewhere = sorted({r.workers or 1 for r in self.research.ledger.rows if r.kind == "experiment"
                            and r.status == "keep" and (r.workers or 1) != self.ex.workers})
        if not changes and elsewhere:
            self.log(f"the changes kept here were measured {elsewhere[0]} at a time: audit them with "
                     f"`autoresearch audit --workers {elsewhere[0]}`")
        left = [p for p in self.flights if p.kind == AUDIT]
        if left:
            self.log(f"resuming the audit a stopped call left: {len(left)} run(s) to go")
        elif changes and runs > 0:
            for _ in range(runs):  # in rounds: a drift of the machine touches every commit alike
                for commit in commits(changes):
                    what = next((c.description for c in changes if c.commit == commit), "the baseline")
                    self.flights.append(Pending(phase="queued", parent=self.ws.git.rev(commit), kind=AUDIT,
                                                proposer=AUDIT, description=f"audit of {commit}: {what}",
                                                workers=self.ex.workers))
            self._save()
            self.log(f"audit: {len(changes)} kept change(s), {runs} run(s) of each of {len(commits(changes))} "
                     f"commits ({len(self.flights)} runs of {self.settings.time_budget:g} s)")
        if self.flights:
            self.proposer = None
            with self._ending_runs_on_error():
                self._loop(None, Limits())
        return self.research.audit_report(changes)

    def _closing_line(self) -> str:
        try:
            return self.closing_line()
        except Exception as e:  # noqa: BLE001 - e.g. git unusable after an error: the end is still told
            return f"(no closing line: {e})"

    def closing_line(self) -> str:
        """What this loop did, in one line: the experiments it decided and where the best is."""
        firsts = [rows[0] for rows in self.decided.values() if rows]
        kept = sum(r.status == "keep" for r in firsts)
        resumed = f" ({self.resumed} resumed)" if self.resumed else ""
        line = f"{len(firsts)} experiment(s) decided{resumed}: {kept} kept, {len(firsts) - kept} not kept"
        best = self.research.best_runs()
        if best:
            line += f"; best val_bpb {statistics.fmean(best):.6f} (commit {self.head[:7]})"
        return line + ". `autoresearch status` for the summary"

    # --- the baseline ---------------------------------------------------------------------------

    def ensure_baseline(self) -> None:
        """The best commit measured `baseline_target` times, `workers` at once."""
        r = self.research
        if not any(p.kind in BASELINE_KINDS for p in self.flights) and len(r.best_runs()) < r.baseline_target():
            self.flights.insert(0, Pending(phase="queued", parent=self.head, kind="baseline", proposer="baseline",
                                           workers=self.ex.workers))
            self._save()
        while any(p.kind in BASELINE_KINDS for p in self.flights):
            for pending in [p for p in self.flights if p.phase == "queued" and p.kind in BASELINE_KINDS]:
                self._advance(pending)
            for finished in self.ex.wait(timeout=1.0):
                self._finished(finished)

    def _advance_baseline(self, pending: Pending) -> None:
        self._set_aside_disturbed(pending)
        results = self._finished_results(pending)
        failed = next((r for r in results if r.outcome != "ok"), None)
        if failed is not None:
            self.ex.cancel_all()
            self.by_run.clear()
            self.research.record_failed_baseline(pending, failed)
            self._forget(pending)
            self._save()
            measured = Interference.from_dict(failed.interference)
            during = f"; meanwhile {measured.describe()}" if measured else ""
            retried = f" after {pending.retries} re-run(s)" if pending.retries else ""
            advice = "run it when the machine is quieter, or raise hard_limit in a new workspace " \
                "(`autoresearch init DIR --set hard_limit=SECONDS`)" if failed.outcome == "timeout" else \
                f"see {self.ws.runs_dir / failed.run_id / 'train.log'}"
            raise WorkspaceError(f"the baseline run {failed.run_id} failed{retried} ({failed.outcome}: {failed.why})"
                                 f"{during}: {advice}")
        under_way = [r for r in pending.runs if r in self.by_run]
        measured = 0 if pending.kind == REBASELINE else len(self.research.best_runs(pending.parent))
        missing = self.research.baseline_target() - measured - len(results) - len(under_way)
        pending.phase = "running"
        for _ in range(min(missing, self.ex.free())):
            self._launch(pending)
        if missing <= 0 and not under_way:
            self.research.record_baseline(pending, results)
            self._forget(pending)
            self._save()

    def _finished_results(self, pending: Pending) -> list[RunResult]:
        results = [RunResult.load(self.ws.runs_dir / r) for r in pending.runs if r not in self.by_run]
        return [r for r in results if r is not None]

    def _set_aside_disturbed(self, pending: Pending) -> None:
        """Finished runs of `pending` whose measurement was disturbed by other work on the machine
        (or, for the best's own runs, that hit the hard limit) are recorded as `disturbed`, out of
        every estimate, and taken out of its runs so that they run again, `disturbed_retries` times
        at most; after that they count, flagged."""
        retries = self.settings.disturbed_retries
        # each run it needs may be run again that many times: the baseline's runs, a candidate's runs
        slots = max(1, len(pending.runs), self.research.baseline_target() if pending.kind in BASELINE_KINDS else 1)
        for result in self._finished_results(pending):
            if any(f.startswith(DISTURBED_BUT_USED) for f in result.flags):
                continue
            reason = self.research.disturbance(result)
            if not reason and result.outcome == "timeout" and pending.kind in (*BASELINE_KINDS, *REMEASURES):
                measured = Interference.from_dict(result.interference)
                reason = f"it ran out of time ({result.why})" + (f"; {measured.describe()}" if measured else "")
            if not reason:
                continue
            if pending.retries >= retries * slots:
                result.flags.append(f"{DISTURBED_BUT_USED} ({reason}): no re-runs left (disturbed_retries {retries})")
                result.save(self.ws.runs_dir / result.run_id)
                self.log(f"warning: run {result.run_id} was disturbed ({reason}); used as it is: no re-runs left")
                continue
            pending.retries += 1
            pending.runs.remove(result.run_id)
            self._save()  # before the row: a kill in between leaves a run folder to restore, not a run judged twice
            self.research.record([self.research.disturbed_row(result, pending, reason)])
            self.log(f"run {result.run_id} disturbed: {reason}; not judged, running it again "
                     f"({pending.retries}/{retries * slots})")

    def _advance_remeasure(self, pending: Pending) -> None:
        """A control run of the best, or an audit run of a kept commit: run it once (again if
        disturbed), then record it."""
        self._set_aside_disturbed(pending)
        results = self._finished_results(pending)
        if not results:
            if not pending.runs:
                self._launch(pending)
            return
        result = results[0]
        if result.outcome == "ok" and pending.kind == AUDIT:
            self.research.record_audit(pending, result)
        elif result.outcome == "ok":
            self.research.record_control(pending, result)
        else:
            self.research.record([self.research.row(result, pending, result.outcome, pending.kind, result.outcome,
                                                    result.error, nodes=self.research.complexity_of(pending.parent))])
            self.log(f"{pending.kind} run {result.run_id} of {pending.parent[:7]} failed ({result.outcome}: "
                     f"{result.error})")
        self._forget(pending)
        self._save()

    def _schedule_control(self) -> None:
        """Queue a control run of the best every `control_every` experiments, and sooner when the
        interference level of the last experiment is far from the level the best was measured at."""
        every = self.settings.control_every
        if not every or any(p.kind == "control" for p in self.flights):
            return
        since = self.research.experiments_since_control()
        shift = self.research.interference_shift()
        if since >= every or (since >= 2 and shift > self.settings.max_interference / 2):
            why = f"{since} experiments since the last" if since >= every else \
                f"the interference level moved by {shift:.0%} since the best was measured"
            self.log(f"control run of the best queued: {why}")
            self.flights.append(Pending(phase="queued", parent=self.head, kind="control", proposer="control",
                                        description="control", workers=self.ex.workers))
            self._save()

    # --- proposing ------------------------------------------------------------------------------

    def _in_flight(self) -> tuple[str, ...]:
        return tuple(p.description for p in self.flights if p.kind == "experiment" and p.phase != "proposing")

    def _propose(self, proposer: Proposer, spent: Spent) -> str:
        """Ask for one proposal on the current best; commit it beside the branch and launch it.
        Returns launched | invalid (refused by the guard, recorded) | failed (recorded)."""
        parent = self.head
        proposing = Pending(phase="proposing", parent=parent, proposer=proposer.name, workers=self.ex.workers)
        self.flights.append(proposing)
        self._save()
        clear_proposal_files(self.ws)
        proposal = None
        try:
            context = self.research.context(in_flight=self._in_flight(), returned=tuple(self.returned[-5:]),
                                            busy_runs=tuple(self.by_run))
            proposal = proposer.propose(context)
            spent.add(proposal.tokens, proposal.cost_usd)
            self.flights.remove(proposing)
            pending, refused = self._capture(proposal, proposer.name)
        except ProposerError as e:
            if proposing in self.flights:
                self.flights.remove(proposing)
            self.failures += 1
            self._proposal_failed(e, proposal, proposer.name, parent, spent)
            if self.failures >= MAX_PROPOSER_FAILURES:
                raise
            return "failed"
        self.failures = 0
        if refused:
            proposer.observe(proposal, refused)
            return "invalid"
        self._advance(pending)
        return "launched"

    def _capture(self, proposal: Proposal, proposer: str, outside: str = "") -> tuple[Pending | None, list[Row]]:
        """The change in the working tree as a queued candidate committed beside the branch, the tree
        back at the best. A change to other files than train.py is reverted and recorded as
        `invalid` (its rows are returned, and no candidate). `outside`: how it was committed outside
        the harness (its rows' flags say so)."""
        git = self.ws.git
        parent = self.head
        refusal = self.research.guard_refusal(proposal, proposer, parent, outside)
        if refusal is not None:
            git.reset_clean(parent)
            clear_proposal_files(self.ws)
            self._save()
            self.research.record([refusal])
            self.log(f"invalid: {proposal.description!r} {refusal.reason}")
            return None, [refusal]
        candidate = git.commit_file(parent, TRAIN_FILE, self.ws.train_py.read_bytes(),
                                    commit_message(proposal, proposer), keep_under=CANDIDATES)
        pending = Pending(phase="queued", parent=parent, proposer=proposer, description=proposal.description,
                          hypothesis=proposal.hypothesis, params=proposal.params, candidate=candidate,
                          tokens=proposal.tokens, cost_usd=proposal.cost_usd, workers=self.ex.workers,
                          outside=outside)
        self._keep_proposal_files(pending)
        self.flights.append(pending)
        self._save()
        git.reset_clean(parent)  # the change lives in its commit now
        return pending, []

    def _proposal_failed(self, error: ProposerError, proposal: Proposal | None, proposer: str, parent: str,
                         spent: Spent) -> None:
        """Undo a proposal that failed, count what it cost, and record it with its files kept."""
        if proposal is None:
            spent.add(error.tokens, error.cost_usd)
        else:  # proposed, then refused by the loop: the proposal's cost is the failure's
            error.tokens, error.cost_usd = proposal.tokens, proposal.cost_usd
            error.description = error.description or proposal.description
        self.ws.git.reset_clean(parent)
        stamp = now()
        kept = keep_failed_proposal(self.ws, stamp.replace(":", "").replace("-", "").replace("+0000", "Z"))
        flags = f"files in {kept.relative_to(self.ws.root)}" if kept else ""
        self._save()
        self.research.record([self.research.failed_proposal_row(error, proposer, parent, stamp, flags)])
        self.log(f"proposer {proposer} failed ({self.failures}/{MAX_PROPOSER_FAILURES}): {error}")

    # --- runs -----------------------------------------------------------------------------------

    def _new_run_id(self) -> str:
        self.ws.runs_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name) for p in self.ws.runs_dir.iterdir() if p.name.isdigit()]
        numbers += [int(r) for r in self.research.ledger.run_ids() | set(self.by_run) if r.isdigit()]
        return f"{max(numbers, default=0) + 1:04d}"

    def _launch(self, pending: Pending) -> None:
        run_id = self._new_run_id()
        pending.runs.append(run_id)
        pending.phase = "running"
        self.by_run[run_id] = pending
        self._save()
        commit = pending.commit
        if commit not in self._files:
            self._files[commit] = {p: b.decode() for p, b in self.ws.git.tracked_files(commit).items()}
        job = Job(run_id=run_id, commit=commit, files=self._files[commit], settings_sha256=self.settings.sha256(),
                  data_sha256=self.prepared.data_sha256, version=autoresearch.__version__)
        where = f", {len(self.by_run)}/{self.ex.workers} running on the {self.ex.name} executor" \
            if self.ex.workers > 1 else ""
        self.log(f"run {run_id}: {pending.description or 'baseline'} (commit {commit[:7]}, budget "
                 f"{self.settings.time_budget:g} s{where})")
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
                result.flags.append(f"the loop's workspace changed while this run was under way: {changed}")
            result.save(run_dir)
        self._attach(pending, run_dir)
        return self._advance(pending)

    def _attach(self, pending: Pending, run_dir: Path) -> None:
        """Put what was proposed next to a run's record: proposal.json, the proposer's files, the diff."""
        save_proposal(run_dir, pending.proposal, pending.proposer)
        copy_proposal_files(self.ws, run_dir, self._flight_files(pending))
        if pending.candidate:
            (run_dir / DIFF_FILE).write_text(self.ws.git.diff(pending.parent, pending.candidate, TRAIN_FILE))

    def _check_workspace(self) -> str:
        """Runs work in workspaces of their own, but a run could still reach this one: after each
        run, the fixed files, the branch, the working tree and the ledger must be as the loop left
        them. What changed is restored and returned, in words (empty when nothing did)."""
        git = self.ws.git
        best = self.best
        changed = self.ws.check_fixed_files() + git.dirty_paths()
        if git.head() != best:
            changed.append(f"the branch (moved to {git.head()[:7]})")
        if changed:
            git.reset_clean(best)
        book = self.research.ledger
        if (book.rows or book.path.exists()) and not book.in_sync():
            changed.append(book.path.name)
            book.write(book.rows)  # what the run added is set aside in results.tsv.damaged, not dropped
        if changed:
            what = ", ".join(changed) + " (restored)"
            self.log(f"warning: {what}")
            return what
        return ""

    # --- deciding -------------------------------------------------------------------------------

    def _advance(self, pending: Pending) -> int:
        """Take a candidate one step: decide it, or start its next run. 1 when decided."""
        if pending.kind in BASELINE_KINDS:
            self._advance_baseline(pending)
            return 0
        if any(r in self.by_run for r in pending.runs):
            return 0
        if pending.kind in REMEASURES:
            self._advance_remeasure(pending)
            return 0
        self._set_aside_disturbed(pending)
        rows = self.research.judge(pending, self._finished_results(pending))
        if rows is None:
            self._launch(pending)  # its first run, or a confirmation run
            return 0
        self._conclude(pending, rows)
        return 1

    def _conclude(self, pending: Pending, rows: list[Row]) -> None:
        head = self.head
        kept = rows[0].status == "keep"
        combination = None
        if kept and pending.parent != head:
            combination, how = self._combine(pending, queue=False)
            rows = [dataclasses.replace(
                row, status="discard", rule="stale",
                reason=f"beat its parent {pending.parent[:7]} ({row.reason}), but the best moved to {head[:7]} "
                       f"while it ran: {how}") for row in rows]
            kept = False
        self.research.record(rows)
        if kept:
            self.ws.git.move_branch(pending.candidate)
            self.best = pending.candidate
            self._remember()
        else:
            for row in rows:  # keep the models of kept commits only
                (self.ws.runs_dir / row.run_id / HANDED_OVER).unlink(missing_ok=True)
        self._forget(pending)
        if combination is not None:
            self.flights.append(combination)
        self._save()
        self._schedule_control()
        self.decided[pending.candidate] = rows
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
            params={"combined_from": pending.candidate}, candidate=commit, workers=self.ex.workers)
        self.log(f"stale win {pending.description!r}: its change on the new best {head[:7]} runs next")
        if queue:
            self.flights.append(combination)
        return combination, f"its change on {head[:7]} is the next experiment"


def _set_aside_other_edits(ws: Workspace, log: Callable[[str], None]) -> list[str]:
    """`autoresearch run` with changes to other files than train.py: the whole change (train.py's
    edit too) is set aside as a git stash, so that the tree is the best again and nothing is lost;
    the run is then recorded `invalid`. The paths besides train.py; [] when only train.py changed
    (or a killed loop left work here: recovery decides what the tree's changes are)."""
    if not ws.git.is_repo() or _left_work(ws):
        return []
    others = sorted(set(ws.git.dirty_paths()) - {TRAIN_FILE, damaged_path(ws.ledger_path).name})
    if others:
        name = ws.git.stash_all(f"autoresearch run: an edit that changed {', '.join(others[:5])}")
        log(f"only train.py may change, and this edit also changed {', '.join(others[:5])}: the whole edit is set "
            f"aside as git stash {name} (`git stash show -p` shows it); the run is invalid")
    return others


def _take_outside_commits(ws: Workspace, log: Callable[[str], None]) -> integrity.Moved | None:
    """Commits an agent made on the best outside the harness, taken off the branch with their change
    left in the working tree (integrity.take_outside_commits); None when there are none. Done first,
    before the fixed files are checked: such a commit may have changed one."""
    if not ws.git.is_repo() or _left_work(ws):
        return None
    move = integrity.moved(ws, Ledger.open(ws.ledger_path).rows if ws.ledger_path.exists() else [])
    if move is None or not move.forward:
        return None  # a move elsewhere is refused once the ledger has been checked
    integrity.take_outside_commits(ws, move, log)
    return move


def _left_work(ws: Workspace) -> bool:
    """Whether a killed loop left something under way here."""
    path = ws.state_dir / FLIGHTS_FILE
    return (ws.state_dir / OLD_STATE_FILE).exists() or (
        path.exists() and path.read_text().strip() not in ("", "[]"))


def _enter_branch(ws: Workspace, tag: str | None, log: Callable[[str], None]) -> None:
    git = ws.git
    current = git.branch()
    if tag is None and current.startswith(BRANCH_PREFIX):
        return
    name = BRANCH_PREFIX + (tag or date.today().strftime("%b%d").lower())
    if current == name:
        return
    if git.branch_exists(name):
        git.switch(name, force=False)
        log(f"resuming on branch {name}")
    else:
        git.new_branch(name)
        log(f"research branch {name} (from {current})")

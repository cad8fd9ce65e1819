"""The coordinator: propose -> guard -> commit -> run -> decide -> record, until stopped.

It is the single writer of the ledger and the git branch. Everything it does can be cut short
by a kill at any point and resumed: the step under way is written to `.autoresearch/state.json`
before it starts, ledger rows are appended atomically once a candidate is decided, and on start
`Researcher.open` reconciles the three (state, ledger, git) so that nothing is lost and nothing
is logged twice:
- a proposal that was never committed is dropped (the working tree is reset);
- a candidate that was committed but not decided is run (again) and decided;
- a candidate that was decided but whose git reset did not happen is reset.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

from autoresearch import atomic, complexity, devices, guard, processes
from autoresearch.data.prepare import PreparedData, open_prepared
from autoresearch.decide import Decision, Runs, decide, pooled_sigma
from autoresearch.errors import ProposerError, SettingsError, WorkspaceError
from autoresearch.ledger import Ledger, Row
from autoresearch.proposers.base import (
    Context,
    Proposal,
    Proposer,
    clear_proposal_files,
    copy_proposal_files,
    keep_failed_proposal,
    save_proposal,
)
from autoresearch.rundir import HANDED_OVER, RunResult, now
from autoresearch.runner import Runner
from autoresearch.settings import Settings
from autoresearch.workspace import TRAIN_FILE, Workspace, find

STATE_FILE = "state.json"
BRANCH_PREFIX = "autoresearch/"
MAX_PROPOSER_FAILURES = 5  # in a row, before the loop gives up


@dataclass
class Pending:
    """The step under way, persisted before it starts."""

    phase: str  # proposing | committing | running
    parent: str
    proposer: str = ""
    kind: str = "experiment"  # experiment | baseline
    description: str = ""
    hypothesis: str = ""
    params: dict = field(default_factory=dict)
    candidate: str = ""
    runs: list[str] = field(default_factory=list)

    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def proposal(self) -> Proposal:
        return Proposal(self.description, self.hypothesis, self.params, self.tokens, self.cost_usd)


def check_machine(settings: Settings) -> None:
    """Refuse a preset that cannot run here, with the fix."""
    device = devices.best_device()
    needs = {"gpu": "cuda", "mps": "mps"}.get(settings.preset)
    if needs and device != needs:
        raise SettingsError(
            f"this workspace uses preset '{settings.preset}', which needs a {needs} device, but this machine "
            f"has {devices.describe()}: create a workspace with `autoresearch init DIR --preset cpu`"
        )


class Researcher:
    def __init__(self, ws: Workspace, settings: Settings, prepared: PreparedData, runner: Runner,
                 log: Callable[[str], None] = print) -> None:
        self.ws = ws
        self.settings = settings
        self.prepared = prepared
        self.runner = runner
        self.log = log
        self.ledger = Ledger.open(ws.ledger_path)
        self.fingerprint = guard.fingerprint(settings.sha256(), prepared.data_sha256)
        # Runs at once (scale/): parallel runs slow each other, so results are compared, and the
        # noise measured, only among runs made under the same parallelism.
        self.workers = 1

    # --- opening a workspace --------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path | None = None, tag: str | None = None, allow_dirty_train: bool = False,
             log: Callable[[str], None] = print, extra_env: dict[str, str] | None = None) -> Researcher:
        ws = find(root)
        git = ws.git
        if not git.is_repo():
            raise WorkspaceError(f"{ws.root} is not a git repository: create workspaces with `autoresearch init DIR`")
        settings = ws.settings()
        check_machine(settings)
        problems = ws.check_fixed_files()
        if problems:
            raise WorkspaceError(
                f"fixed file(s) {', '.join(problems)} differ from what the harness wrote: restore them with "
                f"`git checkout -- {' '.join(problems)}`")
        prepared = open_prepared(settings)
        state = _read_state(ws)
        dirty = git.dirty_paths()
        if dirty and state is None and not (allow_dirty_train and set(dirty) <= {TRAIN_FILE}):
            raise WorkspaceError(
                f"uncommitted changes in {', '.join(dirty[:5])}: commit or stash them first "
                "(the loop resets the working tree between experiments)")
        _enter_branch(ws, tag, log)
        runner = Runner(ws, settings, prepared.data_sha256, extra_env=extra_env or {})
        researcher = cls(ws, settings, prepared, runner, log)
        researcher._recover()
        return researcher

    # --- what the ledger says -------------------------------------------------------------------

    def _measured(self) -> list[Row]:
        """Rows with a harness-measured val_bpb under the current fingerprint and parallelism, that ran fine."""
        return [r for r in self.ledger.rows
                if r.fingerprint == self.fingerprint and r.val_bpb is not None and r.status in ("keep", "discard")
                and (r.workers or 1) == self.workers]

    def _kept_rows(self, commit: str | None = None) -> list[Row]:
        short = (commit or self.ws.git.head())[:7]
        return [r for r in self._measured() if r.short == short and r.status == "keep"]

    def best_runs(self, commit: str | None = None) -> list[float]:
        """val_bpb of the runs of `commit` (default HEAD, the best) under the current fingerprint."""
        return [r.val_bpb for r in self._kept_rows(commit)]

    def complexity_of(self, commit: str) -> int | None:
        """Syntax-tree nodes of train.py at `commit` (complexity.py)."""
        return complexity.measure(self.ws.git.show(commit, TRAIN_FILE).decode("utf-8", errors="replace"))

    def commit_runs(self, commit: str | None = None) -> Runs:
        """What the keep rule knows of a measured commit (default HEAD): its runs, complexity, peak memory."""
        commit = commit or self.ws.git.head()
        rows = self._kept_rows(commit)
        memory = [m for m in (self._memory_gb(r) for r in rows) if m]
        return Runs([r.val_bpb for r in rows], self.complexity_of(commit), memory)

    def _memory_gb(self, row: Row) -> float | None:
        """A run's peak memory at full precision (its run record), else the ledger's 0.1 GB."""
        result = RunResult.load(self.ws.runs_dir / row.run_id) if row.run_id else None
        return result.memory_gb if result is not None and result.memory_gb is not None else row.memory_gb

    @cached_property
    def memory_limit_gb(self) -> float | None:
        """The hard limit on a run's peak memory: the settings', else the device's total."""
        return self.settings.max_memory_gb or devices.total_memory_gb()

    def sigma(self) -> float:
        groups: dict[str, list[float]] = {}
        for r in self._measured():
            groups.setdefault(r.short, []).append(r.val_bpb)
        return pooled_sigma(list(groups.values()), self.settings.min_noise)

    def baseline_ratio(self) -> float | None:
        """Mean held-out/val bpb ratio of the baseline runs: what honest training gives here."""
        ratios = [r.heldout_bpb / r.val_bpb for r in self._measured() if r.kind == "baseline" and r.heldout_bpb]
        return statistics.fmean(ratios) if ratios else None

    def context(self, in_flight: tuple[str, ...] = (), returned: tuple[str, ...] = ()) -> Context:
        best = self.best_runs()
        return Context(
            ws=self.ws, settings=self.settings, ledger=self.ledger, best_commit=self.ws.git.head(),
            best_source=self.ws.git.show("HEAD", TRAIN_FILE).decode(),
            best_bpb=statistics.fmean(best) if best else None, sigma=self.sigma(), in_flight=in_flight, returned=returned,
        )

    # --- state ----------------------------------------------------------------------------------

    def _save(self, pending: Pending | None) -> None:
        path = self.ws.state_dir / STATE_FILE
        if pending is None:
            path.unlink(missing_ok=True)
        else:
            atomic.write_json(path, asdict(pending))

    def _recover(self) -> None:
        pending = _read_state(self.ws)
        if pending is None:
            return
        git = self.ws.git
        recorded = self.ledger.run_ids()
        if pending.phase in ("proposing", "committing"):
            if pending.phase == "committing" and git.head() != pending.parent and git.rev("HEAD~1") == pending.parent:
                pending.phase, pending.candidate = "running", git.head()  # the commit made it
            else:
                self.log("recovering: dropping an uncommitted proposal")
                git.reset_clean(pending.parent)
                clear_proposal_files(self.ws)
                self._save(None)
                return
        if pending.runs and set(pending.runs) <= recorded:  # decided and recorded; finish the git part
            rows = [r for r in self.ledger.rows if r.run_id in pending.runs]
            if pending.kind == "experiment" and rows[-1].status != "keep" and git.head() == pending.candidate:
                git.run("reset", "--quiet", "--hard", pending.parent)
            self._save(None)
            return
        self.log(f"recovering: resuming {pending.kind} {pending.description or pending.candidate[:7]!r}")
        git.reset_clean(pending.candidate or pending.parent)
        finished = []
        for run_id in pending.runs:
            if run_id not in recorded and RunResult.load(self.ws.runs_dir / run_id) is not None:
                finished.append(run_id)
                continue
            self.drop_interrupted_run(run_id)
        pending.runs = finished
        self._save(pending)
        if pending.kind == "baseline":
            self._finish_baseline(pending)
        else:
            self._finish_candidate(pending)

    def drop_interrupted_run(self, run_id: str) -> None:
        """A run cut short by a kill: end the processes it left (found by its key) and remove its
        folder; it will run again."""
        run_dir = self.ws.runs_dir / run_id
        orphans = processes.run_processes(processes.run_key(run_dir), None, set())
        if orphans:
            self.log(f"recovering: ending {len(orphans)} process(es) left by interrupted run {run_id}")
            processes.kill_all(orphans)
        shutil.rmtree(run_dir, ignore_errors=True)

    # --- runs -----------------------------------------------------------------------------------

    def _new_run_id(self, reserved: set[str] | frozenset[str] = frozenset()) -> str:
        self.ws.runs_dir.mkdir(parents=True, exist_ok=True)
        numbers = [int(p.name) for p in self.ws.runs_dir.iterdir() if p.name.isdigit()]
        numbers += [int(r) for r in self.ledger.run_ids() | set(reserved) if r.isdigit()]
        return f"{max(numbers, default=0) + 1:04d}"

    def _run(self, pending: Pending) -> RunResult:
        run_id = self._new_run_id()
        pending.runs.append(run_id)
        self._save(pending)
        commit = pending.candidate or pending.parent
        self.log(f"run {run_id}: {pending.description or 'baseline'} (commit {commit[:7]}, budget {self.settings.time_budget:g} s)")
        result = self.runner.run(run_id, commit)
        self.attach(pending, self.ws.runs_dir / run_id)
        return result

    def attach(self, pending: Pending, run_dir: Path, proposal_files: Path | None = None) -> None:
        """Put what was proposed next to a run's record: proposal.json, the proposer's files, the diff."""
        save_proposal(run_dir, pending.proposal, pending.proposer)
        copy_proposal_files(self.ws, run_dir, proposal_files)
        if pending.candidate:
            (run_dir / "diff.patch").write_text(self.ws.git.diff(pending.parent, pending.candidate, TRAIN_FILE))

    def _row(self, result: RunResult, pending: Pending, status: str, kind: str, rule: str, reason: str = "",
             decision: Decision | None = None, best: Runs | None = None, nodes: int | None = None) -> Row:
        desc = pending.description or "baseline"
        if kind == "confirm":
            desc = f"{desc} (confirmation run)"
        s = result.summary
        gain = delta = memory_delta = None
        if best is not None and best.val_bpb and result.val_bpb is not None:
            gain = best.mean - result.val_bpb
        if best is not None and nodes is not None and best.complexity is not None:
            delta = nodes - best.complexity
        if best is not None and best.mean_memory is not None and result.memory_gb is not None:
            memory_delta = result.memory_gb - best.mean_memory
        return Row(
            commit=result.commit, val_bpb=result.val_bpb if status != "invalid" else None,
            memory_gb=result.memory_gb, status=status, description=desc, run_id=result.run_id, kind=kind,
            timestamp=result.ended, parent=pending.parent[:7] if pending.candidate else "",
            proposer=pending.proposer, heldout_bpb=result.heldout_bpb, training_seconds=s.get("training_seconds"),
            wall_seconds=result.wall_seconds, handover_seconds=result.handover_seconds,
            num_steps=int(s["num_steps"]) if "num_steps" in s else None, total_tokens_m=s.get("total_tokens_M"),
            mfu_percent=s.get("mfu_percent"), gain=gain, noise=decision.sigma if decision else None,
            complexity=nodes, complexity_delta=delta, memory_delta=memory_delta,
            threshold=decision.threshold if decision else None, rule=rule, reason=reason,
            flags="; ".join(result.flags), fingerprint=self.fingerprint, workers=self.workers if self.workers > 1 else None,
            cost_usd=pending.cost_usd if kind == "experiment" and pending.cost_usd else None,
            tokens=pending.tokens if kind == "experiment" and pending.tokens else None,
        )

    # --- the baseline ---------------------------------------------------------------------------

    def ensure_baseline(self) -> None:
        """Measure the best commit `baseline_runs` times under the current fingerprint."""
        if len(self.best_runs()) >= self.settings.baseline_runs:
            return
        stashed = None
        if self.ws.git.dirty_paths() == [TRAIN_FILE]:  # `autoresearch run` with a change waiting
            stashed = self.ws.train_py.read_bytes()
            atomic.write_bytes(self.ws.state_dir / "waiting-train.py", stashed)
            self.ws.git.run("checkout", "--", TRAIN_FILE)
        pending = Pending(phase="running", parent=self.ws.git.head(), kind="baseline", proposer="baseline")
        self._save(pending)
        self._finish_baseline(pending)
        if stashed is not None:
            self.ws.train_py.write_bytes(stashed)
            (self.ws.state_dir / "waiting-train.py").unlink(missing_ok=True)

    def _finish_baseline(self, pending: Pending) -> None:
        results = [RunResult.load(self.ws.runs_dir / r) for r in pending.runs]
        results = [r for r in results if r is not None]
        have = len(self.best_runs())
        while have + sum(r.outcome == "ok" for r in results) < self.settings.baseline_runs:
            result = self._run(pending)
            results.append(result)
            if result.outcome != "ok":
                self.fail_baseline(pending, result)
        self.record_baseline(pending, results)
        self._save(None)

    def fail_baseline(self, pending: Pending, result: RunResult) -> None:
        """Record a baseline run that did not finish well, and stop: nothing can be compared with it."""
        self.record([self._row(result, pending, result.outcome, "baseline", result.outcome, result.error,
                               nodes=self.complexity_of(pending.parent))])
        raise WorkspaceError(f"the baseline run failed ({result.outcome}: {result.error}); see "
                             f"{self.ws.runs_dir / result.run_id / 'train.log'}")

    def record_baseline(self, pending: Pending, results: list[RunResult]) -> None:
        nodes = self.complexity_of(pending.parent)
        rows = [self._row(r, pending, "keep", "baseline", "baseline", "measures the best commit and the noise",
                          nodes=nodes) for r in results]
        self.record(rows)
        sigma = self.sigma()
        best = self.commit_runs(pending.parent)
        together = f" ({self.workers} at a time)" if self.workers > 1 else ""
        self.log(f"baseline: val_bpb {best.mean:.6f} over {len(best.val_bpb)} runs{together}, noise sigma {sigma:.6f}, "
                 f"train.py {best.complexity} {complexity.UNIT}")
        limit = self.memory_limit_gb
        if limit and best.memory_gb and max(best.memory_gb) > limit:
            self.log(f"warning: the baseline's peak memory {max(best.memory_gb):.2f} GB is above the hard limit "
                     f"{limit:.2f} GB: every change that does not reduce it will be discarded")

    # --- experiments ----------------------------------------------------------------------------

    def experiment(self, proposal: Proposal, proposer: str) -> list[Row]:
        """Guard, commit, run and decide the change in the working tree; returns its ledger rows."""
        git = self.ws.git
        parent = git.head()
        pending = Pending(phase="committing", parent=parent, proposer=proposer, description=proposal.description,
                          hypothesis=proposal.hypothesis, params=proposal.params, tokens=proposal.tokens,
                          cost_usd=proposal.cost_usd)
        refused = self.refuse_other_files(proposal, proposer, parent)
        if refused:
            return refused
        self._save(pending)
        pending.candidate = git.commit_all(_commit_message(proposal, proposer), paths=[TRAIN_FILE])
        pending.phase = "running"
        self._save(pending)
        return self._finish_candidate(pending)

    def refuse_other_files(self, proposal: Proposal, proposer: str, parent: str) -> list[Row]:
        """The guard on a proposal in the working tree: it must change train.py and nothing else.
        A change to other files is reverted and recorded as `invalid` (its rows are returned)."""
        git = self.ws.git
        changed = git.changed_since(parent)
        if not changed:
            raise ProposerError("the proposal left train.py unchanged")
        if set(changed) == {TRAIN_FILE}:
            return []
        others = sorted(set(changed) - {TRAIN_FILE})
        nodes = complexity.measure(self.ws.train_py.read_text(errors="replace")) if self.ws.train_py.exists() \
            else None
        before = self.complexity_of(parent)
        git.reset_clean(parent)
        row = Row(commit=parent, val_bpb=None, memory_gb=None, status="invalid", description=proposal.description,
                  kind="experiment", parent=parent[:7], proposer=proposer, timestamp=now(), complexity=nodes,
                  complexity_delta=nodes - before if nodes is not None and before is not None else None,
                  rule="guard", reason=f"changed files other than train.py: {', '.join(others)} (reverted)",
                  fingerprint=self.fingerprint, cost_usd=proposal.cost_usd or None, tokens=proposal.tokens or None)
        self.record([row])
        self.log(f"invalid: {proposal.description!r} changed {', '.join(others)}; reverted")
        return [row]

    def _finish_candidate(self, pending: Pending) -> list[Row]:
        results = [RunResult.load(self.ws.runs_dir / r) for r in pending.runs]
        results = [r for r in results if r is not None]
        while True:
            rows = self.judge(pending, results) if results else None
            if rows is not None:
                return self._conclude(pending, rows, kept=rows[0].status == "keep")
            results.append(self._run(pending))

    def judge(self, pending: Pending, results: list[RunResult]) -> list[Row] | None:
        """The candidate's ledger rows once its runs decide it; None while it needs another run."""
        best = self.commit_runs(pending.parent)
        nodes = self.complexity_of(pending.candidate)
        last = results[-1]
        if last.outcome != "ok":
            return [self._row(r, pending, r.outcome if r is last else "discard",
                              "experiment" if i == 0 else "confirm", last.outcome, last.error, best=best, nodes=nodes)
                    for i, r in enumerate(results)]
        candidate = Runs([r.val_bpb for r in results], nodes, [r.memory_gb for r in results if r.memory_gb])
        decision = decide(candidate, best, self.sigma(), self.settings, self.memory_limit_gb)
        if decision.verdict == "confirm":
            self.log(f"  {decision.reason}")
            return None
        status, rule, reason = decision.verdict, decision.rule, decision.reason
        # Val and held-out are disjoint samples of the same kind of text, so honest training moves
        # both alike and their ratio stays put; training on the val shards lowers val alone.
        base_ratio = self.baseline_ratio()
        if base_ratio is not None and status == "keep":
            ratio = statistics.fmean(r.heldout_bpb / r.val_bpb for r in results)
            if ratio / base_ratio - 1 > self.settings.heldout_tolerance:
                status, rule = "invalid", "held-out"
                reason = (f"suspicious: held-out/val bpb ratio {ratio:.3f} vs the baseline's {base_ratio:.3f} "
                          f"(tolerance +{self.settings.heldout_tolerance:.0%}); was it trained on validation data?")
        return [self._row(r, pending, status, "experiment" if i == 0 else "confirm", rule, reason, decision, best,
                          nodes) for i, r in enumerate(results)]

    def _conclude(self, pending: Pending, rows: list[Row], kept: bool) -> list[Row]:
        self.record(rows)
        clear_proposal_files(self.ws)
        if not kept:
            self.ws.git.run("reset", "--quiet", "--hard", pending.parent)
        for row in rows:  # keep the models of kept commits only
            if not kept:
                (self.ws.runs_dir / row.run_id / HANDED_OVER).unlink(missing_ok=True)
        self._save(None)
        first = rows[0]
        val = f"{statistics.fmean(r.val_bpb for r in rows if r.val_bpb is not None):.6f}" if any(
            r.val_bpb is not None for r in rows) else "-"
        self.log(f"{first.status:8s} val_bpb {val}  {pending.description}  [{first.why}]")
        return rows

    def record(self, rows: list[Row]) -> None:
        self.ledger.append(*rows)

    # --- the loop -------------------------------------------------------------------------------

    def loop(self, proposer: Proposer, max_experiments: int | None = None, hours: float | None = None,
             max_cost: float | None = None, max_tokens: int | None = None) -> int:
        """Run experiments until a limit; returns how many were run.

        `max_cost` (USD) and `max_tokens` cap what the proposer spends in this call, failed
        proposals included: once reached, no new proposal is started.
        """
        self.ensure_baseline()
        started, done, failures = time.monotonic(), 0, 0
        spent = Spent()
        while max_experiments is None or done < max_experiments:
            if hours is not None and time.monotonic() - started >= hours * 3600:
                self.log(f"stopping: {hours:g} h reached")
                break
            cap = spent.reached(max_cost, max_tokens)
            if cap:
                self.log(f"stopping: {cap}")
                break
            parent = self.ws.git.head()
            self._save(Pending(phase="proposing", parent=parent, proposer=proposer.name))
            clear_proposal_files(self.ws)
            proposal: Proposal | None = None
            try:
                proposal = proposer.propose(self.context())
                spent.add(proposal.tokens, proposal.cost_usd)
                rows = self.experiment(proposal, proposer.name)
            except ProposerError as e:
                failures += 1
                self.proposal_failed(e, proposal, proposer.name, parent, spent, failures)
                if failures >= MAX_PROPOSER_FAILURES:
                    raise
                continue
            failures = 0
            proposer.observe(proposal, rows)
            done += 1
        return done

    def proposal_failed(self, error: ProposerError, proposal: Proposal | None, proposer: str, parent: str,
                        spent: Spent, failures: int) -> None:
        """Undo a proposal that failed (`failures` in a row), count what it cost, and record it."""
        if proposal is None:
            spent.add(error.tokens, error.cost_usd)
        else:  # proposed, then refused by the coordinator: the proposal's cost is the failure's
            error.tokens, error.cost_usd = proposal.tokens, proposal.cost_usd
            error.description = error.description or proposal.description
        self.ws.git.reset_clean(parent)
        self._save(None)
        self.record_failed_proposal(error, proposer, parent)
        self.log(f"proposer {proposer} failed ({failures}/{MAX_PROPOSER_FAILURES}): {error}")

    def record_failed_proposal(self, error: ProposerError, proposer: str, parent: str) -> None:
        """A proposal that never became a run: an `invalid` row (with what it cost), its files kept."""
        stamp = now()
        kept = keep_failed_proposal(self.ws, stamp.replace(":", "").replace("-", "").replace("+0000", "Z"))
        flags = f"files in {kept.relative_to(self.ws.root)}" if kept else ""
        message = " ".join(str(error).split())
        self.record([Row(
            commit=parent, val_bpb=None, memory_gb=None, status="invalid",
            description=error.description or "(no proposal)", kind="experiment", parent=parent[:7], proposer=proposer,
            timestamp=stamp, rule="proposal-failed", reason=message[:300], flags=flags, fingerprint=self.fingerprint,
            cost_usd=error.cost_usd or None, tokens=error.tokens or None,
        )])


@dataclass
class Spent:
    """What the proposer spent in one `loop` call."""

    tokens: int = 0
    cost_usd: float = 0.0

    def add(self, tokens: int, cost_usd: float) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd

    def reached(self, max_cost: float | None, max_tokens: int | None) -> str:
        """Which cap is reached, in words; empty when none."""
        if max_cost is not None and self.cost_usd >= max_cost:
            return f"cost cap reached ({self.cost_usd:.4f} USD spent, --max-cost {max_cost:g})"
        if max_tokens is not None and self.tokens >= max_tokens:
            return f"token cap reached ({self.tokens} tokens spent, --max-tokens {max_tokens})"
        return ""


def _read_state(ws: Workspace) -> Pending | None:
    path = ws.state_dir / STATE_FILE
    if not path.exists():
        return None
    try:
        return Pending(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        path.unlink()
        return None


def _enter_branch(ws: Workspace, tag: str | None, log: Callable[[str], None]) -> None:
    git = ws.git
    current = git.branch()
    if tag is None and current.startswith(BRANCH_PREFIX):
        return
    name = BRANCH_PREFIX + (tag or date.today().strftime("%b%d").lower())
    if current == name:
        return
    if git.branch_exists(name):
        git.run("checkout", "--quiet", name)
        log(f"resuming on branch {name}")
    else:
        git.run("checkout", "--quiet", "-b", name)
        log(f"research branch {name} (from {current})")


def _commit_message(proposal: Proposal, proposer: str) -> str:
    body = f"\n\n{proposal.hypothesis}" if proposal.hypothesis else ""
    return f"{proposal.description}{body}\n\nproposer: {proposer}"


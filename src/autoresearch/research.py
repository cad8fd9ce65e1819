"""The research record: what the ledger says, how a candidate is judged, and the rows it gets.

`Research` reads the ledger of one workspace under one fingerprint and parallelism, judges a
candidate's runs with the keep rule (decide.py), builds and appends ledger rows, and applies the
guard to a proposal in the working tree. It writes nothing but ledger rows: the loop (loop.py)
owns the state of what is under way, the branch and the run folders.

Also here: `Pending` (one candidate, or the baseline, under way), `Spent` (what a proposer spent),
`Limits` (when the loop stops proposing) and `commit_message`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from autoresearch import audit, complexity, devices, guard
from autoresearch.audit import AUDIT
from autoresearch.decide import Decision, Runs, decide, implausible, pooled_sigma
from autoresearch.errors import ProposerError
from autoresearch.interference import Interference
from autoresearch.ledger import Ledger, Row, save_row
from autoresearch.proposers.base import Context, Proposal
from autoresearch.rundir import RunResult, now
from autoresearch.settings import Settings
from autoresearch.workspace import TRAIN_FILE, Workspace

MAX_PROPOSER_FAILURES = 5  # in a row, before the loop gives up
REBASELINE = "rebaseline"  # the kind of a baseline measured on demand (`autoresearch rebaseline`)
BASELINE_KINDS = ("baseline", REBASELINE)  # what measures the best commit rather than a change
REMEASURES = ("control", AUDIT)  # runs of a kept commit made again: they join its runs and the noise estimate


def _speed(steps: float | None, seconds: float | None) -> float | None:
    return steps / seconds if steps and seconds else None


def _contention(result: RunResult) -> float | None:
    """The ledger's `interference`: the run's contention, or on CUDA its GPU's if larger (Interference.level)."""
    measured = Interference.from_dict(result.interference)
    return measured.level if measured is not None else None


@dataclass
class Pending:
    """A candidate (or the baseline) the loop has under way; the loop persists it before each step.

    phase: proposing (the proposer is changing the working tree), queued (committed, waiting for a
    worker or for its next run), running (a run of it is under way).
    """

    phase: str
    parent: str  # the best commit when it was proposed
    proposer: str = ""
    kind: str = "experiment"  # experiment | baseline | rebaseline | control | audit
    description: str = ""
    hypothesis: str = ""
    params: dict = field(default_factory=dict)
    candidate: str = ""  # its commit (beside the branch until kept); empty for the baseline
    runs: list[str] = field(default_factory=list)  # run ids, in order: the first run, then confirmations
    tokens: int = 0
    cost_usd: float = 0.0
    workers: int | None = None  # runs at once in the loop that started it
    outside: str = ""  # a change committed outside the harness: which commits (its rows' flags say so)
    retries: int = 0  # runs of it set aside as disturbed (or past the hard limit) and run again

    @property
    def proposal(self) -> Proposal:
        return Proposal(self.description, self.hypothesis, self.params, self.tokens, self.cost_usd)

    @property
    def commit(self) -> str:
        """What its runs train: the candidate, or for the baseline the parent."""
        return self.candidate or self.parent


@dataclass
class Spent:
    """What the proposer spent in one `loop` call."""

    tokens: int = 0
    cost_usd: float = 0.0

    def add(self, tokens: int, cost_usd: float) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd


@dataclass(frozen=True)
class Limits:
    """When the loop stops starting experiments (what is under way then finishes).

    max_cost (USD) and max_tokens cap what the proposer spends in this call, failed proposals
    included."""

    max_experiments: int | None = None
    hours: float | None = None
    max_cost: float | None = None
    max_tokens: int | None = None

    def reached(self, proposed: int, started: float, spent: Spent) -> str:
        """Which limit is reached, in words; empty when none. `started`: time.monotonic() at the start."""
        if self.max_experiments is not None and proposed >= self.max_experiments:
            return f"{self.max_experiments} experiment(s) proposed"
        if self.hours is not None and time.monotonic() - started >= self.hours * 3600:
            return f"{self.hours:g} h reached"
        if self.max_cost is not None and spent.cost_usd >= self.max_cost:
            return f"cost cap reached ({spent.cost_usd:.4f} USD spent, --max-cost {self.max_cost:g})"
        if self.max_tokens is not None and spent.tokens >= self.max_tokens:
            return f"token cap reached ({spent.tokens} tokens spent, --max-tokens {self.max_tokens})"
        return ""


def commit_message(proposal: Proposal, proposer: str) -> str:
    body = f"\n\n{proposal.hypothesis}" if proposal.hypothesis else ""
    return f"{proposal.description}{body}\n\nproposer: {proposer}"


class Research:
    """The ledger of one workspace, read and extended under one fingerprint and parallelism."""

    def __init__(self, ws: Workspace, settings: Settings, data_sha256: str, workers: int = 1,
                 log: Callable[[str], None] = print) -> None:
        self.ws = ws
        self.settings = settings
        self.log = log
        self.ledger = Ledger.open(ws.ledger_path)
        self.fingerprint = guard.fingerprint(settings.sha256(), data_sha256)
        # Parallel runs slow each other: results are compared, and the noise measured, only among
        # runs made under the same parallelism.
        self.workers = workers
        self._complexity: dict[str, int | None] = {}  # full commit hash -> complexity of its train.py
        self.recorded: Callable[[], None] = lambda: None  # called after rows are recorded (the loop's state)
        self.on_record: Callable[[list[Row]], None] | None = None  # told of rows once recorded (the trackers)

    # --- what the ledger says -------------------------------------------------------------------

    def measured(self) -> list[Row]:
        """Rows with a harness-measured val_bpb under the current fingerprint and parallelism, that ran fine."""
        return [r for r in self.ledger.rows
                if r.fingerprint == self.fingerprint and r.val_bpb is not None and r.status in ("keep", "discard")
                and r.kind != "disturbed" and (r.workers or 1) == self.workers]

    def kept_rows(self, commit: str | None = None) -> list[Row]:
        short = (commit or self.ws.git.head())[:7]
        return [r for r in self.measured() if r.short == short and r.status == "keep"]

    def best_runs(self, commit: str | None = None) -> list[float]:
        """val_bpb of the runs of `commit` (default HEAD, the best) under the current fingerprint."""
        return [r.val_bpb for r in self.kept_rows(commit)]

    def complexity_of(self, commit: str) -> int | None:
        """Syntax-tree nodes of train.py at `commit` (complexity.py); a commit never changes, so
        each is measured once (judging asks for the best's and the candidate's at every run)."""
        if commit not in self._complexity:
            source = self.ws.git.show(commit, TRAIN_FILE).decode("utf-8", errors="replace")
            self._complexity[commit] = complexity.measure(source)
        return self._complexity[commit]

    def commit_runs(self, commit: str | None = None) -> Runs:
        """What the keep rule knows of a measured commit (default HEAD): its runs, complexity, peak memory."""
        commit = commit or self.ws.git.head()
        rows = self.kept_rows(commit)
        memory = [m for m in (self.memory_gb(r) for r in rows) if m]
        return Runs([r.val_bpb for r in rows], self.complexity_of(commit), memory)

    def memory_gb(self, row: Row) -> float | None:
        """A run's peak memory at full precision (its run record), else the ledger's 0.1 GB."""
        result = RunResult.load(self.ws.runs_dir / row.run_id) if row.run_id else None
        return result.memory_gb if result is not None and result.memory_gb is not None else row.memory_gb

    @cached_property
    def memory_limit_gb(self) -> float | None:
        """The hard limit on a run's peak memory: the settings', else the device's total."""
        return self.settings.max_memory_gb or devices.total_memory_gb()

    def sigma(self, candidate: Sequence[float] = ()) -> float:
        """The noise: pooled over the ledger's repeated commits and the `candidate` runs under way
        (a candidate's own spread counts once it has two runs; decide.py)."""
        groups: dict[str, list[float]] = {}
        for r in self.measured():
            groups.setdefault(r.short, []).append(r.val_bpb)
        return pooled_sigma([*groups.values(), list(candidate)], self.settings.min_noise)

    def noise_warning(self) -> str:
        """A warning when sigma is implausible for the preset (decide.implausible); "" when it is not."""
        best = self.best_runs()
        if not best:
            return ""
        return implausible(self.sigma(), statistics.fmean(best), self.settings)

    # --- interference ---------------------------------------------------------------------------

    def slowdown(self, result: RunResult) -> float | None:
        """How much slower (steps per training second) the run was than the median of the earlier
        undisturbed runs of its commit; None without such runs or step counts."""
        speed = _speed(result.summary.get("num_steps"), result.summary.get("training_seconds"))
        earlier = [_speed(r.num_steps, r.training_seconds) for r in self.measured()
                   if r.short == result.commit[:7] and r.run_id != result.run_id]
        earlier = [v for v in earlier if v]
        if not speed or not earlier:
            return None
        return round(1 - speed / statistics.median(earlier), 3)

    def disturbance(self, result: RunResult) -> str:
        """Why a finished run's measurement is disturbed, in words; "" when it is not."""
        if result.outcome != "ok":
            return ""
        measured = Interference.from_dict(result.interference)
        # On the cpu clock others' CPU use does not shorten training (clock.py): what it still costs
        # (caches, memory bandwidth) shows as fewer steps per clock second, the slowdown below. A GPU's
        # contention counts on either clock.
        level = None if measured is None else (
            measured.level if self.settings.clock == "wall" else measured.gpu_contention)
        if level is not None and level > self.settings.max_interference:
            return f"{measured.describe()}, above max_interference {self.settings.max_interference:.0%}"
        slowdown = self.slowdown(result)
        if slowdown is not None and slowdown > self.settings.max_slowdown:
            return (f"its steps were {slowdown:.0%} slower than earlier runs of its commit, above max_slowdown "
                    f"{self.settings.max_slowdown:.0%}")
        return ""

    def interference_shift(self) -> float:
        """How far the interference of the last experiment's run is from the median of the best's
        runs (baseline and control), in contention; 0 when either is unknown."""
        best = [r.interference for r in self.kept_rows() if r.kind in (*BASELINE_KINDS, *REMEASURES)]
        last = next((r.interference for r in reversed(self.ledger.rows) if r.kind in ("experiment", "confirm")), None)
        best = [v for v in best if v is not None]
        if last is None or not best:
            return 0.0
        return abs(last - statistics.median(best))

    def disturbed_row(self, result: RunResult, pending: Pending, reason: str) -> Row:
        """A run set aside unjudged (kind `disturbed`): in the ledger, out of every estimate."""
        status = "discard" if result.outcome == "ok" else result.outcome
        row = self.row(result, pending, status, "disturbed", "disturbed",
                       f"{reason}: not judged; run again", nodes=self.complexity_of(pending.commit))
        return replace(row, description=f"{pending.description or pending.kind} (disturbed)")

    def baseline_ratio(self) -> float | None:
        """Mean held-out/val bpb ratio of the baseline runs: what honest training gives here."""
        ratios = [r.heldout_bpb / r.val_bpb for r in self.measured() if r.kind in BASELINE_KINDS and r.heldout_bpb]
        return statistics.fmean(ratios) if ratios else None

    def baseline_target(self) -> int:
        """Runs of the best commit the noise estimate needs: `baseline_runs`, and with parallel
        workers at least one per worker (they are measured that many at once)."""
        return max(self.settings.baseline_runs, self.workers if self.workers > 1 else 0)

    def context(self, in_flight: tuple[str, ...] = (), returned: tuple[str, ...] = (),
                busy_runs: tuple[str, ...] = ()) -> Context:
        best = self.best_runs()
        return Context(
            ws=self.ws, settings=self.settings, ledger=self.ledger, best_commit=self.ws.git.head(),
            best_source=self.ws.git.show("HEAD", TRAIN_FILE).decode(),
            best_bpb=statistics.fmean(best) if best else None, sigma=self.sigma(), in_flight=in_flight, returned=returned,
            busy_runs=busy_runs,
        )

    # --- rows -----------------------------------------------------------------------------------

    def row(self, result: RunResult, pending: Pending, status: str, kind: str, rule: str, reason: str = "",
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
            flags="; ".join(result.flags + ([pending.outside] if pending.outside else [])), fingerprint=self.fingerprint, workers=self.workers if self.workers > 1 else None,
            interference=_contention(result), slowdown=self.slowdown(result),
            cost_usd=pending.cost_usd if kind == "experiment" and pending.cost_usd else None,
            tokens=pending.tokens if kind == "experiment" and pending.tokens else None,
        )

    def record(self, rows: list[Row]) -> None:
        """Append rows to the ledger, each first written into its run folder (row.json), the record a
        lost ledger row is rebuilt from. A run already recorded (its row put back from its run folder
        after a kill between the two writes) is not recorded twice."""
        recorded = self.ledger.run_ids()
        rows = [r for r in rows if not r.run_id or r.run_id not in recorded]
        for r in rows:
            if r.run_id and (self.ws.runs_dir / r.run_id).is_dir():
                save_row(self.ws.runs_dir / r.run_id, r)
        self.ledger.append(*rows)
        self.recorded()
        if self.on_record is not None and rows:
            self.on_record(rows)

    # --- the baseline ---------------------------------------------------------------------------

    def record_baseline(self, pending: Pending, results: list[RunResult]) -> None:
        """The baseline's runs as `keep` rows of the best commit; logs the noise they give."""
        nodes = self.complexity_of(pending.parent)
        why = "measures the best commit and the noise"
        if pending.kind == REBASELINE:
            why = f"{REBASELINE}: {why}, on demand (`autoresearch rebaseline`); it is the best from here on"
        self.record([self.row(r, pending, "keep", pending.kind, pending.kind, why, nodes=nodes) for r in results])
        sigma = self.sigma()
        best = self.commit_runs(pending.parent)
        together = f" ({self.workers} at a time)" if self.workers > 1 else ""
        self.log(f"baseline: val_bpb {best.mean:.6f} over {len(best.val_bpb)} runs{together}, noise sigma {sigma:.6f}, "
                 f"train.py {best.complexity} {complexity.UNIT}")
        warning = self.noise_warning()
        if warning:
            self.log(f"warning: {warning}")
        limit = self.memory_limit_gb
        if limit and best.memory_gb and max(best.memory_gb) > limit:
            self.log(f"warning: the baseline's peak memory {max(best.memory_gb):.2f} GB is above the hard limit "
                     f"{limit:.2f} GB: every change that does not reduce it will be discarded")

    def record_control(self, pending: Pending, result: RunResult) -> None:
        """A control run of the best: a `keep` row of kind `control`, which joins the best's runs and
        the noise estimate (docs/decisions.md)."""
        before = self.sigma()
        self.record([self.row(result, pending, "keep", "control", "control", "re-measures the best and the noise",
                              nodes=self.complexity_of(pending.parent))])
        best = self.commit_runs(pending.parent)
        self.log(f"control: val_bpb {result.val_bpb:.6f}; the best {best.mean:.6f} over {len(best.val_bpb)} runs, "
                 f"noise sigma {before:.6f} -> {self.sigma():.6f}")
        warning = self.noise_warning()
        if warning:
            self.log(f"warning: {warning}")

    def record_audit(self, pending: Pending, result: RunResult) -> None:
        """An audit run of a kept commit (audit.py): a `keep` row of kind `audit` with the commit it
        re-measured, which joins that commit's runs and the noise estimate like a control run."""
        commit = pending.parent[:7]
        self.record([self.row(result, pending, "keep", AUDIT, AUDIT,
                              f"re-measures {commit} (`autoresearch audit`): does its gain reproduce?",
                              nodes=self.complexity_of(pending.parent))])
        recorded = [r.val_bpb for r in self.kept_rows(pending.parent) if r.kind != AUDIT]
        before = f" (recorded {statistics.fmean(recorded):.6f} over {len(recorded)} runs)" if recorded else ""
        self.log(f"audit: {commit} val_bpb {result.val_bpb:.6f}{before}")

    def kept_changes(self) -> list[audit.Change]:
        """The kept changes that lead to the best (HEAD), oldest first (audit.kept_changes)."""
        head = self.ws.git.head()
        return audit.kept_changes(self.measured(), lambda commit: self.ws.git.is_ancestor(commit, head))

    def audit_report(self, changes: list[audit.Change] | None = None) -> audit.Report:
        """What the audit runs in the ledger say of each kept change (audit.py)."""
        changes = self.kept_changes() if changes is None else changes
        rows, sigma = self.measured(), self.sigma()
        return audit.Report(self.ws.git.branch(), sigma, self.settings.keep_z,
                            tuple(audit.judge(c, rows, sigma, self.settings.keep_z) for c in changes),
                            tuple(audit.measured(changes, rows)))

    def experiments_since_control(self) -> int:
        """Experiments decided since the last baseline, control or audit run."""
        count = 0
        for row in reversed(self.ledger.rows):
            if row.kind in (*BASELINE_KINDS, *REMEASURES):
                break
            count += row.kind == "experiment"
        return count

    def record_failed_baseline(self, pending: Pending, result: RunResult) -> None:
        """A baseline run that did not finish well: its row (nothing can be compared with it)."""
        self.record([self.row(result, pending, result.outcome, pending.kind, result.outcome, result.error,
                              nodes=self.complexity_of(pending.parent))])

    # --- judging a candidate --------------------------------------------------------------------

    def judge(self, pending: Pending, results: list[RunResult]) -> list[Row] | None:
        """The candidate's ledger rows once its runs decide it; None while it needs another run."""
        if not results:
            return None
        best = self.commit_runs(pending.parent)
        nodes = self.complexity_of(pending.candidate)
        last = results[-1]
        if last.outcome != "ok":
            return [self.row(r, pending, r.outcome if r is last else "discard",
                             "experiment" if i == 0 else "confirm", last.outcome, last.error, best=best, nodes=nodes)
                    for i, r in enumerate(results)]
        candidate = Runs([r.val_bpb for r in results], nodes, [r.memory_gb for r in results if r.memory_gb])
        decision = decide(candidate, best, self.sigma(candidate.val_bpb), self.settings, self.memory_limit_gb)
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
        return [self.row(r, pending, status, "experiment" if i == 0 else "confirm", rule, reason, decision, best,
                         nodes) for i, r in enumerate(results)]

    # --- proposals that never ran ---------------------------------------------------------------

    def guard_refusal(self, proposal: Proposal, proposer: str, parent: str, flags: str = "") -> Row | None:
        """The guard on a proposal in the working tree: it must change train.py and nothing else.
        None when it passes; the `invalid` row it gets when it changed other files (not recorded:
        the loop reverts the tree, then records it). ProposerError when it changed nothing."""
        changed = self.ws.git.changed_since(parent)
        if not changed:
            raise ProposerError("the proposal left train.py unchanged")
        if set(changed) == {TRAIN_FILE}:
            return None
        others = sorted(set(changed) - {TRAIN_FILE})
        nodes = complexity.measure(self.ws.train_py.read_text(errors="replace")) if self.ws.train_py.exists() \
            else None
        return self.refused_edit_row(proposal, proposer, parent, others, nodes, flags=flags)

    def refused_edit_row(self, proposal: Proposal, proposer: str, parent: str, others: list[str],
                         nodes: int | None = None, stashed: bool = False, flags: str = "") -> Row:
        """The `invalid` row of a change that touched `others` besides train.py."""
        before = self.complexity_of(parent)
        undone = "set aside as `git stash` stash@{0}" if stashed else "reverted"
        return Row(commit=parent, val_bpb=None, memory_gb=None, status="invalid", description=proposal.description,
                   kind="experiment", parent=parent[:7], proposer=proposer, timestamp=now(), complexity=nodes,
                   complexity_delta=nodes - before if nodes is not None and before is not None else None,
                   rule="guard", reason=f"changed files other than train.py: {', '.join(others)} ({undone})", flags=flags,
                   fingerprint=self.fingerprint, cost_usd=proposal.cost_usd or None, tokens=proposal.tokens or None)

    def failed_proposal_row(self, error: ProposerError, proposer: str, parent: str, stamp: str, flags: str) -> Row:
        """A proposal that never became a run: an `invalid` row with what it cost."""
        message = " ".join(str(error).split())
        return Row(
            commit=parent, val_bpb=None, memory_gb=None, status="invalid",
            description=error.description or f"proposal by {proposer}", kind="experiment", parent=parent[:7],
            proposer=proposer,
            timestamp=stamp, rule="proposal-failed", reason=message[:300], flags=flags, fingerprint=self.fingerprint,
            cost_usd=error.cost_usd or None, tokens=error.tokens or None,
        )

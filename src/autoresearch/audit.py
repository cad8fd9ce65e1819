"""The reproduction audit: do the kept changes' gains reproduce when their commits run again?

A kept change was judged on a few runs against its parent's; the gain it recorded is, among all
the changes tried, the one that happened to clear the bar, so it is biased upward and some
"wins" are noise. `autoresearch audit` runs the commits of the current line of research (the
baseline and each kept change) again, `--runs` times each, in rounds (all commits once, then
again) so that a drift of the machine touches every commit alike, through the loop's own runs
(kind `audit` in the ledger, status `keep`: the commit is kept; they join its runs and the noise
estimate like control runs). This module turns the ledger into the audit's verdicts; it runs nothing.

Per kept change, from the audit runs alone (n of the change, m of its parent) and the pooled
sigma (every repeated run, the audit's included):

    gain (re-measured) = mean(parent's audit runs) - mean(change's audit runs)
    se                 = sigma * sqrt(1/n + 1/m)
    se (recorded)      = sigma * sqrt(1/n_c + 1/n_b)   the runs its decision had
    se (difference)    = sqrt(se^2 + se_recorded^2)

A change kept for its gain (rule `gain`), with z = keep_z:
- `reproduces`: the re-measured gain is clear of the noise (>= z se) and not clearly below the
  recorded one (recorded - gain <= z se_difference);
- `smaller`: clear of the noise, but clearly below the recorded gain;
- `does not reproduce`: within the noise (or worse) and clearly below the recorded gain, or
  clearly worse than its parent (<= -z se);
- `unclear`: within the noise, but not clearly below the recorded gain: more runs tell.
A simplification (rule `simplification`) claimed only that it is not clearly worse: it
`reproduces` unless its re-measured gain is below -z se (`does not reproduce`).
A change whose commit or parent has no audit run yet is `not measured`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from autoresearch.ledger import Row

AUDIT = "audit"  # the ledger kind of an audit run
VERDICTS = ("reproduces", "smaller", "does not reproduce", "unclear", "not measured")


@dataclass(frozen=True)
class Change:
    """A kept change of the current line of research, as the ledger recorded it."""

    commit: str  # 7 characters, as in the ledger
    parent: str
    description: str
    rule: str  # gain | simplification
    recorded_gain: float | None  # mean gain of its runs over its parent's mean at the decision
    runs: int  # the runs its decision had
    parent_runs: int  # the parent's runs it was compared with


@dataclass(frozen=True)
class Verdict:
    """What the audit runs say of one kept change."""

    change: Change
    verdict: str  # one of VERDICTS
    why: str
    gain: float | None = None  # re-measured gain (bpb, positive = better)
    se: float | None = None  # its standard error
    recorded_se: float | None = None
    runs: int = 0  # audit runs of the change
    parent_runs: int = 0  # audit runs of its parent


@dataclass(frozen=True)
class Measured:
    """A commit the audit runs: its val_bpb as recorded before and as the audit measured it."""

    commit: str
    role: str  # baseline (measured, never judged) | kept
    description: str
    recorded: tuple[float, ...]  # its runs other than the audit's
    audited: tuple[float, ...]


def kept_changes(rows: Sequence[Row], on_branch: Callable[[str], bool]) -> list[Change]:
    """The kept changes whose commits lead to the best (`on_branch`: an ancestor of HEAD, or HEAD),
    oldest first. `rows`: the measured rows under one fingerprint and parallelism, in ledger order."""
    out = []
    for i, row in enumerate(rows):
        if row.kind != "experiment" or row.status != "keep" or not row.parent or not on_branch(row.commit):
            continue
        own = [r for r in rows if r.commit == row.commit and r.kind in ("experiment", "confirm") and r.status == "keep"]
        gains = [r.gain for r in own if r.gain is not None]
        before = [r for r in rows[:i] if r.commit == row.parent and r.status == "keep"]
        out.append(Change(row.commit, row.parent, row.description, row.rule,
                          statistics.fmean(gains) if gains else None, len(own), len(before)))
    return out


def commits(changes: Sequence[Change]) -> list[str]:
    """What the audit runs, in order: each change's parent (the first: the baseline), then the change."""
    out: list[str] = []
    for change in changes:
        for commit in (change.parent, change.commit):
            if commit not in out:
                out.append(commit)
    return out


def audited(rows: Sequence[Row], commit: str) -> list[float]:
    return [r.val_bpb for r in rows if r.kind == AUDIT and r.commit == commit and r.val_bpb is not None
            and r.status == "keep"]


def measured(changes: Sequence[Change], rows: Sequence[Row]) -> list[Measured]:
    """The commits the audit runs, each with its recorded and its audit runs."""
    described = {c.commit: c.description for c in changes}
    out = []
    for commit in commits(changes):
        recorded = tuple(r.val_bpb for r in rows if r.commit == commit and r.kind != AUDIT and r.status == "keep"
                         and r.val_bpb is not None)
        kept = commit in described
        out.append(Measured(commit, "kept" if kept else "baseline", described.get(commit, "the baseline"),
                            recorded, tuple(audited(rows, commit))))
    return out


def judge(change: Change, rows: Sequence[Row], sigma: float, keep_z: float) -> Verdict:
    """The verdict on one kept change from the audit runs in `rows` (the module's docstring)."""
    mine, theirs = audited(rows, change.commit), audited(rows, change.parent)
    if not mine or not theirs:
        missing = change.commit if not mine else change.parent
        return Verdict(change, "not measured", f"no audit run of {missing} yet: `autoresearch audit` runs it",
                       runs=len(mine), parent_runs=len(theirs))
    gain = statistics.fmean(theirs) - statistics.fmean(mine)
    se = sigma * math.sqrt(1 / len(mine) + 1 / len(theirs))
    recorded_se = sigma * math.sqrt(1 / max(1, change.runs) + 1 / max(1, change.parent_runs))
    found = dict(gain=gain, se=se, recorded_se=recorded_se, runs=len(mine), parent_runs=len(theirs))
    clear, worse = keep_z * se, -keep_z * se
    if change.rule == "simplification":
        if gain < worse:
            return Verdict(change, "does not reproduce", f"the simplification is clearly worse than its parent: gain "
                           f"{gain:+.4f} < {worse:+.4f} (= -{keep_z:g} x se {se:.4f})", **found)
        return Verdict(change, "reproduces", f"the simplification is not clearly worse: gain {gain:+.4f} >= "
                       f"{worse:+.4f} (= -{keep_z:g} x se {se:.4f})", **found)
    recorded = change.recorded_gain if change.recorded_gain is not None else 0.0
    spread = keep_z * math.hypot(se, recorded_se)
    below = recorded - gain > spread
    noise = f"{keep_z:g} x se {se:.4f}"
    if gain >= clear and not below:
        return Verdict(change, "reproduces", f"gain {gain:+.4f} is clear of the noise (>= {clear:.4f} = {noise}) and "
                       f"not clearly below the recorded {recorded:+.4f}", **found)
    if gain >= clear:
        return Verdict(change, "smaller", f"gain {gain:+.4f} is clear of the noise (>= {clear:.4f}) but below the "
                       f"recorded {recorded:+.4f} by more than {spread:.4f}", **found)
    if gain <= worse:
        return Verdict(change, "does not reproduce", f"clearly worse than its parent: gain {gain:+.4f} <= "
                       f"{worse:+.4f} (= -{noise}); recorded {recorded:+.4f}", **found)
    if below:
        return Verdict(change, "does not reproduce", f"gain {gain:+.4f} is within the noise (needs {clear:.4f} = "
                       f"{noise}) and below the recorded {recorded:+.4f} by more than {spread:.4f}", **found)
    return Verdict(change, "unclear", f"gain {gain:+.4f} is within the noise (needs {clear:.4f} = {noise}) but not "
                   f"clearly below the recorded {recorded:+.4f}: more runs tell (`autoresearch audit --runs N`)",
                   **found)


@dataclass(frozen=True)
class Report:
    """The audit of a line of research: every kept change's verdict and the commits measured."""

    branch: str
    sigma: float
    keep_z: float
    verdicts: tuple[Verdict, ...]
    commits: tuple[Measured, ...]

    @property
    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICTS}
        for verdict in self.verdicts:
            out[verdict.verdict] += 1
        return {k: n for k, n in out.items() if n}

    def as_dict(self) -> dict:
        """The `audit --json` document (docs/json.md)."""
        def change(v: Verdict) -> dict:
            c = v.change
            return {"commit": c.commit, "parent": c.parent, "description": c.description, "rule": c.rule,
                    "recorded_gain": c.recorded_gain, "recorded_runs": c.runs, "recorded_parent_runs": c.parent_runs,
                    "recorded_se": v.recorded_se, "gain": v.gain, "se": v.se, "runs": v.runs,
                    "parent_runs": v.parent_runs, "verdict": v.verdict, "why": v.why}

        def commit(m: Measured) -> dict:
            d = asdict(m)
            d["recorded"] = statistics.fmean(m.recorded) if m.recorded else None
            d["audited"] = statistics.fmean(m.audited) if m.audited else None
            d["recorded_runs"], d["audit_runs"] = len(m.recorded), len(m.audited)
            return d

        return {"schema_version": 1, "branch": self.branch, "sigma": self.sigma, "keep_z": self.keep_z,
                "counts": self.counts, "changes": [change(v) for v in self.verdicts],
                "commits": [commit(m) for m in self.commits]}

    def lines(self) -> list[str]:
        """The audit for a person: a line of context, a table of the kept changes, the baseline."""
        if not self.verdicts:
            return [f"nothing to audit: no change was kept on {self.branch} yet"]
        runs = {m.commit: len(m.audited) for m in self.commits}
        per = sorted(set(runs.values()))
        each = f"{per[0]}" if len(per) == 1 else f"{per[0]}-{per[-1]}"
        out = [f"audit of {len(self.verdicts)} kept change(s) on {self.branch}: {each} audit run(s) of each of "
               f"{len(runs)} commits; noise sigma {self.sigma:.6f} (pooled over repeated runs, the audit's included)"]
        rows = [("commit", "recorded", "re-measured", f"{self.keep_z:g} x se", "verdict", "change")]
        for v in self.verdicts:
            rows.append((v.change.commit, _signed(v.change.recorded_gain), _signed(v.gain),
                         f"{self.keep_z * v.se:.4f}" if v.se is not None else "-", v.verdict, v.change.description))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        out += ["  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]
        base = next((m for m in self.commits if m.role == "baseline"), None)
        if base is not None and base.audited:
            recorded = f"{statistics.fmean(base.recorded):.6f} ({len(base.recorded)} runs)" if base.recorded else "-"
            out.append(f"baseline {base.commit}: val_bpb recorded {recorded}, re-measured "
                       f"{statistics.fmean(base.audited):.6f} ({len(base.audited)} runs)")
        for v in self.verdicts:
            if v.verdict != "reproduces":
                out.append(f"{v.change.commit} {v.verdict}: {v.why}")
        return out


def _signed(value: float | None) -> str:
    return f"{value:+.4f}" if value is not None else "-"

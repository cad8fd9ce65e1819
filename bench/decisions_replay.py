"""Decision rules replayed on measured runs: how often each keeps what it should (bench/decisions.py).

No training here: pure functions over runs already measured. A catalog of changes was run R times
each, with the baseline, quiet and under a load. Each change gets a label from its quiet runs
(`labels`: better, worse or no-difference by a strict test; unclear when the runs cannot say).
Each rule is then replayed many times on resampled runs (`replay`): a trial hands each variant's
runs out in a random order, one at a time, as the loop would get them, and the rule asks for as
many as it needs. Scored against the labels:
- false-keep rate: the share of decisions on worse or no-difference changes that kept them;
- missed-gain rate: the share of decisions on better changes that discarded them;
- runs per decision: runs of the change the rule spent (the baseline's runs are made once per
  best and shared by every decision against it, so they are not counted).

The rules:
- `ours`: decide.py as the loop applies it in a fresh workspace: `baseline_runs` runs of the best
  (sigma pooled from them and, from its second run, the change's own; floored at min_noise), the
  change's complexity and peak-memory prices, confirmation runs while the rule says `confirm` (a
  gain is kept on `keep_runs` runs), disturbed runs set aside and run again
  (disturbed_retries per run) as research.disturbance says: on the wall clock a contention above
  max_interference; on either clock steps per second more than max_slowdown below the earlier
  runs of the same variant in the decision; and the held-out check after a keep (no control
  runs: they come every 10 experiments);
- `reference`: one run of the change kept when it beats the best, itself one run;
- `bootstrap`: 3 runs of each, kept when P(better) >= 0.95 over every bootstrap resample.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import json
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoresearch.decide import Runs, decide, pooled_sigma
from autoresearch.settings import Settings

LABEL_Z = 3.0  # standard errors of the difference a change must be from the baseline to be better or worse
NULL_Z = 2.0  # and within which it is no different; in between it is unclear, and scores no rule
LABELS = ("better", "worse", "no-difference", "unclear")
BOOTSTRAP_RUNS = 3
BOOTSTRAP_P = 0.95


@dataclass(frozen=True)
class Run:
    """One measured run: what a rule may read of it."""

    val_bpb: float
    heldout_bpb: float | None = None
    memory_gb: float | None = None
    contention: float | None = None  # interference.py: the share of the run's demand others competed for
    speed: float | None = None  # optimizer steps per training second (research.slowdown's measure)


@dataclass(frozen=True)
class Variant:
    """The baseline or one change of the catalog, with its runs."""

    name: str
    kind: str  # baseline | gain | loss | null | near-null
    complexity: int | None  # syntax-tree nodes of its train.py
    quiet: tuple[Run, ...]
    loaded: tuple[Run, ...] = ()

    def runs(self, condition: str) -> tuple[Run, ...]:
        return self.quiet if condition == "quiet" else self.loaded


@dataclass(frozen=True)
class Label:
    """What a change is, measured on the quiet runs."""

    label: str  # better | worse | no-difference | unclear
    gain: float  # mean(baseline) - mean(change): positive is better
    se: float  # standard error of the gain

    @property
    def z(self) -> float:
        return self.gain / self.se if self.se > 0 else math.inf * (1 if self.gain > 0 else -1)


def label(base: Sequence[float], change: Sequence[float], sigma_floor: float = 0.0, z: float = LABEL_Z,
          null_z: float = NULL_Z) -> Label:
    """Better or worse when the gain is more than `z` standard errors from 0, no-difference within
    `null_z` of it, unclear in between: the runs cannot say which, so no rule is scored on it (a
    real gain the runs could not resolve does not count as a false keep). A change with no effect
    is unclear 4.5% of the time.

    The standard error is Welch's, each side's standard deviation at least `sigma_floor` (the noise
    pooled over every variant), so that two groups that agree by luck cannot make a small gain
    look certain."""
    if len(base) < 2 or len(change) < 2:
        raise ValueError(f"a label needs at least 2 runs on each side, got {len(base)} and {len(change)}")
    sd_b = max(statistics.stdev(base), sigma_floor)
    sd_c = max(statistics.stdev(change), sigma_floor)
    se = math.sqrt(sd_b**2 / len(base) + sd_c**2 / len(change))
    gain = statistics.fmean(base) - statistics.fmean(change)
    if gain > z * se:
        verdict = "better"
    elif gain < -z * se:
        verdict = "worse"
    else:
        verdict = "no-difference" if abs(gain) <= null_z * se else "unclear"
    return Label(verdict, gain, se)


def labels(baseline: Variant, changes: Sequence[Variant], z: float = LABEL_Z) -> dict[str, Label]:
    """Every change's label from the quiet runs."""
    groups = [[r.val_bpb for r in v.quiet] for v in (baseline, *changes) if len(v.quiet) > 1]
    dof = sum(len(g) - 1 for g in groups)
    ss = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups)
    floor = math.sqrt(ss / dof) if dof else 0.0  # the plain pooled sd: no run is left out of the truth
    base = [r.val_bpb for r in baseline.quiet]
    return {c.name: label(base, [r.val_bpb for r in c.quiet], floor, z) for c in changes}


def heldout_ratio(runs: Sequence[Run]) -> float | None:
    """Mean held-out/val bpb ratio of runs (the held-out check's measure, docs/integrity.md)."""
    ratios = [r.heldout_bpb / r.val_bpb for r in runs if r.heldout_bpb]
    return statistics.fmean(ratios) if ratios else None


def heldout_flagged(base: Sequence[Run], change: Sequence[Run], tolerance: float) -> bool:
    """Whether the held-out check would turn a keep of these runs `invalid` (research.py)."""
    base_ratio, ratio = heldout_ratio(base), heldout_ratio(change)
    return base_ratio is not None and ratio is not None and ratio / base_ratio - 1 > tolerance


class Draws:
    """One variant's runs in a random order, handed out one at a time as the loop would get them.

    Past the last, a run is drawn again at random (`reused` counts those): one of the runs the rule
    set aside as disturbed and has not used, standing for the re-run it asked for; else any run.
    So a decision uses no run twice while it has unused ones."""

    def __init__(self, runs: Sequence[Run], rng: random.Random) -> None:
        if not runs:
            raise ValueError("no runs to draw from")
        self.runs = list(runs)
        self.order = rng.sample(self.runs, len(self.runs))
        self.rng = rng
        self.taken = 0
        self.reused = 0
        self.aside: list[Run] = []

    def next(self) -> Run:
        self.taken += 1
        if self.taken <= len(self.order):
            return self.order[self.taken - 1]
        self.reused += 1
        if self.aside:
            return self.aside.pop(self.rng.randrange(len(self.aside)))
        return self.rng.choice(self.runs)

    def set_aside(self, run: Run) -> None:
        """The rule did not use `run` (disturbed): it may stand for a re-run once the others are out."""
        self.aside.append(run)


@dataclass(frozen=True)
class Outcome:
    """One replayed decision."""

    kept: bool
    runs: int  # runs of the change it spent
    why: str  # what decided it
    baseline_runs: int = 0  # runs of the best it needed (disturbed re-runs included)


@dataclass(frozen=True)
class Pair:
    """What a rule decides on: the best's runs and the change's, with their complexities."""

    base: Draws
    change: Draws
    base_nodes: int | None
    change_nodes: int | None


def disturbed(run: Run, earlier: Sequence[Run], settings: Settings, level: float = 0.0) -> bool:
    """Whether the loop sets the run aside (research.disturbance): on the wall clock, contention
    above max_interference, counted above `level` (0: the loop's rule; the best's own level:
    `ours_relative`); on the cpu clock others' CPU use does not shorten training, so contention
    does not count there. On either clock: steps per second more than max_slowdown below the
    median of `earlier` runs of the same variant."""
    if settings.clock == "wall" and run.contention is not None and run.contention - level > settings.max_interference:
        return True
    speeds = [r.speed for r in earlier if r.speed]
    return bool(run.speed and speeds and 1 - run.speed / statistics.median(speeds) > settings.max_slowdown)


def _undisturbed(draws: Draws, need: int, settings: Settings) -> tuple[list[Run], int]:
    """`need` runs as the loop measures the baseline: disturbed ones set aside and run again,
    disturbed_retries per run at most (then used as they are). Returns them and the runs spent."""
    kept: list[Run] = []
    spent = set_aside = 0
    while len(kept) < need:
        run = draws.next()
        spent += 1
        if disturbed(run, kept, settings) and set_aside < settings.disturbed_retries * need:
            set_aside += 1
            draws.set_aside(run)
            continue
        kept.append(run)
    return kept, spent


def _commit(runs: Sequence[Run], nodes: int | None) -> Runs:
    return Runs([r.val_bpb for r in runs], nodes, [r.memory_gb for r in runs if r.memory_gb])


@functools.cache
def t_quantile(p: float, dof: int) -> float:
    """The p-quantile (p > 0.5) of Student's t with `dof` degrees of freedom: bisection on its CDF,
    the density integrated by Simpson's rule (no scipy in the project)."""
    log_c = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def cdf(t: float, steps: int = 400) -> float:
        h = t / steps
        f = [math.exp(log_c - (dof + 1) / 2 * math.log1p((i * h) ** 2 / dof)) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 100.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def _normal_cdf(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def with_t_thresholds(settings: Settings, dof: int) -> Settings:
    """keep_z and confirm_z moved to the same tail probability of Student's t with the noise
    estimate's degrees of freedom: a sigma from three runs is itself uncertain."""
    return replace(settings, keep_z=t_quantile(_normal_cdf(settings.keep_z), dof),
                   confirm_z=t_quantile(_normal_cdf(settings.confirm_z), dof))


def ours(pair: Pair, settings: Settings, relative: bool = False, t_thresholds: bool = False) -> Outcome:
    """The loop's keep rule (decide.py) with its confirmation runs, prices, disturbed re-runs and
    the held-out check, in a workspace whose only measured commit is the best.

    `relative`: a run of the change is disturbed only when its contention is max_interference
    above the median of the best's runs (a like-for-like comparison is not re-run).
    `t_thresholds`: keep_z and confirm_z as Student's t quantiles for sigma's degrees of freedom."""
    best_runs, base_spent = _undisturbed(pair.base, settings.baseline_runs, settings)
    if t_thresholds:
        settings = with_t_thresholds(settings, len(best_runs) - 1)
    sigma = pooled_sigma([[r.val_bpb for r in best_runs]], settings.min_noise)
    best = _commit(best_runs, pair.base_nodes)
    levels = [r.contention for r in best_runs if r.contention is not None]
    level = statistics.median(levels) if relative and levels else 0.0
    taken: list[Run] = []
    spent = set_aside = 0
    while True:
        run = pair.change.next()
        spent += 1
        # the loop's slots: each run the change needs may be run again disturbed_retries times
        if disturbed(run, taken, settings, level) and set_aside < settings.disturbed_retries * (len(taken) + 1):
            set_aside += 1
            pair.change.set_aside(run)
            continue
        taken.append(run)
        # the loop pools the candidate's own spread into the noise once it has two runs (research.sigma)
        if len(taken) > 1:
            sigma = pooled_sigma([[r.val_bpb for r in best_runs], [r.val_bpb for r in taken]], settings.min_noise)
        decision = decide(_commit(taken, pair.change_nodes), best, sigma, settings)
        if decision.verdict == "confirm":
            continue
        if decision.verdict == "keep" and heldout_flagged(best_runs, taken, settings.heldout_tolerance):
            return Outcome(False, spent, "held-out", base_spent)
        return Outcome(decision.verdict == "keep", spent, decision.rule, base_spent)


def reference(pair: Pair, settings: Settings) -> Outcome:
    """The reference's rule: one run, kept when its val_bpb is below the best's (one run too)."""
    best, run = pair.base.next(), pair.change.next()
    return Outcome(run.val_bpb < best.val_bpb, 1, "beats the best" if run.val_bpb < best.val_bpb else "not below",
                   1)


def p_better(base: Sequence[float], change: Sequence[float]) -> float:
    """P(mean of change < mean of base) over every bootstrap resample of each (exact; ties count
    half): n^n resamples a side, so meant for a few runs."""
    base_means = sorted(statistics.fmean(s) for s in itertools.product(base, repeat=len(base)))
    change_means = [statistics.fmean(s) for s in itertools.product(change, repeat=len(change))]
    wins = 0.0
    for m in change_means:
        below, at_or_below = bisect.bisect_right(base_means, m), bisect.bisect_left(base_means, m)
        # base means above m: the change is better; equal: half
        wins += len(base_means) - below + 0.5 * (below - at_or_below)
    return wins / (len(base_means) * len(change_means))


def bootstrap(pair: Pair, settings: Settings) -> Outcome:
    """BOOTSTRAP_RUNS runs of each, kept when P(better) >= BOOTSTRAP_P."""
    base = [pair.base.next().val_bpb for _ in range(BOOTSTRAP_RUNS)]
    change = [pair.change.next().val_bpb for _ in range(BOOTSTRAP_RUNS)]
    p = p_better(base, change)
    return Outcome(p >= BOOTSTRAP_P, BOOTSTRAP_RUNS, f"P(better) {p:.3f}", BOOTSTRAP_RUNS)


def ours_relative(pair: Pair, settings: Settings) -> Outcome:
    return ours(pair, settings, relative=True)


def ours_t(pair: Pair, settings: Settings) -> Outcome:
    return ours(pair, settings, t_thresholds=True)


Rule = Callable[[Pair, Settings], Outcome]
RULES: dict[str, Rule] = {"ours": ours, "reference": reference, "bootstrap": bootstrap}
# Variants of ours measured beside it (bench/decisions.py --extra), not the loop's rule.
EXTRA_RULES: dict[str, Rule] = {"ours-relative": ours_relative, "ours-t": ours_t}


@dataclass
class Score:
    """One rule's decisions on one condition, counted against the labels."""

    decisions: int = 0
    runs: int = 0
    baseline_runs: int = 0
    should_not_keep: int = 0  # decisions on worse or no-difference changes
    false_keeps: int = 0
    should_keep: int = 0  # decisions on better changes
    missed_gains: int = 0
    reused: int = 0  # runs drawn again because a variant's runs ran out
    per_change: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> keep_rate, runs

    @property
    def false_keep_rate(self) -> float | None:
        return self.false_keeps / self.should_not_keep if self.should_not_keep else None

    @property
    def missed_gain_rate(self) -> float | None:
        return self.missed_gains / self.should_keep if self.should_keep else None

    @property
    def runs_per_decision(self) -> float | None:
        return self.runs / self.decisions if self.decisions else None

    def line(self, name: str) -> str:
        """`rule=NAME false_keep_rate=X missed_gain_rate=Y runs_per_decision=Z` (n/a: no such change)."""
        return (f"rule={name} false_keep_rate={_fmt(self.false_keep_rate, 3)} "
                f"missed_gain_rate={_fmt(self.missed_gain_rate, 3)} runs_per_decision={_fmt(self.runs_per_decision, 2)}")

    def as_dict(self) -> dict:
        return {"false_keep_rate": self.false_keep_rate, "missed_gain_rate": self.missed_gain_rate,
                "runs_per_decision": self.runs_per_decision, "decisions": self.decisions,
                "baseline_runs_per_decision": self.baseline_runs / self.decisions if self.decisions else None,
                "reused_runs": self.reused, "per_change": self.per_change}


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def replay(baseline: Variant, changes: Sequence[Variant], truth: dict[str, Label], settings: Settings,
           condition: str = "quiet", trials: int = 1000, seed: int = 0,
           rules: dict[str, Rule] | None = None) -> dict[str, Score]:
    """Each rule decided `trials` times on each change, on resampled runs of `condition`.

    Every rule sees the same random orders of runs in a trial (common random numbers), so their
    differences are the rules', not the draws'. Each change weighs the same; unclear ones count in
    the runs per decision only."""
    rules = rules or RULES
    scores = {name: Score() for name in rules}
    for change in changes:
        verdict = truth[change.name].label
        for name, rule in rules.items():
            score, kept, runs = scores[name], 0, 0
            for t in range(trials):
                rng = random.Random(f"{seed}:{condition}:{change.name}:{t}")
                pair = Pair(Draws(baseline.runs(condition), rng), Draws(change.runs(condition), rng),
                            baseline.complexity, change.complexity)
                outcome = rule(pair, settings)
                kept += outcome.kept
                runs += outcome.runs
                score.baseline_runs += outcome.baseline_runs
                score.reused += pair.base.reused + pair.change.reused
            score.decisions += trials
            score.runs += runs
            if verdict == "better":
                score.should_keep += trials
                score.missed_gains += trials - kept
            elif verdict != "unclear":
                score.should_not_keep += trials
                score.false_keeps += kept
            score.per_change[change.name] = {"keep_rate": kept / trials, "runs_per_decision": runs / trials}
    return scores


# --- the ground-truth file ---------------------------------------------------------------------

def run_from(record: dict) -> Run:
    steps, seconds = record.get("num_steps"), record.get("training_seconds")
    speed = steps / seconds if steps and seconds else None
    return Run(record["val_bpb"], record.get("heldout_bpb"), record.get("memory_gb"), record.get("contention"), speed)


def variants_of(doc: dict) -> tuple[Variant, list[Variant]]:
    """The baseline and the changes of a ground-truth document, with their finished runs."""
    variants = [Variant(v["name"], v["kind"], v.get("complexity"),
                        tuple(run_from(r) for r in v["quiet"] if r.get("val_bpb") is not None),
                        tuple(run_from(r) for r in v.get("loaded", []) if r.get("val_bpb") is not None))
                for v in doc["variants"]]
    base = next(v for v in variants if v.kind == "baseline")
    return base, [v for v in variants if v is not base]


def load(path: Path) -> tuple[dict, Variant, list[Variant]]:
    """A ground-truth file of bench/decisions.py: the document, its baseline and its changes."""
    doc = json.loads(Path(path).read_text())
    return (doc, *variants_of(doc))

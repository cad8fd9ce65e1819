"""The keep rule: what a careful researcher would keep, in numbers (docs/decisions.md).

Noise. The baseline is run `baseline_runs` times; the run-to-run standard deviation of val_bpb,
pooled over every commit that has been run more than once (baseline repeats, confirmation runs,
the candidate's own runs once it has two), is sigma, floored at `min_noise`. A candidate measured
n_c times against the best commit measured n_b times has gain = mean(best) - mean(candidate) and standard error se = sigma*sqrt(1/n_c + 1/n_b).

Prices, in val_bpb, subtracted from the gain:
- complexity: `complexity_cost` per 100 syntax-tree nodes that the change adds to train.py
  (complexity.py: comments, docstrings and formatting do not count; removing code costs nothing);
- memory: `memory_cost` per +100% of peak-memory growth over the best's beyond a free
  `memory_free` fraction.
net = gain - prices. In this order:
1. peak memory above the hard limit (`max_memory_gb`, 0 = the device's total): discard;
2. net >= keep_z*se: keep (a gain that pays for itself), once the candidate has `keep_runs` runs
   (at most 1 + confirm_runs); before that, confirm: a gain seen once must be seen again;
3. train.py at least `simplify_nodes` nodes smaller (a simplification):
   net >= -simplify_z*se: keep, as a simplification (not clearly worse);
   -keep_z*se <= net < -simplify_z*se: confirm (borderline); otherwise discard (worse);
4. confirm_z*se <= net < keep_z*se: confirm (borderline);
5. otherwise discard: `complexity` or `memory` when the gain alone was clear of the noise and its
   price sank it, `worse` when the gain is below -keep_z*se, `noise` in between.
"Confirm" runs the candidate again, up to `confirm_runs` more times; the mean of all its runs
then decides, and a borderline result with no confirmation runs left is discarded.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from autoresearch.complexity import UNIT
from autoresearch.settings import PRESETS, Settings

OUTLIER_Z = 5.0  # sigmas of the other runs from the rest of its group beyond which a run does not set the noise
OUTLIER_DOF = 4  # degrees of freedom the other runs need before any run is called wild
MAX_NOISE_SHARE = 0.02  # a sigma above this share of val_bpb is not run-to-run noise
QUIET_FACTOR = 10.0  # nor one above this many times the preset's quiet sigma

# Every rule that can decide, and what it means; the ledger's `rule` column holds the name.
RULES: dict[str, str] = {
    "gain": "kept: the gain less the complexity and memory prices is at least keep_z standard errors",
    "simplification": "kept: train.py is clearly smaller and the result is not clearly worse",
    "confirm": "borderline: the candidate is run again and the mean of its runs decides",
    "noise": "discarded: the gain (less its prices) is within the noise",
    "worse": "discarded: clearly worse than the best (or worse than a simplification may be)",
    "complexity": "discarded: a gain clear of the noise that does not pay for the code it adds",
    "memory": "discarded: a gain clear of the noise that does not pay for the memory it adds",
    "memory-limit": "discarded: peak memory above the hard limit",
    "disturbed": "not judged: other work on the machine disturbed the run (interference.py); it runs again",
    "control": "a control run of the best: re-measures the best and the noise",
    "audit": "an audit run of a kept commit (`autoresearch audit`): does its gain reproduce?",
}


@dataclass(frozen=True)
class Runs:
    """What the rule knows of one commit: its val_bpb runs, its complexity, its peak memory."""

    val_bpb: Sequence[float]
    complexity: int | None = None  # syntax-tree nodes of its train.py
    memory_gb: Sequence[float] = field(default_factory=tuple)  # peak memory of each run, where known

    @property
    def mean(self) -> float:
        return statistics.fmean(self.val_bpb)

    @property
    def mean_memory(self) -> float | None:
        return statistics.fmean(self.memory_gb) if self.memory_gb else None


@dataclass(frozen=True)
class Prices:
    """What a change costs in val_bpb, and the deltas that set the price."""

    complexity_delta: int | None  # nodes added (negative: removed); None when unknown
    complexity: float
    memory_growth: float | None  # candidate / best peak memory - 1; None when unknown
    memory_delta_gb: float | None
    memory: float

    @property
    def total(self) -> float:
        return self.complexity + self.memory


@dataclass(frozen=True)
class Decision:
    """A verdict with its reasons; the loop writes every field to the ledger."""

    verdict: str  # "keep" | "discard" | "confirm"
    rule: str  # the rule that decided (a key of RULES)
    reason: str  # why, in words with the numbers
    gain: float  # mean(best) - mean(candidate), positive = better
    sigma: float  # the noise used
    se: float  # the standard error of the gain
    threshold: float  # the gain that the deciding branch needed to keep
    prices: Prices
    runs: int  # candidate runs the decision used

    @property
    def net(self) -> float:
        return self.gain - self.prices.total

    @property
    def simplification(self) -> bool:
        return self.verdict == "keep" and self.rule == "simplification"


def pooled_sigma(groups: list[list[float]], floor: float) -> float:
    """Pooled standard deviation over groups of repeated measurements, at least `floor`.

    One wild run cannot set sigma once the other runs can tell it from a noisy machine: a run
    further than OUTLIER_Z standard deviations from the mean of the rest of its group, the standard
    deviation pooled from every other run with at least OUTLIER_DOF degrees of freedom, is left out.
    With fewer (three baseline runs: two left, one degree of freedom) nothing is left out: two runs
    that agree by luck would otherwise make the third look wild and the noise look tiny
    (bench/decisions.py measured exactly that; docs/decisions.md)."""
    groups = [list(g) for g in groups if len(g) > 1]
    wild = {(i, j) for i, g in enumerate(groups) for j in range(len(g)) if _is_wild(groups, i, j, floor)}
    kept = [[x for j, x in enumerate(g) if (i, j) not in wild] for i, g in enumerate(groups)]
    if wild and _dof(kept) > 0:
        groups = [g for g in kept if len(g) > 1]
    dof = _dof(groups)
    if dof == 0:
        return floor
    return max(floor, math.sqrt(_sum_of_squares(groups) / dof))


def _dof(groups: list[list[float]]) -> int:
    return sum(len(g) - 1 for g in groups if len(g) > 1)


def _sum_of_squares(groups: list[list[float]]) -> float:
    return sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups if len(g) > 1)


def _is_wild(groups: list[list[float]], i: int, j: int, floor: float) -> bool:
    """Whether run j of group i is further than OUTLIER_Z sigmas of the other runs from the rest of its group."""
    rest = [[x for k, x in enumerate(g) if (n, k) != (i, j)] for n, g in enumerate(groups)]
    dof = _dof(rest)
    if dof < OUTLIER_DOF:
        return False
    sigma = max(floor, math.sqrt(_sum_of_squares(rest) / dof))
    others = rest[i]
    # the spread of one run about the mean of the others: sigma * sqrt(1 + 1/n)
    return abs(groups[i][j] - statistics.fmean(others)) > OUTLIER_Z * sigma * math.sqrt(1 + 1 / len(others))


def implausible(sigma: float, best_bpb: float, settings: Settings) -> str:
    """Why a noise estimate cannot be this machine's quiet run-to-run noise, in one line; "" when
    it can be: above MAX_NOISE_SHARE of val_bpb, or QUIET_FACTOR times the preset's quiet sigma."""
    preset = PRESETS.get(settings.preset)
    quiet = preset.quiet_sigma if preset is not None else None
    share = sigma / best_bpb if best_bpb > 0 else 0.0
    if share <= MAX_NOISE_SHARE and (not quiet or sigma <= QUIET_FACTOR * quiet):
        return ""
    usual = f"; quiet machines measure about {quiet:g} at this preset" if quiet else ""
    return (f"noise sigma {sigma:.4f} bpb ({share:.1%} of val_bpb{usual}) is implausible: the runs that measured "
            "it were disturbed by other work on this machine (`autoresearch status` shows each run's "
            "interference); `autoresearch rebaseline` measures it again, best when the machine is quieter")


def standard_error(sigma: float, n_candidate: int, n_best: int) -> float:
    return sigma * math.sqrt(1 / n_candidate + 1 / n_best)


def prices(candidate: Runs, best: Runs, settings: Settings) -> Prices:
    """The complexity and memory prices of going from `best` to `candidate`."""
    delta = None
    if candidate.complexity is not None and best.complexity is not None:
        delta = candidate.complexity - best.complexity
    complexity_price = settings.complexity_cost * max(0, delta or 0) / 100
    growth = delta_gb = None
    cand_mem, best_mem = candidate.mean_memory, best.mean_memory
    if cand_mem is not None and best_mem is not None and best_mem > 0:
        growth, delta_gb = cand_mem / best_mem - 1, cand_mem - best_mem
    excess = (growth or 0.0) - settings.memory_free
    memory_price = settings.memory_cost * excess if excess > 1e-9 else 0.0  # (not float round-off at the limit)
    return Prices(delta, complexity_price, growth, delta_gb, memory_price)


def decide(candidate: Runs | Sequence[float], best: Runs | Sequence[float], sigma: float, settings: Settings,
           memory_limit_gb: float | None = None) -> Decision:
    """Keep, discard, or run the candidate again (the module docstring states the rule).

    `candidate` and `best` may be plain lists of val_bpb (no complexity or memory known: no prices).
    `memory_limit_gb` is the hard limit resolved by the caller (settings.max_memory_gb, or the
    device's total memory when that is 0); None checks no limit."""
    cand, base = _runs(candidate), _runs(best)
    n = len(cand.val_bpb)
    se = standard_error(sigma, n, len(base.val_bpb))
    case = _Case(base.mean - cand.mean, sigma, se, prices(cand, base, settings), n, settings)
    peak = max(cand.memory_gb) if cand.memory_gb else None
    if memory_limit_gb and peak is not None and peak > memory_limit_gb:
        return case.made("discard", "memory-limit", case.keep_at + case.prices.total,
                         f"peak memory {peak:.2f} GB is above the hard limit of {memory_limit_gb:.2f} GB")
    if case.net >= case.keep_at:
        if case.n < runs_to_keep(settings):
            return case.made("confirm", "confirm", case.keep_at + case.prices.total,
                             f"gain {case.gain:.4f} >= {case.need} on {case.runs}; a gain must show on "
                             f"{runs_to_keep(settings)} runs to be kept: confirming")
        return case.made("keep", "gain", case.keep_at + case.prices.total,
                         f"gain {case.gain:.4f} >= {case.need}{_simpler_text(case.prices)} ({case.runs})")
    if case.prices.complexity_delta is not None and case.prices.complexity_delta <= -settings.simplify_nodes:
        return _simplification(case)
    return _not_clear(case)


@dataclass(frozen=True)
class _Case:
    """One comparison under way: the numbers every branch of the rule reads."""

    gain: float
    sigma: float
    se: float
    prices: Prices
    n: int  # candidate runs
    settings: Settings

    @property
    def net(self) -> float:
        return self.gain - self.prices.total

    @property
    def keep_at(self) -> float:
        return self.settings.keep_z * self.se

    @property
    def can_confirm(self) -> bool:
        return self.n <= self.settings.confirm_runs

    @property
    def need(self) -> str:
        """'0.0053 (= 2 x se 0.0012 + 0.0030 for +300 nodes)': the gain needed to keep, and why."""
        return (f"{self.keep_at + self.prices.total:.4f} (= {self.settings.keep_z:g} x se {self.se:.4f}"
                f"{_priced(self.prices, self.settings)})")

    @property
    def runs(self) -> str:
        return f"{self.n} run{'s' if self.n > 1 else ''}"

    def made(self, verdict: str, rule: str, threshold: float, reason: str) -> Decision:
        return Decision(verdict, rule, reason, self.gain, self.sigma, self.se, threshold, self.prices, self.n)


def _simplification(case: _Case) -> Decision:
    """train.py got clearly smaller: kept unless clearly worse (it may lose up to simplify_z se,
    less any memory price); borderline losses get confirmation runs."""
    s, p, gain = case.settings, case.prices, case.gain
    floor = -s.simplify_z * case.se + p.memory
    memory = f" + {p.memory:.4f} for {100 * p.memory_growth:+.0f}% peak memory" if p.memory > 0 else ""
    allowed = f"{floor:+.4f} (= -{s.simplify_z:g} x se {case.se:.4f}{memory})"
    fewer = f"{-p.complexity_delta} {UNIT} fewer"
    if case.net >= -s.simplify_z * case.se:
        return case.made("keep", "simplification", floor,
                         f"simplification: {fewer} and not clearly worse: gain {gain:+.4f} >= {allowed} ({case.runs})")
    if case.net >= -case.keep_at and case.can_confirm:
        return case.made("confirm", "confirm", floor,
                         f"borderline simplification ({fewer}): gain {gain:+.4f} is between "
                         f"{-case.keep_at + p.memory:+.4f} and {floor:+.4f}: confirming")
    return case.made("discard", "worse", floor,
                     f"{fewer}, but worse than a simplification may be: gain {gain:+.4f} < {allowed} ({case.runs})")


def _not_clear(case: _Case) -> Decision:
    """No clear net gain and no simplification: borderline, sunk by its price, worse, or noise."""
    s, p, gain, threshold = case.settings, case.prices, case.gain, case.keep_at + case.prices.total
    if case.net >= s.confirm_z * case.se and case.can_confirm:
        less = f" less prices {p.total:.4f}" if p.total > 0 else ""
        return case.made("confirm", "confirm", threshold,
                         f"borderline: gain {gain:.4f}{less} is between {s.confirm_z:g} and {s.keep_z:g} x se "
                         f"{case.se:.4f}: confirming")
    if gain >= case.keep_at and p.total > 0:  # clear of the noise, sunk by its price
        if gain - p.memory >= case.keep_at:
            rule, what = "complexity", f"{p.complexity_delta:+d} {UNIT}"
        elif gain - p.complexity >= case.keep_at:
            rule, what = "memory", f"{100 * p.memory_growth:+.0f}% peak memory"
        else:
            rule, what = ("complexity" if p.complexity >= p.memory else "memory"), "its code and memory"
        return case.made("discard", rule, threshold,
                         f"gain {gain:.4f} is clear of the noise but does not pay for {what}: needs {case.need} "
                         f"({case.runs})")
    if gain <= -case.keep_at:
        return case.made("discard", "worse", threshold, f"worse than the best by {-gain:.4f} ({case.runs})")
    return case.made("discard", "noise", threshold,
                     f"gain {gain:+.4f} is within the noise: needs {case.need} ({case.runs})")


def _runs(value: Runs | Sequence[float]) -> Runs:
    return value if isinstance(value, Runs) else Runs(list(value))


def _priced(p: Prices, settings: Settings) -> str:
    """' + 0.0030 for +300 nodes + 0.0020 for +14% memory': the prices, where there are any."""
    parts = []
    if p.complexity > 0:
        parts.append(f" + {p.complexity:.4f} for {p.complexity_delta:+d} {UNIT}")
    if p.memory > 0:
        parts.append(f" + {p.memory:.4f} for {100 * p.memory_growth:+.0f}% peak memory "
                     f"(beyond the free {100 * settings.memory_free:.0f}%)")
    return "".join(parts)


def runs_to_keep(s: Settings) -> int:
    """Runs a candidate needs before a gain keeps it: keep_runs, at most 1 + confirm_runs."""
    return min(s.keep_runs, 1 + s.confirm_runs)


def _twice(s: Settings) -> str:
    """', on 2 runs: a gain seen once is run again' where keep_runs asks for more than one run."""
    runs = runs_to_keep(s)
    return f", on {runs} runs: a gain seen once is run again" if runs > 1 else ""


def _simpler_text(p: Prices) -> str:
    if p.complexity_delta is not None and p.complexity_delta < 0:
        return f", and {-p.complexity_delta} {UNIT} fewer"
    return ""


def rule_text(settings: Settings, sigma: float | None = None, best_runs: int | None = None) -> str:
    """The keep rule in words with this workspace's numbers: for program.md, LLM proposers, status.

    `sigma` is the measured noise (None before the baseline: the floor `min_noise` stands in);
    `best_runs` how often the best commit was measured (default: `baseline_runs`)."""
    s = settings
    n = best_runs or s.baseline_runs
    if sigma is None:
        sigma = s.min_noise
        where = (f"sigma is measured by {s.baseline_runs} baseline runs (floor {s.min_noise:g}; "
                 "the numbers below use the floor)")
    else:
        sigma = max(sigma, s.min_noise)
        where = f"sigma = {sigma:.4f} bpb, measured on this machine (pooled over repeated runs, floor {s.min_noise:g})"
    se = standard_error(sigma, 1, n)
    limit = f"{s.max_memory_gb:g} GB" if s.max_memory_gb > 0 else "the device's total memory"
    example = 200
    example_gain = s.keep_z * se + s.complexity_cost * example / 100
    return "\n".join([
        "The keep rule (the harness decides, not the proposer; docs/decisions.md):",
        f"- Noise: {where}. One run of a change against the best's {n} run{'s' if n > 1 else ''} has a "
        f"standard error se = sigma*sqrt(1 + 1/{n}) = {se:.4f} bpb.",
        f"- Gain = the best's mean val_bpb minus the change's. Prices are subtracted from it: "
        f"{s.complexity_cost:g} bpb for every 100 syntax-tree {UNIT} the change adds to train.py (about 12 "
        f"lines; comments, docstrings and formatting are free, removing code costs nothing), and "
        f"{s.memory_cost:g} bpb per +100% peak memory beyond a free {100 * s.memory_free:.0f}% growth over "
        "the best's.",
        f"- Kept when gain - prices >= {s.keep_z:g} se ({s.keep_z * se:.4f} bpb for one run){_twice(s)}. "
        f"Between {s.confirm_z:g} and {s.keep_z:g} se: up to {s.confirm_runs} confirmation run(s), and the mean "
        "of all runs decides.",
        f"- Kept as a simplification when train.py gets at least {s.simplify_nodes} {UNIT} smaller and the "
        f"result is not worse than the best by more than {s.simplify_z:g} se ({s.simplify_z * se:.4f} bpb for "
        f"one run; worse by up to {s.keep_z:g} se: confirmation runs): removing code and getting an equal "
        "result is a win.",
        f"- Discarded otherwise: within the noise, worse, or a gain that does not pay for its code or memory; "
        f"and any run whose peak memory exceeds {limit}.",
        f"- Example: a change adding {example} {UNIT} (~25 lines) must gain {example_gain:.4f} bpb in one run "
        f"to be{' run again and' if runs_to_keep(s) > 1 else ''} kept.",
    ])

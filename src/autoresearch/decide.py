"""The keep rule: a change is kept only when its gain is clear of this machine's noise.

Noise. The baseline is run `baseline_runs` times; the run-to-run standard deviation of val_bpb,
pooled over every commit that has been run more than once (baseline repeats, confirmation runs),
is sigma, floored at `min_noise`.

Comparison. A candidate measured n_c times against the best commit measured n_b times: the
gain is mean(best) - mean(candidate), and its standard error is se = sigma * sqrt(1/n_c + 1/n_b).
- gain >= keep_z * se: kept (a clear gain);
- confirm_z * se <= gain < keep_z * se: borderline: the candidate is run again, up to
  `confirm_runs` more times, and the mean of all its runs decides;
- otherwise: discarded (within the noise, or worse).
With the defaults (keep_z 2, confirm_z 1), an equal change is kept by luck in about 2% of tries.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from autoresearch.settings import Settings


@dataclass(frozen=True)
class Decision:
    verdict: str  # "keep" | "discard" | "confirm"
    gain: float
    sigma: float
    threshold: float  # the gain needed to keep
    rule: str  # the reason, in words


def pooled_sigma(groups: list[list[float]], floor: float) -> float:
    """Pooled standard deviation over groups of repeated measurements, at least `floor`."""
    dof = sum(len(g) - 1 for g in groups if len(g) > 1)
    if dof == 0:
        return floor
    ss = sum(sum((x - statistics.fmean(g)) ** 2 for x in g) for g in groups if len(g) > 1)
    return max(floor, math.sqrt(ss / dof))


def decide(candidate: list[float], best: list[float], sigma: float, settings: Settings) -> Decision:
    """Keep, discard, or run the candidate again (see the module docstring)."""
    gain = statistics.fmean(best) - statistics.fmean(candidate)
    se = sigma * math.sqrt(1 / len(candidate) + 1 / len(best))
    keep_at, confirm_at = settings.keep_z * se, settings.confirm_z * se
    runs = f"{len(candidate)} run{'s' if len(candidate) > 1 else ''}"
    if gain >= keep_at:
        return Decision("keep", gain, sigma, keep_at, f"clear gain {gain:.4f} >= {settings.keep_z:g} x se {se:.4f} ({runs})")
    if gain >= confirm_at and len(candidate) <= settings.confirm_runs:
        return Decision("confirm", gain, sigma, keep_at,
                        f"borderline gain {gain:.4f} (between {confirm_at:.4f} and {keep_at:.4f}): confirming")
    if gain > 0:
        return Decision("discard", gain, sigma, keep_at, f"gain {gain:.4f} within noise (< {keep_at:.4f}, {runs})")
    return Decision("discard", gain, sigma, keep_at, f"no gain ({gain:+.4f}, {runs})")

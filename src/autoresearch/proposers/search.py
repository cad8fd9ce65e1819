"""`search`: the built-in, offline proposer. Optuna over the hyperparameter block of train.py.

Each proposal changes one hyperparameter (sometimes two) of the current best train.py, the way a
researcher changes one thing at a time; Optuna's TPE sampler chooses the new value from the
history of every experiment so far (ask/tell), while the other values stay fixed at the best
commit's (a partially fixed sampler). Crashes and timeouts are told as bad results, so the
sampler learns to avoid what breaks.

The search space comes from the names and the values of the baseline (SPACE_RULES): learning
rates log-uniform within 4x, depth in integers, batch sizes in powers of two, window patterns
as categories. SEED is never searched: a seed change is noise, not research.
"""

from __future__ import annotations

import json
import math
import random
import re
import warnings
from collections import Counter
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from autoresearch import hparams
from autoresearch.errors import ProposerError
from autoresearch.ledger import Row
from autoresearch.proposers.base import Context, Proposal
from autoresearch.rundir import PROPOSAL_FILE

NOT_SEARCHED = {"SEED", "COMPILE", "DEVICE_BATCH_SIZE"}  # noise, plumbing, or a memory knob


def _powers_of_two(low: int, high: int) -> list[int]:
    out, p = [], 1
    while p <= high:
        if p >= low:
            out.append(p)
        p *= 2
    return out


def dimension(name: str, value: Any) -> BaseDistribution | None:
    """The search range of one hyperparameter, from its name and baseline value; None: fixed."""
    if name in NOT_SEARCHED or isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if name == "WINDOW_PATTERN":
            return CategoricalDistribution(sorted({"L", "SL", "SSL", "SSSL", value}))
        return None
    if not isinstance(value, (int, float)):
        return None
    if re.fullmatch(r"(.*_)?LR", name) and value > 0:
        return FloatDistribution(value / 4, value * 4, log=True)
    fixed_ranges = {
        "ADAM_BETA1": (0.6, 0.95),
        "ADAM_BETA2": (0.9, 0.999),
        "WARMUP_RATIO": (0.0, 0.3),
        "WARMDOWN_RATIO": (0.1, 0.9),
        "FINAL_LR_FRAC": (0.0, 0.3),
        "LOGIT_CAP": (5.0, 50.0),
    }
    if name in fixed_ranges:
        low, high = fixed_ranges[name]
        return FloatDistribution(min(low, value), max(high, value))
    if name == "WEIGHT_DECAY":
        return FloatDistribution(0.0, max(2 * value, 0.1))
    if name == "DEPTH":
        return IntDistribution(max(1, value - 3), value + 4)
    if name == "ASPECT_RATIO":
        return CategoricalDistribution(sorted({max(8, round(value * f)) for f in (0.5, 0.75, 1, 1.5, 2)}))
    if name == "HEAD_DIM":
        return CategoricalDistribution(sorted({32, 64, 128, int(value)}))
    if name.endswith("BATCH_SIZE") and isinstance(value, int) and value > 0 and value & (value - 1) == 0:
        return CategoricalDistribution(_powers_of_two(max(1, value // 8), value * 4))
    if name == "ROPE_BASE" and value > 0:
        return IntDistribution(max(100, int(value) // 10), int(value) * 100, log=True)
    if isinstance(value, float) and value > 0:
        return FloatDistribution(value / 4, value * 4, log=True)
    if isinstance(value, int) and value > 1:
        return IntDistribution(max(1, value // 2), value * 2)
    return None


def search_space(baseline: dict[str, Any]) -> dict[str, BaseDistribution]:
    space = {}
    for name, value in baseline.items():
        dist = dimension(name, value)
        if dist is not None:
            space[name] = dist
    return space


def _contains(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    try:
        return dist.low <= value <= dist.high  # type: ignore[attr-defined]
    except TypeError:
        return False


class SearchProposer:
    name = "search"

    def __init__(self, seed: int = 0) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.seed = seed
        self.study: optuna.Study | None = None
        self.base_sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=8)
        self.space: dict[str, BaseDistribution] = {}
        self.pending: dict[str, int] = {}  # description -> trial number
        self.tried: Counter[str] = Counter()

    # --- set-up from the research so far --------------------------------------------------

    def _start(self, ctx: Context) -> None:
        baseline_commit = ctx.ws.git.run("rev-list", "--max-parents=0", "HEAD").splitlines()[0]
        baseline_source = ctx.ws.git.show(baseline_commit, "train.py").decode()
        self.space = search_space({k: hp.value for k, hp in hparams.read_block(baseline_source).items()})
        if not self.space:
            raise ProposerError("train.py has no searchable hyperparameter block (NAME = literal lines)")
        self.study = optuna.create_study(direction="minimize", sampler=self.base_sampler)
        for values, value in self._history(ctx):
            params = {k: v for k, v in values.items() if k in self.space and _contains(self.space[k], v)}
            if params:
                self.study.add_trial(optuna.trial.create_trial(
                    params=params, distributions={k: self.space[k] for k in params}, value=value))

    def _history(self, ctx: Context) -> list[tuple[dict, float]]:
        """(values, result) of every earlier search proposal, from the run folders and ledger."""
        by_commit: dict[str, list[Row]] = {}
        for row in ctx.ledger.rows:
            if row.proposer == self.name and row.run_id:
                by_commit.setdefault(row.commit, []).append(row)
        out = []
        for rows in by_commit.values():
            record = ctx.ws.runs_dir / rows[0].run_id / PROPOSAL_FILE
            if not record.exists():
                continue
            params = json.loads(record.read_text()).get("params", {})
            values = params.get("values")
            if values:
                out.append((values, self._value(rows, ctx.ledger.rows)))
                for name in params.get("varied", []):
                    self.tried[name] += 1
        return out

    @staticmethod
    def _value(rows: list[Row], all_rows: list[Row]) -> float:
        measured = [r.val_bpb for r in rows if r.val_bpb is not None and r.status in ("keep", "discard")]
        if measured:
            return sum(measured) / len(measured)
        seen = [r.val_bpb for r in all_rows if r.val_bpb is not None]
        return (max(seen) if seen else 10.0) + 0.5  # a crash or timeout: worse than anything measured

    # --- the Proposer interface -------------------------------------------------------------

    def propose(self, ctx: Context) -> Proposal:
        if self.study is None:
            self._start(ctx)
        assert self.study is not None
        current = {k: hp.value for k, hp in hparams.read_block(ctx.best_source).items()}
        names = [n for n in self.space if n in current]
        rng = random.Random(self.seed * 1_000_003 + len(self.study.trials))
        for _ in range(20):
            k = 1 if rng.random() < 0.7 or len(names) < 2 else 2
            weights = [1.0 / (1 + self.tried[n]) for n in names]  # prefer what was tried least
            vary = set()
            while len(vary) < k:
                vary.add(rng.choices(names, weights)[0])
            fixed = {n: current[n] for n in names if n not in vary and _contains(self.space[n], current[n])}
            self.study.sampler = optuna.samplers.PartialFixedSampler(fixed, self.base_sampler)
            trial = self.study.ask({n: self.space[n] for n in list(fixed) + sorted(vary)})
            changes = {n: _round(trial.params[n]) for n in sorted(vary)}
            changes = {n: v for n, v in changes.items() if v != current[n]}
            changes.update(_repair(current, changes, ctx.settings.max_seq_len))
            description = hparams.describe_change(current, changes)
            if changes and description not in self.pending and description not in ctx.in_flight:
                break
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)  # nothing new: ask again
        else:
            raise ProposerError("the search could not find a new point to try")
        ctx.ws.train_py.write_text(hparams.rewrite(ctx.best_source, changes))
        for n in vary:
            self.tried[n] += 1
        self.pending[description] = trial.number
        values = {n: (changes.get(n, current[n])) for n in self.space if n in current}
        return Proposal(
            description=description,
            hypothesis=f"Optuna TPE suggests {', '.join(sorted(vary))} from {len(self.study.trials) - 1} earlier results",
            params={"trial": trial.number, "values": values, "varied": sorted(vary)},
        )

    def observe(self, proposal: Proposal, rows: list[Row]) -> None:
        if self.study is None or proposal.description not in self.pending:
            return
        number = self.pending.pop(proposal.description)
        value = self._value(rows, rows)
        measured = [t.value for t in self.study.trials if t.value is not None]
        if not any(r.val_bpb is not None and r.status in ("keep", "discard") for r in rows):
            value = (max(measured) if measured else value) + 0.5
        self.study.tell(number, value)


def _round(value: Any) -> Any:
    """4 significant digits for floats (what train.py will hold), values otherwise unchanged."""
    if isinstance(value, float) and value != 0 and math.isfinite(value):
        return float(f"{value:.4g}")
    return value


def _repair(current: dict[str, Any], changes: dict[str, Any], seq_len: int) -> dict[str, Any]:
    """Keep TOTAL_BATCH_SIZE a multiple of DEVICE_BATCH_SIZE * seq_len by shrinking the latter."""
    total = changes.get("TOTAL_BATCH_SIZE", current.get("TOTAL_BATCH_SIZE"))
    device = current.get("DEVICE_BATCH_SIZE")
    if not isinstance(total, int) or not isinstance(device, int):
        return {}
    while device > 1 and total % (device * seq_len) != 0:
        device //= 2
    return {"DEVICE_BATCH_SIZE": device} if device != current["DEVICE_BATCH_SIZE"] else {}


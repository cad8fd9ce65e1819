"""What an LLM proposer is shown, fitted to a token budget.

The prompt is made of sections. Two are always there in full: `program.md` (the human's brief)
and the current `train.py` (the edits must quote it exactly); if they alone exceed the budget the
proposer stops with an error that names the setting to raise. The others are shown as fully as
the budget allows, each in progressively shorter renderings:

- the research so far: baseline, best, noise and the keep rule, then the ledger compacted into
  the best kept changes (lowest val_bpb first), the most recent experiments, and the crashes,
  timeouts and invalid ones with their error;
- the last run: its outcome, the summary of its training curve from `metrics.jsonl` (loss
  trajectory, tokens/s, MFU, gradient norms) and where its time went, and the tail of its log;
- the notes (`notes.md`), newest part first to survive shrinking;
- every other experiment's one-line description, so no idea is tried twice unknowingly;
- the proposals other workers are running right now.

Tokens are counted with tiktoken: by default with this workspace's own BPE tokenizer (offline;
on code it counts more tokens than the large-vocabulary tokenizers of hosted models, so the
budget errs on the safe side), or with a named tiktoken encoding (`token_encoding = "o200k_base"`).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from autoresearch.errors import AutoresearchError, ProposerError, SettingsError
from autoresearch.ledger import Row
from autoresearch.proposers.base import Context
from autoresearch.rundir import LOG_FILE, read_metrics, read_result, read_text
from autoresearch.settings import Settings
from autoresearch.status import rule_text, summarize
from autoresearch.workspace import PROGRAM_FILE, TRAIN_FILE

BYTES_PER_TOKEN = 3  # the fallback estimate when no tokenizer is available


# --- counting tokens -------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenCounter:
    name: str
    encode: Callable[[str], int] = field(repr=False)

    def count(self, text: str) -> int:
        return self.encode(text) if text else 0


def token_counter(encoding: str, settings: Settings | None) -> TokenCounter:
    """A counter for `encoding`: "workspace" (this workspace's BPE) or a tiktoken encoding name."""
    import tiktoken

    if encoding == "workspace":
        try:
            from autoresearch.data.prepare import open_prepared

            if settings is None:
                raise AutoresearchError("no settings")
            enc = open_prepared(settings).tokenizer().enc
            return TokenCounter("workspace BPE (tiktoken)", lambda t: len(enc.encode(t, disallowed_special=())))
        except AutoresearchError:
            return TokenCounter(f"estimate ({BYTES_PER_TOKEN} bytes per token)",
                                lambda t: math.ceil(len(t.encode()) / BYTES_PER_TOKEN))
    try:
        enc = tiktoken.get_encoding(encoding)
    except Exception as e:  # unknown name, or no network for its first download
        raise SettingsError(f"tiktoken encoding {encoding!r} is not available ({type(e).__name__}: {e}); "
                            "use token_encoding = \"workspace\" (offline) or a name tiktoken knows") from None
    return TokenCounter(f"tiktoken {encoding}", lambda t: len(enc.encode(t, disallowed_special=())))


# --- sections --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    key: str
    levels: tuple[str, ...]  # renderings, fullest first; the last may be "" (left out)
    share: float = 0.0  # of the optional budget, in the first pass; 0 for required sections


@dataclass(frozen=True)
class Prompt:
    text: str
    tokens: int
    counter: str
    shortened: tuple[str, ...]  # sections shown shorter than in full, or left out


def _fence(text: str, lang: str = "") -> str:
    return f"```{lang}\n{text.rstrip()}\n```"


def _fmt(value: float | None, digits: int = 6) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row_line(r: Row, with_rule: bool = False) -> str:
    gain = f"{r.gain:+.4f}" if r.gain is not None else "   -   "
    line = f"{r.run_id or '-':>5} {r.commit:7} {_fmt(r.val_bpb):>8} {gain:>8} {r.status:8} {r.description}"
    if with_rule and r.why:
        rule = r.why if len(r.why) <= 200 else r.why[:197] + "..."
        line += f"  [{rule}]"
    return line


ROW_HEADER = "  run commit   val_bpb     gain status   description"


def research_overview(ctx: Context) -> str:
    rows = ctx.ledger.rows
    s = summarize(rows, ctx.settings.min_noise)
    lines = []
    if s.baseline is not None:
        lines.append(f"- baseline val_bpb {s.baseline:.6f} (mean of {s.baseline_runs} runs)")
    if ctx.best_bpb is not None:
        lines.append(f"- current best (the train.py below): val_bpb {ctx.best_bpb:.6f}, commit {ctx.best_commit[:7]}")
    lines.append(f"- run-to-run noise: sigma {ctx.sigma:.6f}; {rule_text(ctx.settings, ctx.sigma)}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())) or "none yet"
    lines.append(f"- experiments so far: {s.experiments} ({counts})")
    lines.append(f"- budget per run: {ctx.settings.time_budget:g} s of training (preset {ctx.settings.preset}, "
                 f"sequence length {ctx.settings.max_seq_len}, vocabulary {ctx.settings.vocab_size})")
    return "\n".join(lines)


def ledger_tables(ctx: Context, n: int) -> str:
    """Best kept first, then the most recent, then the failures; `n` rows each at most."""
    experiments = [r for r in ctx.ledger.rows if r.kind == "experiment"]
    by_commit: dict[str, list[float]] = {}
    for r in ctx.ledger.rows:
        if r.val_bpb is not None and r.status in ("keep", "discard"):
            by_commit.setdefault(r.commit, []).append(r.val_bpb)
    kept = sorted((r for r in experiments if r.status == "keep"),
                  key=lambda r: statistics.fmean(by_commit.get(r.commit, [r.val_bpb or math.inf])))
    failed = [r for r in experiments if r.status in ("crash", "timeout", "invalid")]
    parts = []
    if kept:
        parts.append("Best kept changes (lowest val_bpb first):\n" + ROW_HEADER + "\n" +
                     "\n".join(_row_line(r) for r in kept[:n]))
    if experiments:
        parts.append(f"Most recent experiments (newest last, {min(n, len(experiments))} of {len(experiments)}):\n"
                     + ROW_HEADER + "\n" + "\n".join(_row_line(r, with_rule=True) for r in experiments[-n:]))
    if failed:
        parts.append(f"Crashes, timeouts and invalid proposals (newest last, {min(n, len(failed))} of {len(failed)}):\n"
                     + ROW_HEADER + "\n" + "\n".join(_row_line(r, with_rule=True) for r in failed[-n:]))
    return "\n\n".join(parts) if parts else "No experiments yet: the next one is the first."


def earlier_experiments(ctx: Context, n: int, shown: int) -> str:
    """One line per experiment not in the recent table (oldest first), `n` at most."""
    experiments = [r for r in ctx.ledger.rows if r.kind == "experiment"][:-shown or None]
    if not experiments:
        return ""
    picked = experiments[-n:]
    more = f" (the {len(experiments) - len(picked)} oldest left out)" if len(picked) < len(experiments) else ""
    return (f"Every earlier experiment{more}, oldest first; do not repeat one unless you change why it failed:\n"
            + "\n".join(f"- {r.status:8} {_fmt(r.val_bpb, 4):>7} {r.description}" for r in picked))


# --- the last run ----------------------------------------------------------------------------


def _numbers(records: list[dict], key: str) -> list[float]:
    out = []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append(float(v))
    return out


def curve_summary(records: list[dict]) -> str:
    """The training curve in a few lines: loss trajectory, throughput, gradient norms."""
    losses = [(i, r) for i, r in enumerate(records) if isinstance(r.get("loss"), (int, float))]
    if not losses:
        return "no training metrics were logged"
    n = len(losses)
    lines = [f"{n} logged steps"]
    window = max(1, n // 50)
    points = []
    for frac in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
        k = min(n - 1, int(round(frac * (n - 1))))
        lo, hi = max(0, k - window), min(n, k + window + 1)
        mean = statistics.fmean(float(r["loss"]) for _, r in losses[lo:hi])
        record = losses[k][1]
        step = record.get("step", k)
        t = record.get("training_seconds")
        at = f" t={t:.0f}s" if isinstance(t, (int, float)) else ""
        points.append(f"step {step}{at}: {mean:.4f}")
    lines.append("loss (smoothed) " + " -> ".join(points))
    all_loss = _numbers(records, "loss")
    lines.append(f"lowest loss {min(all_loss):.4f}; last {all_loss[-1]:.4f}")
    steady = records[len(records) // 10:] or records
    for key, label, fmt in (("tokens_per_s", "tokens/s", "{:,.0f}"), ("mfu", "MFU %", "{:.2f}"),
                            ("grad_norm", "grad norm", "{:.3g}")):
        values = _numbers(steady, key)
        if values:
            median = statistics.median(values)
            text = f"{label}: median {fmt.format(median)}"
            if key == "grad_norm":
                text += f", max {fmt.format(max(values))}, last {fmt.format(values[-1])}"
            else:
                text += f" (min {fmt.format(min(values))}, max {fmt.format(max(values))}) after the first 10% of steps"
            lines.append(text)
    epochs = _numbers(records, "epoch")
    if epochs:
        lines.append(f"epoch at the end: {epochs[-1]:g}")
    return "\n".join(lines)


def time_summary(result: dict) -> str:
    """Where the run's wall time went, from the runner's record."""
    s = result.get("summary") or {}
    wall, handover = result.get("wall_seconds"), result.get("handover_seconds")
    training, evaluation = s.get("training_seconds"), result.get("eval_seconds")
    parts = []
    if isinstance(handover, (int, float)):
        text = f"launch to hand-over {handover:.1f} s"
        if isinstance(training, (int, float)):
            text += (f": {training:.1f} s of timed training steps, {max(0.0, handover - training):.1f} s for "
                     "everything else (imports, data, compilation, untimed warm-up steps, in-process evaluation, export)")
        parts.append(text)
    elif isinstance(training, (int, float)):
        parts.append(f"{training:.1f} s of timed training steps")
    if isinstance(wall, (int, float)):
        parts.append(f"launch to exit {wall:.1f} s")
    if isinstance(evaluation, (int, float)):
        parts.append(f"the harness's evaluation {evaluation:.1f} s (not counted in the budget)")
    for key, label in (("num_steps", "steps"), ("total_tokens_M", "M tokens"), ("peak_vram_mb", "MB peak memory"),
                       ("num_params_M", "M parameters")):
        if isinstance(s.get(key), (int, float)):
            parts.append(f"{s[key]:g} {label}")
    return "; ".join(parts)


PROGRESS = re.compile(r"^\s*step\s+\d+")  # train.py's per-step progress lines (the curve summarises them)


def _log_tail(text: str, n_lines: int) -> str:
    """The last `n_lines` of a log's text, each run of progress lines cut to its last two."""
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    out: list[str] = []
    run: list[str] = []
    for line in lines + [""]:
        if line and PROGRESS.match(line):
            run.append(line)
            continue
        if len(run) > 2:
            out.append(f"[... {len(run) - 2} progress lines ...]")
        out.extend(run[-2:])
        run = []
        if line:
            out.append(line)
    return "\n".join(ln if len(ln) <= 300 else ln[:297] + "..." for ln in out[-n_lines:])


def last_run(ctx: Context, log_lines: int, with_curve: bool = True) -> str:
    rows = [r for r in ctx.ledger.rows if r.run_id]
    if not rows:
        return ""
    row = rows[-1]
    run_dir = ctx.ws.runs_dir / row.run_id
    head = f"Run {row.run_id} ({row.kind}, {row.status}, val_bpb {_fmt(row.val_bpb)}): {row.description}"
    if row.why:
        head += f"\nDecision: {row.why}"
    if row.flags:
        head += f"\nFlags: {row.flags}"
    parts = [head]
    result = read_result(run_dir)
    if result.get("error"):
        parts.append(f"Error: {result['error']}")
    if with_curve:
        timing = time_summary(result)
        if timing:
            parts.append(f"Where the time went: {timing}")
        parts.append("Training curve (metrics.jsonl):\n" + curve_summary(read_metrics(run_dir)))
    if log_lines > 0:
        tail = _log_tail(read_text(run_dir, LOG_FILE), log_lines)
        if tail:
            parts.append("The end of its train.log (runs of progress lines cut short):\n" + _fence(tail))
    return "\n\n".join(parts)


def notes_tail(text: str, share: float) -> str:
    """The newest `share` of the notes (whole entries when possible)."""
    text = text.strip()
    if not text or share <= 0:
        return ""
    if share >= 1:
        return text
    keep = int(len(text) * share)
    cut = text[-keep:]
    start = cut.find("\n## ")
    if start > 0:
        cut = cut[start + 1:]
    return "(older notes left out)\n" + cut


# --- assembling ------------------------------------------------------------------------------


def sections(ctx: Context, notes: str, include_train: bool = True) -> tuple[list[Section], list[Section]]:
    """(required, optional) sections, optional ones in priority order."""
    program = (ctx.ws.root / PROGRAM_FILE)
    program_text = program.read_text(encoding="utf-8", errors="replace") if program.exists() else ""
    required = [Section("program.md", (f"# The brief ({PROGRAM_FILE})\n\n{program_text.strip()}",))]
    if include_train:
        required.append(Section("train.py", (f"# The current {TRAIN_FILE} (the best so far)\n\n"
                                             + _fence(ctx.best_source, "python"),)))
    research = "# The research so far\n\n" + research_overview(ctx)
    ledger_levels = tuple(f"{research}\n\n{ledger_tables(ctx, n)}" for n in (15, 10, 6, 3, 1)) + (research,)
    run_levels = tuple(f"# The last run\n\n{text}" for text in
                       (last_run(ctx, 40), last_run(ctx, 15), last_run(ctx, 5), last_run(ctx, 0),
                        last_run(ctx, 0, with_curve=False)) if text) + ("",)
    note_levels = tuple(f"# Your notes (notes.md)\n\n{t}" for t in
                        (notes_tail(notes, s) for s in (1, 0.6, 0.35, 0.2, 0.1)) if t) + ("",)
    earlier_levels = tuple(f"# Earlier experiments\n\n{t}" for t in
                           (earlier_experiments(ctx, n, 15) for n in (200, 80, 30, 10)) if t) + ("",)
    optional = [
        Section("research", ledger_levels, 0.25),
        Section("last run", run_levels, 0.2),
        Section("notes", note_levels, 0.3),
        Section("earlier experiments", earlier_levels, 0.15),
    ]
    if ctx.in_flight:
        optional.append(Section("in flight", (
            "# Being run right now by other workers (propose something different)\n\n"
            + "\n".join(f"- {d}" for d in ctx.in_flight), ""), 0.1))
    if ctx.returned:
        optional.append(Section("returned", (
            "# Won against an older best, but conflict with the current best train.py\n\n"
            "Each beat the best it started from while another change was kept. Consider re-applying one "
            "of them onto the current best:\n\n" + "\n".join(f"- {d}" for d in ctx.returned), ""), 0.1))
    return required, optional


def assemble(required: list[Section], optional: list[Section], counter: TokenCounter, budget: int,
             reserved: int = 0) -> Prompt:
    """Join the sections, each as fully as `budget` tokens (minus `reserved`) allow."""
    fixed = [s.levels[0] for s in required]
    fixed_tokens = sum(counter.count(t) + 2 for t in fixed)
    left = budget - reserved - fixed_tokens
    if left < 0:
        names = " + ".join(s.key for s in required)
        raise ProposerError(
            f"the context budget is too small: {names} alone take {fixed_tokens + reserved} tokens (counted with "
            f"{counter.name}) of {budget}; raise context_tokens in [proposer] (or --context-tokens)")
    optional_budget = left
    chosen: dict[str, int] = {}  # section key -> level index
    cost: dict[str, int] = {}

    def fit(section: Section, allowance: int) -> None:
        for i, text in enumerate(section.levels):
            tokens = counter.count(text) + 2 if text else 0
            if tokens <= allowance:
                chosen[section.key], cost[section.key] = i, tokens
                return
        chosen[section.key], cost[section.key] = len(section.levels) - 1, 0

    for section in optional:  # first pass: each within its share
        fit(section, min(int(section.share * optional_budget), left))
        left -= cost[section.key]
    for section in optional:  # second pass: grow into what is left, in priority order
        if chosen[section.key] > 0:
            before = cost[section.key]
            fit(section, left + before)
            left -= cost[section.key] - before
    texts = fixed[:1] + [s.levels[chosen[s.key]] for s in optional] + fixed[1:]
    shortened = tuple(s.key + (" (left out)" if not s.levels[chosen[s.key]] else " (shortened)")
                      for s in optional if chosen[s.key] > 0 and any(s.levels[:1]))
    text = "\n\n".join(t for t in texts if t)
    return Prompt(text, counter.count(text), counter.name, shortened)


def build(ctx: Context, notes: str, counter: TokenCounter, budget: int, include_train: bool = True,
          reserved: int = 0) -> Prompt:
    required, optional = sections(ctx, notes, include_train)
    return assemble(required, optional, counter, budget, reserved)

"""Presets and the frozen per-workspace settings (`autoresearch.toml`).

A workspace's settings are chosen once, by `autoresearch init`, from a preset plus a few
overrides, and written to `autoresearch.toml` together with a hash of their values. Nothing may
change them afterwards: `load` recomputes the hash and refuses a file that was edited, because
results measured under different settings are not comparable.

The presets, and why their numbers are what they are, are documented in docs/presets.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomli_w

from autoresearch import atomic
from autoresearch.clock import CLOCKS, CPU_CLOCK_HARD_FACTOR
from autoresearch.errors import SettingsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SETTINGS_FILE = "autoresearch.toml"


def setting(section: str, help: str, default: Any = dataclasses.MISSING) -> Any:
    """A `Settings` field, with its [section] of autoresearch.toml and its one-line help.

    Both live in the field's metadata and nowhere else: `SECTIONS`, the comments written into
    autoresearch.toml (`ANNOTATED_SECTIONS`) and `HELP` all read them from there.
    """
    return field(default=default, metadata={"section": section, "help": help})


@dataclass(frozen=True)
class Settings:
    """Everything that defines how an experiment is measured and decided."""

    # What is measured.
    preset: str = setting("research", "the preset these settings started from")
    dataset: str = setting("research", '"pystdlib" | "climbmix" | "tinystories" | "files:PATH"')
    time_budget: float = setting("research", "seconds of training per experiment")
    max_seq_len: int = setting("research", "tokens per row, in training and in evaluation")
    eval_tokens: int = setting("research", "target tokens scored by the evaluation, whatever the batch size")
    vocab_size: int = setting("research", "BPE vocabulary including the 4 reserved special tokens")

    # How the corpus is turned into token shards.
    train_shards: int = setting("data", "hub datasets: number of training parquet shards to download", 10)
    max_doc_chars: int = setting("data", "split longer documents at natural boundaries (0 = never split)", 0)
    tokenizer_max_chars: int = setting("data", "training text seen by the BPE trainer", 1_000_000_000)
    tokenizer_doc_cap: int = setting("data", "characters of each document the BPE trainer sees", 10_000)
    val_permille: int = setting("data", "local datasets: share of files (per mille) pinned to validation", 40)
    heldout_permille: int = setting(
        "data", "local datasets: share of files (per mille) pinned to the never-exposed held-out split", 40)

    # The clock and the evaluator.
    clock: str = setting(
        "runner", '"wall" | "cpu": what time_budget counts: wall seconds, or the training process\'s own time '
        "on the CPUs, wall seconds less its waits for a CPU (load-robust on a CPU; docs/decisions.md)", "wall")
    startup_allowance: float = setting(
        "runner", "seconds for imports/compilation/hand-over beyond the budget", 60.0)
    hard_limit: float = setting(
        "runner", "kill the run after this many wall seconds (0 = 2*budget + allowance; 5x that on the cpu clock)",
        0.0)
    eval_batch_size: int = setting("runner", "rows per batch in the harness's own evaluator", 8)

    # The keep rule (docs/decisions.md); these help lines are written into autoresearch.toml.
    baseline_runs: int = setting(
        "decision", "runs of the baseline that measure the run-to-run noise (sigma)", 3)
    confirm_runs: int = setting(
        "decision", "extra runs a borderline result gets; the mean of all its runs decides", 2)
    keep_z: float = setting(
        "decision",
        "keep a gain of at least keep_z standard errors, after the complexity and memory prices", 2.5)
    keep_runs: int = setting(
        "decision", "runs a change needs before it is kept for its gain (its confirmation runs count; at most "
        "1 + confirm_runs): a gain seen once is run again", 2)
    confirm_z: float = setting(
        "decision", "a net gain between confirm_z and keep_z standard errors gets confirmation runs", 1.0)
    min_noise: float = setting("decision", "floor on sigma, in val_bpb", 0.0005)
    max_interference: float = setting(
        "decision", "a run that other processes competed with for more than this share of its CPU (on CUDA: or "
        "of its GPU) is disturbed: not judged, run again", 0.25)
    max_slowdown: float = setting(
        "decision", "a run this much slower (steps/s) than earlier runs of its commit is disturbed", 0.25)
    disturbed_retries: int = setting(
        "decision", "times each disturbed run (or baseline run past the hard limit) may be run again", 2)
    control_every: int = setting(
        "decision", "a control run of the best after this many experiments re-measures the noise (0 = never)", 10)
    heldout_tolerance: float = setting(
        "decision", "the held-out/val bpb ratio may exceed the baseline's by this fraction", 0.10)
    complexity_cost: float = setting(
        "decision",
        "bpb of gain that each 100 syntax-tree nodes added to train.py must buy (~12 lines)", 0.001)
    simplify_nodes: int = setting(
        "decision", "a change at least this many nodes smaller is a simplification", 20)
    simplify_z: float = setting(
        "decision",
        "a simplification is kept unless worse than the best by more than simplify_z standard errors", 1.0)
    memory_free: float = setting(
        "decision", "peak-memory growth over the best's (fraction) that costs nothing", 0.10)
    memory_cost: float = setting(
        "decision", "bpb of gain per +100% peak-memory growth beyond memory_free", 0.01)
    max_memory_gb: float = setting(
        "decision", "runs above this peak memory are discarded (0 = the device's total memory)", 0.0)

    @property
    def effective_hard_limit(self) -> float:
        if self.hard_limit > 0:
            return self.hard_limit
        wall = self.clock_hard_limit
        return wall * CPU_CLOCK_HARD_FACTOR if self.clock == "cpu" else wall

    @property
    def clock_hard_limit(self) -> float:
        """Seconds on the training clock after which the run is killed (on the wall clock: the same
        as effective_hard_limit's default)."""
        return 2 * self.time_budget + self.startup_allowance

    @property
    def deadline(self) -> float:
        """Seconds from launch to hand-over within which a run may be kept."""
        return self.time_budget + self.startup_allowance

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        return _hash_values(self.as_dict())

    def data_key(self) -> dict[str, Any]:
        """The settings that determine the prepared data and tokenizer (the cache key)."""
        return {
            "dataset": self.dataset,
            "vocab_size": self.vocab_size,
            "train_shards": self.train_shards,
            "max_doc_chars": self.max_doc_chars,
            "tokenizer_max_chars": self.tokenizer_max_chars,
            "tokenizer_doc_cap": self.tokenizer_doc_cap,
            "val_permille": self.val_permille,
            "heldout_permille": self.heldout_permille,
        }


def _sections() -> dict[str, tuple[str, ...]]:
    sections: dict[str, list[str]] = {}
    for f in fields(Settings):
        sections.setdefault(f.metadata["section"], []).append(f.name)
    return {section: tuple(names) for section, names in sections.items()}


# The tables of autoresearch.toml and their keys, in file order: from the fields' metadata.
SECTIONS: dict[str, tuple[str, ...]] = _sections()

# The tables whose `key = value` lines carry their help as a comment, so the keep rule reads in
# its own file.
ANNOTATED_SECTIONS: tuple[str, ...] = ("decision",)

# The one-line help of each setting, by field name: from the fields' metadata.
HELP: dict[str, str] = {f.name: f.metadata["help"] for f in fields(Settings)}


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    values: dict[str, Any] = field(default_factory=dict)  # Settings fields
    train: dict[str, Any] = field(default_factory=dict)  # train.py hyperparameter defaults
    # run-to-run sigma of val_bpb measured on a quiet machine at the preset's budget (None: not measured);
    # a noise estimate far above it is reported as disturbed (decide.implausible)
    quiet_sigma: float | None = None


PRESETS: dict[str, Preset] = {
    # The reference's constants, unchanged, so results compare with its published numbers.
    "gpu": Preset(
        "gpu",
        "CUDA GPU: the reference's constants (seq 2048, 300 s, 40*524288 eval tokens, vocab 8192, climbmix)",
        dict(
            dataset="climbmix",
            time_budget=300.0,
            max_seq_len=2048,
            eval_tokens=40 * 524288,
            vocab_size=8192,
            startup_allowance=90.0,
            eval_batch_size=32,
            complexity_cost=0.001,
            memory_cost=0.01,
        ),
        train={},  # the template's own values are the reference's
    ),
    # Apple silicon: between the two; not measured here (no Mac), see docs/presets.md.
    "mps": Preset(
        "mps",
        "Apple MPS: seq 1024, vocab 8192, 2^21 eval tokens, pystdlib",
        dict(
            dataset="pystdlib",
            time_budget=300.0,
            max_seq_len=1024,
            eval_tokens=2 * 1024 * 1024,
            vocab_size=8192,
            max_doc_chars=4000,
            startup_allowance=60.0,
            eval_batch_size=16,
            complexity_cost=0.002,
            memory_cost=0.02,
        ),
        train=dict(DEPTH=6, ASPECT_RATIO=64, HEAD_DIM=128, WINDOW_PATTERN="SSSL",
                   TOTAL_BATCH_SIZE=2**16, DEVICE_BATCH_SIZE=32),
    ),
    # A small CPU: sized by measurement on a 2-core AVX2 machine (docs/presets.md).
    "cpu": Preset(
        "cpu",
        "CPU: seq 256, vocab 4096, 2^17 eval tokens, pystdlib",
        dict(
            dataset="pystdlib",
            time_budget=300.0,
            max_seq_len=256,
            eval_tokens=128 * 1024,
            vocab_size=4096,
            max_doc_chars=1500,
            # The run's own CPU time: on a busy CPU the wall clock measures the other programs too
            # (BENCHMARKS.md, "The training clock"; clock.py).
            clock="cpu",
            # A cold torch.compile of the model (~100 CPU-s, half of it in g++ children) counts on
            # the cpu clock; a warm one takes seconds (docs/presets.md, "Compilation and memory").
            startup_allowance=90.0,
            eval_batch_size=32,
            min_noise=0.002,
            complexity_cost=0.002,
            memory_cost=0.02,
        ),
        # Compiled: more steps and less memory than eager, for ~10 s of start-up with a warm cache.
        # Depth 3 (width 3 * 40 rounded up to 128): 16% fewer FLOPs per token than depth 4, so more
        # steps in 5 minutes and a lower val_bpb (BENCHMARKS.md, "Depth and learning rates").
        # Half the embedding lr and weight decay: -0.004 at a fixed step count, on two seeds
        # (BENCHMARKS.md, "Learning rates and weight decay at a fixed step count").
        train=dict(DEPTH=3, ASPECT_RATIO=40, HEAD_DIM=64, WINDOW_PATTERN="L",
                   TOTAL_BATCH_SIZE=2**13, DEVICE_BATCH_SIZE=32, EMBEDDING_LR=0.3, WEIGHT_DECAY=0.1,
                   COMPILE=True),
        quiet_sigma=0.002,  # BENCHMARKS.md: 0.0019 at 300 s, 0.0020 at 60 s (AMD and Intel, idle)
    ),
    # For tests and smoke checks only: trains a toy model in seconds.
    "tiny": Preset(
        "tiny",
        "tests and smoke checks: seq 64, vocab 512, 8192 eval tokens, 10 s budget",
        dict(
            dataset="pystdlib",
            time_budget=10.0,
            max_seq_len=64,
            eval_tokens=8192,
            vocab_size=512,
            max_doc_chars=400,
            tokenizer_max_chars=2_000_000,
            # Generous: the test suite runs two loops at once on two cores, each with its runs,
            # evaluators and torch imports, so a 3 s run can take 25 s to hand over.
            startup_allowance=60.0,
            eval_batch_size=16,
            baseline_runs=2,
            confirm_runs=1,
            # The keep rule as it was before bench/decisions.py measured it (keep on one run at 2 se):
            # the suite's loop tests check exact sequences of rows; tests/test_decide.py checks the
            # defaults.
            keep_z=2.0,
            keep_runs=1,
            min_noise=0.005,
            complexity_cost=0.01,
            memory_cost=0.05,
            # Off: the test suite runs two loops at once on two cores on purpose, and its tests check
            # exact sequences of rows (tests/test_noise.py turns them on where they are the subject).
            max_interference=1.0,
            max_slowdown=1.0,
        ),
        # Eager: a cold compile would cost each test more than its whole run.
        train=dict(DEPTH=2, ASPECT_RATIO=32, HEAD_DIM=32, WINDOW_PATTERN="L",
                   TOTAL_BATCH_SIZE=2**10, DEVICE_BATCH_SIZE=16, COMPILE=False),
        quiet_sigma=0.02,  # a few dozen steps: wide
    ),
}


def from_preset(name: str, **overrides: Any) -> Settings:
    """Settings of a named preset with some values replaced (None means keep the preset's)."""
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    values: dict[str, Any] = {"preset": name, **PRESETS[name].values}
    for key, value in overrides.items():
        if value is None:
            continue
        check_key(key)
        if key == "preset" and value != name:
            raise SettingsError(f"preset {value!r} disagrees with the preset {name!r} these settings start from")
        values[key] = value
    settings = _build(values)
    validate(settings)
    return settings


def check_key(key: str) -> None:
    """Refuse a name that is no setting, listing the close ones (or all of them)."""
    known = [f.name for f in fields(Settings)]
    if key in known:
        return
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}?" if close else f"valid keys: {', '.join(sorted(known))}"
    raise SettingsError(f"unknown setting {key!r}; {hint}")


_KIND_WORDS = {"int": "int (a whole number)", "float": "float (a finite number)", "str": "str (text)"}


def coerce(key: str, value: Any) -> Any:
    """`value` (as typed on the command line or read from TOML) as the type of setting `key`."""
    check_key(key)
    kind = {f.name: f.type for f in fields(Settings)}[key]
    kind = kind if isinstance(kind, str) else kind.__name__
    try:
        if isinstance(value, bool):
            raise ValueError
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "float":
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError, OverflowError):
        raise SettingsError(f"setting {key} must be {_KIND_WORDS.get(kind, kind)}, got {value!r}") from None


def _at_least(s: Settings, key: str, low: float, why: str = "") -> None:
    value = getattr(s, key)
    if value < low:
        rule = "must not be negative" if low == 0 else f"must be >= {low:g}"
        raise SettingsError(f"{key} {rule}{why}, got {value:g}")


def validate(s: Settings) -> None:
    """Reject values that cannot work: each message names one setting, its range and the value."""
    from autoresearch.data.sources import parse_dataset  # late: data imports settings

    if s.preset not in PRESETS:
        raise SettingsError(f"unknown preset {s.preset!r} (setting preset); choose one of: {', '.join(PRESETS)}")
    parse_dataset(s.dataset)  # raises on an unknown dataset
    if s.time_budget <= 0:
        raise SettingsError(f"time_budget must be positive seconds, got {s.time_budget:g}")
    _at_least(s, "max_seq_len", 8, " tokens")
    if s.eval_tokens < s.max_seq_len:
        raise SettingsError(
            f"eval_tokens must be at least one row of max_seq_len ({s.max_seq_len}), got {s.eval_tokens}")
    if not 256 + 4 < s.vocab_size <= 65536:
        raise SettingsError(
            f"vocab_size must be between 261 and 65536 (256 bytes + merges + 4 specials), got {s.vocab_size}")
    _at_least(s, "train_shards", 1)
    _at_least(s, "max_doc_chars", 0, " (0 = never split)")
    _at_least(s, "tokenizer_max_chars", 1)
    _at_least(s, "tokenizer_doc_cap", 1)
    _at_least(s, "val_permille", 1)
    _at_least(s, "heldout_permille", 1)
    if s.val_permille + s.heldout_permille >= 500:
        raise SettingsError(f"heldout_permille must be below {500 - s.val_permille} (500 - val_permille "
                            f"{s.val_permille}: less than half the data outside train), got {s.heldout_permille}")
    if s.clock not in CLOCKS:
        raise SettingsError(f"clock must be one of {', '.join(CLOCKS)}, got {s.clock!r}")
    _at_least(s, "startup_allowance", 0)
    _at_least(s, "hard_limit", 0, " (0 = the default)")
    if s.hard_limit and s.hard_limit < s.deadline:
        raise SettingsError(
            f"hard_limit ({s.hard_limit:g} s) is shorter than budget + allowance ({s.deadline:g} s); "
            "raise it or set it to 0 for the default")
    _at_least(s, "eval_batch_size", 1)
    _at_least(s, "baseline_runs", 1)
    _at_least(s, "confirm_runs", 0)
    _at_least(s, "keep_runs", 1)
    _at_least(s, "keep_z", 0)
    if not 0 <= s.confirm_z <= s.keep_z:
        raise SettingsError(f"need 0 <= confirm_z <= keep_z ({s.keep_z:g}), got confirm_z {s.confirm_z:g}")
    _at_least(s, "min_noise", 0)
    _at_least(s, "max_interference", 0)
    _at_least(s, "max_slowdown", 0)
    _at_least(s, "disturbed_retries", 0)
    _at_least(s, "control_every", 0)
    _at_least(s, "heldout_tolerance", 0)
    _at_least(s, "complexity_cost", 0)
    if s.simplify_nodes < 1:
        raise SettingsError(f"simplify_nodes must be >= 1 (0 would call every unchanged-size change simpler), "
                            f"got {s.simplify_nodes}")
    if not 0 <= s.simplify_z <= s.keep_z:
        raise SettingsError(f"need 0 <= simplify_z <= keep_z ({s.keep_z:g}), got simplify_z {s.simplify_z:g}")
    for key in ("memory_free", "memory_cost", "max_memory_gb"):
        _at_least(s, key, 0)


def _build(values: dict[str, Any]) -> Settings:
    coerced = {key: coerce(key, value) for key, value in values.items()}
    try:
        return Settings(**coerced)
    except TypeError as e:
        raise SettingsError(f"incomplete settings: {e}") from None


def _hash_values(values: dict[str, Any]) -> str:
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def to_toml(s: Settings) -> str:
    values = s.as_dict()
    doc: dict[str, Any] = {}
    for section, names in SECTIONS.items():
        doc[section] = {name: values[name] for name in names}
    doc["frozen"] = {"settings_sha256": _hash_values(values)}
    header = (
        "# Fixed settings of this research, written by `autoresearch init`.\n"
        "# Do not edit: results are only comparable under the same settings, and the harness\n"
        "# refuses a file whose values no longer match settings_sha256. Start a new workspace\n"
        "# (`autoresearch init`) to research under other settings.\n"
        "# [decision] is the keep rule (docs/decisions.md); choose its values at init with --set.\n\n"
    )
    return header + _annotate(tomli_w.dumps(doc))


def _annotate(text: str) -> str:
    """Append `# help` to the `key = value` lines of the ANNOTATED_SECTIONS of a TOML text."""
    out, current = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            current = line.strip("[] ")
        key = line.partition("=")[0].strip()
        if current in ANNOTATED_SECTIONS and "=" in line and key in SECTIONS[current]:
            line = f"{line}  # {HELP[key]}"
        out.append(line)
    return "\n".join(out) + "\n"


def save(s: Settings, workspace: Path) -> Path:
    path = Path(workspace) / SETTINGS_FILE
    atomic.write_text(path, to_toml(s))
    return path


def load(workspace: Path, frozen: str | None = None) -> Settings:
    """Read and verify a workspace's settings; `frozen` is the file as init wrote it, when known
    (from git), so that a change names the setting that changed."""
    path = Path(workspace) / SETTINGS_FILE
    if not path.exists():
        raise SettingsError(
            f"{path} not found: run inside a workspace made by `autoresearch init DIR`"
        )
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SettingsError(
            f"{path} is not valid TOML ({e}); restore it with `git checkout -- {SETTINGS_FILE}`"
        ) from None
    values = _values(doc, path)
    if doc.get("frozen", {}).get("settings_sha256") != _hash_values(values):
        raise SettingsError(_changed_message(path, values, frozen))
    settings = _build(values)
    validate(settings)
    return settings


def _values(doc: dict[str, Any], path: Path) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for section, names in SECTIONS.items():
        table = doc.get(section, {})
        unknown = set(table) - set(names)
        if unknown:
            raise SettingsError(
                f"{path}: unknown key(s) {sorted(unknown)} in [{section}]; "
                f"restore it with `git checkout -- {SETTINGS_FILE}`"
            )
        values.update(table)
    return values


def _changed_message(path: Path, values: dict[str, Any], frozen: str | None) -> str:
    """Why an edited autoresearch.toml is refused: the first setting that differs from the frozen
    file (when that is known and intact), its frozen value and the new one, and what to do."""
    fix = (f"restore it with `git checkout -- {SETTINGS_FILE}`, or run `autoresearch init` "
           "for a new workspace with other settings")
    before: dict[str, Any] = {}
    try:
        doc = tomllib.loads(frozen or "")
        if doc.get("frozen", {}).get("settings_sha256") == _hash_values(_values(doc, path)):
            before = _values(doc, path)
    except (tomllib.TOMLDecodeError, SettingsError):
        pass
    changed = [key for key in HELP if key in before and before[key] != values.get(key)]
    if not changed:
        return f"{path} was changed after init (its values no longer match settings_sha256); {fix}"
    key = changed[0]
    more = f" (and {len(changed) - 1} other setting(s))" if len(changed) > 1 else ""
    new = repr(values[key]) if key in values else "missing"
    return (f"setting {key} was changed after init from {before[key]!r} to {new}{more}; settings are frozen "
            f"so that results stay comparable: {fix}")

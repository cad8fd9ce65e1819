"""How often is the keep rule right? Ground truth for a catalog of changes, and three rules replayed on it.

In one run, on one fresh cpu-preset workspace:
1. the catalog (bench/decisions_catalog.py): a baseline train.py and a dozen changes to it (gains,
   losses, null and near-null changes), each committed beside the branch;
2. quiet: the baseline and every change run `--repeats` times through the real harness (runner,
   out-of-process evaluator), round-robin over the variants, each round starting one variant later,
   so that drift of the machine hits all alike;
3. loaded: the same again while bench/loadgen.py keeps `--load-cores` cores busy, switched on and
   off at seeded random intervals;
4. labels: each change better, worse or no-difference than the baseline by a strict test on the
   quiet runs (|gain| > 3 standard errors, bench/decisions_replay.py); the held-out check of each
   change (would it turn a keep `invalid`?);
5. the rules replayed on resampled runs, no extra training (decisions_replay.py): ours (decide.py
   as the loop applies it), the reference's (one run that beats the best), a bootstrap (P(better)
   >= 0.95 over 3 runs each); quiet runs, then loaded runs, both against the quiet labels.

Prints each run as it is made, the labels, then for quiet and for loaded one line per rule:
    rule=NAME false_keep_rate=X missed_gain_rate=Y runs_per_decision=Z
Every run and label goes to a JSON file (`--out`); `--replay FILE` replays a saved file without
training (with `--set key=value` for other decision settings).

    python bench/decisions.py [--quick] [--budget 30] [--repeats 5] [--threads N] [--out FILE]
    python bench/decisions.py --replay bench/results/decisions_groundtruth.json [--set keep_z=2.5]

`--quick`: the changes marked quick (a gain, a loss, a null change), 3 repeats, a 15 s
budget: under 20 minutes on a 2-core machine (15.5 min of runs measured, BENCHMARKS.md).
The committed ground truth (bench/results/decisions_groundtruth.json, read by the tests) is
`--budget 10 --repeats 4`: the whole catalog, 104 runs, in under an hour on 2 cores.
`--extra` also replays variants of our rule that are not the loop's (decisions_replay.EXTRA_RULES),
to measure a change of the rule before making it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

from _workspace import machine, prepared_workspace
from decisions_catalog import BASELINE_EDITS, CATALOG, Change, baseline, changed
from decisions_replay import EXTRA_RULES, LABEL_Z, RULES, heldout_flagged, heldout_ratio, labels, replay, variants_of
from loadgen import LoadGenerator

from autoresearch import complexity, settings as settings_mod
from autoresearch.errors import SettingsError
from autoresearch.interference import Interference
from autoresearch.runner import Runner
from autoresearch.workspace import TRAIN_FILE

CANDIDATES = "refs/autoresearch/candidates/"
RESULTS = Path(__file__).parent / "results"
# A short budget trains the cpu preset for tens of steps: a smaller evaluation keeps the fixed
# cost of a run (start-up, two evaluations) from dominating it. The same tokens for every run.
EVAL_TOKENS = 32 * 1024
STARTUP_ALLOWANCE = 120.0  # a loaded 2-core machine starts a run slowly: not a timeout


def parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not value:
            raise SystemExit(f"--set takes key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def measure(args: argparse.Namespace, changes: list[Change]) -> dict:
    """Make every run; returns the ground-truth document (without replay results)."""
    overrides = {"time_budget": args.budget, "eval_tokens": args.eval_tokens, "startup_allowance": STARTUP_ALLOWANCE}
    ws, prepared = prepared_workspace("cpu", args.budget, args.cache, eval_tokens=args.eval_tokens,
                                      startup_allowance=STARTUP_ALLOWANCE)
    s = ws.settings()
    overrides["clock"] = s.clock  # what the replay's disturbed-run rule depends on
    env = {"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}
    runner = Runner(ws, s, prepared.data_sha256, extra_env=env)
    head = ws.git.head()
    template = ws.git.show(head, TRAIN_FILE).decode()
    base = baseline(template)
    sources = {"baseline": base, **{c.name: changed(base, c) for c in changes}}
    commits = {name: ws.git.commit_file(head, TRAIN_FILE, src.encode(), name, CANDIDATES) for name, src in sources.items()}
    names = list(sources)
    runs: dict[str, dict[str, list[dict]]] = {n: {"quiet": [], "loaded": []} for n in names}
    print(f"workspace {ws.root}: cpu preset, budget {args.budget:g} s, eval_tokens {args.eval_tokens}, "
          f"threads {args.threads or 'all'}; {len(names)} variants x {args.repeats} repeats, quiet then loaded "
          f"({args.load_cores} core(s) on/off at random 5-30 s intervals, seed {args.seed})")
    print(f"{'run':>5} {'condition':>9} {'variant':>26} {'val_bpb':>8} {'heldout':>8} {'steps':>5} "
          f"{'contention':>10} {'wall s':>6}", flush=True)
    count = 0

    def rounds(condition: str) -> None:
        nonlocal count
        for rnd in range(args.repeats):
            for name in names[rnd % len(names):] + names[:rnd % len(names)]:
                count += 1
                ws.git.move_branch(commits[name])
                r = runner.run(f"{count:04d}", commits[name])
                m = Interference.from_dict(r.interference)
                record = {"run_id": r.run_id, "round": rnd, "outcome": r.outcome, "val_bpb": r.val_bpb,
                          "heldout_bpb": r.heldout_bpb, "memory_gb": r.memory_gb,
                          "num_steps": r.summary.get("num_steps"), "training_seconds": r.summary.get("training_seconds"),
                          "contention": m.contention if m else None, "wall_seconds": r.wall_seconds,
                          "eval_seconds": r.eval_seconds, "error": r.error or None}
                runs[name][condition].append(record)
                print(f"{r.run_id:>5} {condition:>9} {name:>26} {r.val_bpb or 0:8.4f} {r.heldout_bpb or 0:8.4f} "
                      f"{r.summary.get('num_steps', 0):5.0f} {record['contention'] or 0:10.0%} {r.wall_seconds or 0:6.1f}"
                      f"{'' if r.outcome == 'ok' else '  ' + r.outcome + ': ' + (r.error or '')}", flush=True)

    started, load_start = time.monotonic(), os.getloadavg()
    rounds("quiet")
    load_mid = os.getloadavg()
    with LoadGenerator(args.load_cores) as gen:
        gen.random_schedule(args.seed)
        rounds("loaded")
    ws.git.move_branch(head)
    by_change = {c.name: c for c in changes}
    variants = []
    for name in names:
        c = by_change.get(name)
        variants.append({
            "name": name, "kind": c.kind if c else "baseline",
            "description": c.description if c else "the cpu preset's train.py with " + _edits_text(BASELINE_EDITS),
            "edits": [asdict(e) for e in (c.edits if c else BASELINE_EDITS)],
            "complexity": complexity.measure(sources[name]), **runs[name]})
    return {
        "benchmark": "bench/decisions.py", "date": str(date.today()), "machine": machine(),
        "mode": "quick" if args.quick else "full", "preset": "cpu", "overrides": overrides,
        "threads": args.threads, "repeats": args.repeats, "label_z": LABEL_Z,
        "load": {"cores": args.load_cores, "seed": args.seed},
        "loadavg": {"start": load_start, "after_quiet": load_mid, "end": os.getloadavg()},
        "minutes": round((time.monotonic() - started) / 60, 1), "variants": variants,
    }


def _edits_text(edits) -> str:
    return ", ".join(f"{e.target} = {e.text}" if e.op == "set" else f"{e.op} {e.target!r}" for e in edits)


def evaluate(doc: dict, trials: int, seed: int, decision: dict, extra: bool = False) -> dict:
    """Labels, held-out flags and the replayed rules; printed, and added to `doc`."""
    header, (base, measured) = doc, variants_of(doc)
    s = settings_mod.from_preset(header["preset"], **header["overrides"], **decision)
    changes = [c for c in measured if len(c.quiet) >= 2 and c.loaded]
    for c in measured:
        if c not in changes:
            print(f"{c.name}: left out, too few finished runs ({len(c.quiet)} quiet, {len(c.loaded)} loaded)")
    truth = labels(base, changes, header.get("label_z", LABEL_Z))
    base_ratio = heldout_ratio(base.quiet)
    contention = [r.contention for v in (base, *changes) for r in v.quiet if r.contention is not None]
    loaded_contention = [r.contention for v in (base, *changes) for r in v.loaded if r.contention is not None]
    print(f"baseline: val_bpb {statistics.fmean(r.val_bpb for r in base.quiet):.4f} over {len(base.quiet)} quiet runs, "
          f"held-out/val {base_ratio:.3f}")
    if contention:
        print(f"contention of the quiet runs: median {statistics.median(contention):.0%}, max {max(contention):.0%}, "
              f"{sum(c > s.max_interference for c in contention)} of {len(contention)} above max_interference; "
              f"loaded runs: median {statistics.median(loaded_contention or [0]):.0%}")
    print(f"{'change':>26} {'kind':>9} {'label':>13} {'gain':>8} {'se':>7} {'z':>6} {'held-out/val':>12} {'flagged':>7}")
    out = {}
    for c in changes:
        lab, ratio = truth[c.name], heldout_ratio(c.quiet)
        flagged = heldout_flagged(base.quiet, c.quiet, s.heldout_tolerance)
        out[c.name] = {**asdict(lab), "heldout_ratio": ratio, "baseline_heldout_ratio": base_ratio,
                       "heldout_flagged": flagged}
        print(f"{c.name:>26} {c.kind:>9} {lab.label:>13} {lab.gain:+8.4f} {lab.se:7.4f} {lab.z:+6.1f} "
              f"{ratio or 0:12.3f} {'yes' if flagged else 'no':>7}")
    results = {}
    for condition in ("quiet", "loaded"):
        if not all(v.runs(condition) for v in (base, *changes)):
            continue
        rules = {**RULES, **(EXTRA_RULES if extra else {})}
        scores = replay(base, changes, truth, s, condition, trials, seed, rules)
        print(f"{condition}: labels from the quiet runs, decisions on the {condition} runs ({trials} per change):")
        keep = "  ".join(c.name + "=" + "/".join(f"{scores[r].per_change[c.name]['keep_rate']:.2f}" for r in rules)
                         for c in changes)
        print(f"  keep rates ({'/'.join(rules)}): {keep}")
        for name, score in scores.items():
            print(score.line(name))
        results[condition] = {name: score.as_dict() for name, score in scores.items()}
    doc["labels"] = out
    rule = {k: getattr(s, k) for k in ("baseline_runs", "keep_z", "keep_runs", "confirm_z", "confirm_runs",
                                         "min_noise", "max_slowdown", "disturbed_retries")}
    doc["replay"] = {"trials": trials, "seed": seed, "decision_settings": decision, "rule": rule, "results": results}
    return doc


GROUND_TRUTH_KEYS = ("machine", "date", "mode", "preset", "overrides", "repeats", "variants")


def read_ground_truth(path: Path) -> dict:
    """A saved document of this benchmark, or SystemExit saying what is wrong with the file."""
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise SystemExit(f"cannot read {path}: {e.strerror}; --replay takes a file this benchmark wrote "
                         f"(bench/results/decisions_groundtruth.json)") from e
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path} is not JSON ({e}); --replay takes a file this benchmark wrote") from e
    missing = [k for k in GROUND_TRUTH_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing:
        raise SystemExit(f"{path} is not a ground-truth file of bench/decisions.py: no {', '.join(missing)}")
    return doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick changes, 3 repeats, a 15 s budget")
    parser.add_argument("--budget", type=float, help="training seconds per run (default 30; quick 15)")
    parser.add_argument("--repeats", type=int, help="runs of each variant, quiet and loaded alike (default 5; quick 3)")
    parser.add_argument("--eval-tokens", type=int, default=EVAL_TOKENS, help="tokens the evaluation scores")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of each run (default: torch's, every core)")
    parser.add_argument("--load-cores", type=int, default=1, help="cores the load keeps busy while on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the load's schedule and of the replay")
    parser.add_argument("--trials", type=int, default=2000, help="replayed decisions per change and rule")
    parser.add_argument("--out", help="where the JSON goes (default bench/results/decisions_{quick,groundtruth}.json; "
                        "with --replay: written only when given)")
    parser.add_argument("--replay", help="replay a saved JSON file instead of training")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a decision setting for the replay (e.g. keep_z=2.5); repeatable")
    parser.add_argument("--extra", action="store_true",
                        help="also replay the variants of our rule in decisions_replay.EXTRA_RULES")
    parser.add_argument("--cache", help="data cache folder (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)")
    args = parser.parse_args()
    decision = parse_set(args.set)
    if args.replay:
        doc = read_ground_truth(Path(args.replay))
        print(f"replaying {args.replay}: {doc['machine']}; {doc['date']}; {doc['mode']} mode, budget "
              f"{doc['overrides']['time_budget']:g} s, {doc['repeats']} repeats")
        try:
            doc = evaluate(doc, args.trials, args.seed, decision, args.extra)
        except SettingsError as e:
            raise SystemExit(f"--set: {e}") from e
        if args.out:  # the runs as they were, the labels and the replay as they are now
            Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
            print(f"written: {args.out}")
        return
    args.budget = args.budget or (15.0 if args.quick else 30.0)
    args.repeats = args.repeats or (3 if args.quick else 5)
    changes = [c for c in CATALOG if c.quick or not args.quick]
    out = Path(args.out) if args.out else RESULTS / f"decisions_{'quick' if args.quick else 'groundtruth'}.json"
    print(f"machine: {machine()}; {date.today()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    doc = measure(args, changes)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")  # the runs first: nothing measured is lost
    print(f"{doc['minutes']:.1f} min of runs; load average at the start {doc['loadavg']['start'][0]:.2f}, "
          f"after the quiet runs {doc['loadavg']['after_quiet'][0]:.2f}, at the end {doc['loadavg']['end'][0]:.2f}")
    doc = evaluate(doc, args.trials, args.seed, decision, args.extra)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    sys.exit(main())

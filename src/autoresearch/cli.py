"""The `autoresearch` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoresearch.errors import AutoresearchError

DESCRIPTION = """\
Autonomous LLM-pretraining research on this machine.

A proposer changes train.py; the harness trains it for a fixed time budget, measures val_bpb
(validation bits per byte, lower is better) in its own evaluator, logs the result to
results.tsv, and keeps the git commit only when the gain is clear of the measured noise.

Start here:
  autoresearch init my-research            # a workspace (git repo) for this machine's preset
  cd my-research && autoresearch prepare   # data + tokenizer (offline default: Python's stdlib)
  autoresearch loop --max-experiments 20   # baseline, then experiments by the built-in search
  autoresearch status                      # best result, noise, recent experiments
"""


def build_parser() -> argparse.ArgumentParser:
    from autoresearch.data.sources import dataset_names
    from autoresearch.settings import PRESETS

    parser = argparse.ArgumentParser(
        prog="autoresearch", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="create a research workspace (a git repository)",
                       description="Create a research workspace: train.py, program.md, prepare.py, "
                       "autoresearch.toml and a first git commit.")
    p.add_argument("directory", type=Path, help="new folder for the workspace")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="settings preset; default: picked from this machine's hardware. "
                   + "; ".join(f"{k}: {v.summary}" for k, v in PRESETS.items()))
    p.add_argument("--dataset", help=f"dataset: {', '.join(dataset_names())} (default: the preset's)")
    p.add_argument("--budget", type=float, metavar="SECONDS", help="training time per experiment (default: the preset's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any other setting of autoresearch.toml, e.g. --set eval_tokens=65536")

    p = sub.add_parser("prepare", help="download/build the data and tokenizer of this workspace",
                       description="Download (hub datasets) or read (local datasets) the corpus, train the "
                       "tokenizer and write token shards into the shared cache "
                       "($AUTORESEARCH_CACHE, default ~/.cache/autoresearch). Resumes where it stopped.")
    p.add_argument("--endpoint", help="hub endpoint for climbmix/tinystories (default: $HF_ENDPOINT or huggingface.co)")
    p.add_argument("--verify", action="store_true", help="also check every shard against its recorded checksum")
    return parser


def _parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AutoresearchError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def cmd_init(args: argparse.Namespace) -> int:
    from autoresearch import devices, settings, workspace

    preset = args.preset
    if preset is None:
        preset = devices.preset_for_machine()
        print(f"picked preset '{preset}' for this machine: {devices.describe()} (choose with --preset)")
    overrides = _parse_overrides(args.set)
    s = settings.from_preset(preset, dataset=args.dataset, time_budget=args.budget, **overrides)
    ws = workspace.init(args.directory, s)
    print(f"created workspace {ws.root} (preset {s.preset}, dataset {s.dataset}, budget {s.time_budget:g} s)")
    print(f"next: cd {ws.root} && autoresearch prepare")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from autoresearch import workspace
    from autoresearch.data.prepare import prepare

    ws = workspace.find()
    prepared = prepare(ws.settings(), endpoint=args.endpoint)
    if args.verify:
        prepared.verify()
        print("all shards match their checksums")
    return 0


COMMANDS = {"init": cmd_init, "prepare": cmd_prepare}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return COMMANDS[args.command](args)
    except AutoresearchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""What `--help` and `--version` say beyond the flags: the version, and examples for each subcommand.

cli.py builds the parser; `finish` then gives every subcommand an `Examples:` epilog, keeping the
descriptions wrapped to the terminal while the examples keep their layout.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap
from importlib import metadata

EXAMPLES: dict[str, str] = {
    "init": """\
  autoresearch init my-research                     # preset picked from this machine's hardware
  autoresearch init my-research --preset tiny       # a quick CPU try-out
  autoresearch init gpu-run --budget 600 --set eval_tokens=65536""",
    "prepare": """\
  autoresearch prepare                              # data and tokenizer of this workspace
  autoresearch prepare --verify                     # also check every shard's checksum
  autoresearch prepare --endpoint https://hf-mirror.com""",
    "run": """\
  $EDITOR train.py && autoresearch run -m "warmup 2% instead of 5%"
  autoresearch run -m "larger batch" --tag batch-study""",
    "loop": """\
  autoresearch loop --max-experiments 20            # built-in search, offline
  autoresearch loop --hours 8 --proposer llm --provider anthropic --model claude-sonnet-4-20250514
  autoresearch loop --agent claude --max-experiments 10
  autoresearch loop --workers 4 --hours 2           # four runs at once on this machine
  autoresearch loop --track mlflow --track tensorboard   # also into experiment trackers (offline)
  autoresearch loop --notify https://hooks.example.com/x  # a webhook: kept changes, crashes, the end""",
    "rebaseline": """\
  autoresearch rebaseline -m "accept the reset to abc1234"   # after a refused branch move
  autoresearch rebaseline                           # measure the best again, on demand""",
    "audit": """\
  autoresearch audit                                # each kept change and the baseline run once more
  autoresearch audit --runs 3                       # three rounds: smaller standard errors
  autoresearch audit --runs 0 --json | jq .counts   # the verdicts of the audit runs recorded so far""",
    "status": """\
  autoresearch status                               # summary and the last 12 runs
  autoresearch status --last 40 --rule              # more runs, the whole keep rule
  autoresearch status | less                        # piped: plain text, runs tab-separated
  autoresearch status --json | jq .best             # the state document (docs/json.md)""",
    "logs": """\
  autoresearch logs last                            # train.log of the newest run
  autoresearch logs 0003                            # of run 0003 (run_id in results.tsv)
  autoresearch logs last -f                         # follow the run under way; Ctrl-C stops""",
    "report": """\
  autoresearch report                               # progress.png and report.html in the workspace
  autoresearch report ~/old-runs --out /tmp/r       # any folder with a results.tsv
  autoresearch report --json | jq .summary          # the state document (docs/json.md)""",
    "ledger": """\
  autoresearch ledger check                         # results.tsv against the run folders; exit 1 if wrong
  autoresearch ledger check --repair                # restore missing rows, set damaged lines aside""",
    "track": """\
  autoresearch track --mlflow                       # every run into ./mlflow.db (then: mlflow ui)
  autoresearch track --tensorboard --wandb          # event files in runs/NNNN/tb/, W&B offline runs""",
    "export-best": """\
  autoresearch export-best best-model               # model.pt2, train.py, run record, settings, README""",
    "dashboard": """\
  autoresearch dashboard                            # http://127.0.0.1:8765/
  autoresearch dashboard ~/my-research --port 0     # any free port; the URL is printed""",
}


def version() -> str:
    """The installed package's version (its metadata), or the source tree's when not installed."""
    try:
        return metadata.version("autoresearch")
    except metadata.PackageNotFoundError:
        from autoresearch import __version__

        return __version__


def finish(sub: argparse._SubParsersAction) -> None:
    """Give each subcommand its examples (an `Examples:` epilog) and keep its layout in --help."""
    width = max(40, min(shutil.get_terminal_size().columns, 120) - 2)
    for name, parser in sub.choices.items():
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        if parser.description:
            parser.description = textwrap.fill(parser.description, width)
        if name in EXAMPLES:
            parser.epilog = "Examples:\n" + EXAMPLES[name]

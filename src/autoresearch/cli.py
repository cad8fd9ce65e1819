"""The `autoresearch` command line."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from autoresearch.errors import AutoresearchError
from autoresearch.progress import EVERY_S

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
  autoresearch report                      # progress.png and report.html
"""


def build_parser() -> argparse.ArgumentParser:
    from autoresearch import clihelp
    from autoresearch.data.sources import dataset_names
    from autoresearch.proposers import NAMES as PROPOSERS
    from autoresearch.proposers.cmd import AGENTS
    from autoresearch.settings import PRESETS

    parser = argparse.ArgumentParser(
        prog="autoresearch", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"autoresearch {clihelp.version()}")
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

    p = sub.add_parser("run", help="run one experiment: the change to train.py in the working tree",
                       description="Commit the change to train.py, train it for the budget, evaluate it in the "
                       "harness's evaluator, record it in results.tsv and keep or reset it. The first call measures "
                       "the baseline (and its noise) first. This is the verb an external coding agent uses.")
    p.add_argument("-m", "--message", default="", help="one line: what changed and why")
    p.add_argument("--tag", help="research branch autoresearch/TAG (default: the current one, or today's date)")
    _add_quiet(p)
    _add_track(p)

    p = sub.add_parser("rebaseline", help="measure the current commit anew as the best (a new baseline)",
                       description="Measure HEAD as a new baseline (baseline_runs runs, kind `rebaseline` in "
                       "results.tsv); it is the best from then on. Accepts on purpose a branch reset, amended or "
                       "replaced outside the harness (which `run` and `loop` refuse), or re-measures the best.")
    p.add_argument("-m", "--message", default="", help="one line: why")
    _add_quiet(p)

    p = sub.add_parser("audit", help="run the kept changes again: do their gains reproduce?",
                       description="Run the baseline and every kept change that leads to the best again (--runs "
                       "times each, in rounds; kind `audit` in results.tsv, joining the noise estimate) and report "
                       "per kept change whether its gain reproduces within the noise: reproduces, smaller, does not "
                       "reproduce, or unclear (docs/decisions.md). A stopped audit resumes where it stopped. The "
                       "branch stays at the best.")
    p.add_argument("--runs", type=int, default=1, metavar="N",
                   help="audit runs of each commit (default: %(default)s; 0: no runs, the report of those recorded)")
    p.add_argument("--json", action="store_true", help="print the audit as JSON (docs/json.md); the runs' lines go "
                   "to stderr")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="runs at once, as the research ran them "
                   "(results are compared only among runs made with the same parallelism; default: %(default)s)")
    _add_quiet(p)

    p = sub.add_parser("loop", help="run experiments autonomously until a limit",
                       description="Measure the baseline, then propose, run and decide experiments until "
                       "--max-experiments or --hours is reached (or Ctrl-C). Resumes where it stopped.")
    p.add_argument("--proposer", choices=PROPOSERS,
                   help="who proposes changes: search (built-in, offline; the default), llm (a chat model), cmd (a "
                   "coding-agent CLI); default: [proposer] name in autoresearch.toml, else search")
    p.add_argument("--max-experiments", type=int, metavar="N", help="stop after N experiments")
    p.add_argument("--hours", type=float, metavar="H", help="stop starting experiments after H hours")
    p.add_argument("--tag", help="research branch autoresearch/TAG (default: the current one, or today's date)")
    p.add_argument("--seed", type=int, help="seed of the search proposer")
    _add_quiet(p)
    _add_track(p)
    g = p.add_argument_group("llm proposer (docs/proposers.md; defaults from [proposer] in autoresearch.toml)")
    g.add_argument("--provider", help="openai (OpenAI or any OpenAI-compatible server) or anthropic")
    g.add_argument("--model", help="model name, e.g. gpt-4.1 or claude-sonnet-4-20250514 (cmd: passed to the agent)")
    g.add_argument("--base-url", metavar="URL", help="endpoint, e.g. http://127.0.0.1:11434/v1 (Ollama)")
    g.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key "
                   "(default OPENAI_API_KEY / ANTHROPIC_API_KEY); keys are never stored")
    g.add_argument("--context-tokens", type=int, metavar="N", help="token budget of the prompt")
    g = p.add_argument_group("cmd proposer")
    g.add_argument("--agent", choices=list(AGENTS), help="coding agent preset (the cmd proposer with its command line)")
    g.add_argument("--command", dest="agent_command", metavar="TEMPLATE",
                   help="custom agent command; placeholders {prompt} {prompt_file} {workspace} {description_file} "
                        "{proposal_dir} {model} {model_args} {data_dir}")
    g.add_argument("--agent-timeout", type=float, metavar="SECONDS", help="time limit of the agent per proposal")
    g.add_argument("--agent-idle-timeout", type=float, metavar="SECONDS",
                   help="end the agent after this long without new output or file change (0: never; default 300)")
    g = p.add_argument_group("scale (docs/scale.md)")
    g.add_argument("--workers", type=int, metavar="N", help="runs at once (default 1): one GPU each, or an equal share "
                   "of the CPU cores; with --executor ray, Ray tasks at once")
    g.add_argument("--executor", choices=("local", "ray"), help="where runs go: local (this machine; the default with "
                   "--workers) or ray (a Ray cluster; pip install 'autoresearch[ray]')")
    g.add_argument("--ray-address", metavar="ADDR", help="the Ray cluster to join, e.g. 10.0.0.1:6379 "
                   "(default: start a local one)")
    g.add_argument("--cpus-per-run", type=int, metavar="N", help="ray executor, CPU presets: CPUs each run asks "
                   "for (default: the cluster's CPUs / --workers)")
    g = p.add_argument_group("spending caps (this loop call; failed proposals count)")
    g.add_argument("--max-cost", type=float, metavar="USD", help="stop proposing once this much was spent")
    g.add_argument("--max-tokens", type=int, metavar="N", help="stop proposing once this many tokens were spent")

    p = sub.add_parser("status", help="best result, noise, the keep rule and the last experiments",
                       description="The summary (baseline, best, gain, noise, pace, cost) and the last runs. On a "
                       "terminal a table fitted to its width; piped, plain text with the runs tab-separated.")
    p.add_argument("--last", type=int, default=12, metavar="N",
                   help="how many recent runs to list (default: %(default)s)")
    p.add_argument("--rule", action="store_true", help="show the whole keep rule with its numbers, not one line")
    p.add_argument("--json", action="store_true", help="print the state document as JSON (docs/json.md), the "
                   "dashboard's /api/state")
    p = sub.add_parser("logs", help="print a run's train.log (-f: follow the run under way)",
                       description="Print the train.log of a run of this workspace. RUN is a run id as in the run_id "
                       "column of results.tsv (e.g. 0003), or `last` for the newest run.")
    p.add_argument("run", metavar="RUN", help="run id (e.g. 0003) or `last`")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what the run writes until it has "
                   "ended (Ctrl-C stops following)")
    p = sub.add_parser("ledger", help="check results.tsv against the run folders (and repair it)")
    p = p.add_subparsers(dest="action", metavar="ACTION", required=True).add_parser(
        "check", help="report (and with --repair mend) what is wrong with results.tsv",
        description="Report damaged lines, rows missing from results.tsv that the run folders hold, duplicate "
        "rows and rows whose run folder is gone; exit 1 if something is wrong. --repair rebuilds results.tsv from "
        "its readable rows and the run folders, moving damaged lines to results.tsv.damaged: nothing is dropped.")
    p.add_argument("folder", nargs="?", type=Path, help="folder holding results.tsv and runs/ (default: the "
                   "workspace around the current folder, else the current folder)")
    p.add_argument("--repair", action="store_true", help="restore missing rows, set damaged lines aside")
    _add_report_parsers(sub)
    _add_tracking_parsers(sub)
    clihelp.finish(sub)
    return parser


def _add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no live progress line while a run trains (by default: an updating line on a terminal, "
                   f"a line every {EVERY_S:g} s otherwise)")


def _add_track(p: argparse.ArgumentParser) -> None:
    from autoresearch.tracking import NAMES

    p.add_argument("--track", action="append", choices=NAMES, metavar="NAME",
                   help=f"also write each run into an experiment tracker ({', '.join(NAMES)}; repeatable; default: "
                   "[tracking] trackers in autoresearch.toml); offline by default, see docs/tracking.md")
    p.add_argument("--notify", action="append", metavar="URL",
                   help="POST a JSON document to this webhook (http/https) when a change is kept, runs crash "
                   "repeatedly, or the loop ends (repeatable; default: [tracking] notify in autoresearch.toml)")


def _add_tracking_parsers(sub) -> None:
    from autoresearch.tracking import NAMES

    p = sub.add_parser("track", help="write the runs of this workspace into experiment trackers",
                       description="Write every ledger row with its run folder into MLflow, Weights & Biases or "
                       "TensorBoard, as `loop --track` does live (docs/tracking.md). Runs a tracker already holds "
                       "are skipped, so it can run at any time.")
    for name in NAMES:
        p.add_argument(f"--{name}", dest="trackers", action="append_const", const=name, help=f"write into {name}")
    p = sub.add_parser("export-best", help="export the best model with its train.py, run record and settings",
                       description="Copy the best commit's handed-over model (a torch.export program), its train.py, "
                       "its run record, the settings and the tokenizer into DIR, with a README on loading, "
                       "evaluating and sampling.")
    p.add_argument("directory", type=Path, metavar="DIR", help="new (or empty) folder for the export")


def cmd_track(args: argparse.Namespace) -> int:
    from autoresearch import workspace
    from autoresearch.tracking.backfill import backfill

    backfill(workspace.find(), args.trackers)
    return 0


def cmd_export_best(args: argparse.Namespace) -> int:
    from autoresearch import workspace
    from autoresearch.export import export_best

    e = export_best(workspace.find(), args.directory)
    print(f"exported the best model (commit {e.commit[:7]}, run {e.run_id}, val_bpb {e.val_bpb}) to {e.folder}; "
          "see its README.md")
    return 0


# --- report and dashboard (seeing the research) ------------------------------------------------


def _add_report_parsers(sub) -> None:
    from autoresearch.report.dashboard import DEFAULT_INTERVAL, DEFAULT_PORT

    folder_help = ("folder holding results.tsv (and runs/): a workspace, or any folder with a reference-format "
                   "results.tsv; default: the workspace around the current folder, else the current folder")
    p = sub.add_parser("report", help="write progress.png and a self-contained report.html",
                       description="Plot every run (progress.png) and write report.html: the summary, the kept "
                       "changes with their gains, and each run's diff and loss curve against the baseline's. "
                       "Works from results.tsv and the run folders alone, also on a plain reference results.tsv.")
    p.add_argument("folder", nargs="?", type=Path, help=folder_help)
    p.add_argument("--out", type=Path, metavar="DIR", help="where to write the files (default: the folder itself)")
    p.add_argument("--json", action="store_true", help="print the state document as JSON instead (docs/json.md): "
                   "the same as `status --json` and the dashboard's /api/state")
    p = sub.add_parser("dashboard", help="a live, read-only web page of the research (on 127.0.0.1)",
                       description="Serve a local web page that follows the research while the loop runs: the run "
                       "under way (loss curve, time left), the ledger, the best so far. Listens on 127.0.0.1 only "
                       "and changes nothing. Ctrl-C stops it.")
    p.add_argument("folder", nargs="?", type=Path, help=folder_help)
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--interval", type=float, default=DEFAULT_INTERVAL, metavar="SECONDS",
                   help=f"how often the page refreshes (default {DEFAULT_INTERVAL:g})")


def cmd_report(args: argparse.Namespace) -> int:
    from autoresearch.report.build import build

    from autoresearch.report.reading import results_folder

    if args.json:
        return print_state(results_folder(args.folder, "report"))
    built = build(results_folder(args.folder, "report"), args.out, warn=lambda line: print(line, file=sys.stderr))
    print(f"wrote {built.progress}")
    print(f"wrote {built.report}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from autoresearch.report.dashboard import serve

    from autoresearch.report.reading import results_folder

    serve(results_folder(args.folder, "dashboard"), port=args.port, interval_s=args.interval)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from autoresearch import devices, initsettings, workspace

    asked = initsettings.request(args.preset, args.dataset, args.budget, args.set)
    preset = asked.preset
    if preset is None:
        preset = devices.preset_for_machine()
        print(f"picked preset '{preset}' for this machine: {devices.describe()} (choose with --preset)")
    s = asked.settings(preset)
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


def cmd_run(args: argparse.Namespace) -> int:
    from autoresearch.loop import Loop

    with stopped_by_signals("autoresearch run"), Loop.open(tag=args.tag, edited_train=True, track=args.track,
                                                             notify=args.notify) as loop, \
            _progress(loop, args):
        rows = loop.run_edit(args.message)
    if rows is None:
        print("train.py is unchanged: edit it, then `autoresearch run -m \"what changed\"`")
        return 0
    return 0 if rows[0].status in ("keep", "discard") else 3


def cmd_rebaseline(args: argparse.Namespace) -> int:
    from autoresearch.loop import Loop

    with stopped_by_signals("autoresearch rebaseline"), Loop.open(accept=True) as loop, _progress(loop, args):
        loop.rebaseline(args.message)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import json

    from autoresearch.errors import SettingsError
    from autoresearch.loop import Loop

    if args.runs < 0:
        raise SettingsError(f"--runs must be 0 or more, got {args.runs}")
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    with stopped_by_signals("autoresearch audit"), Loop.open(log=say, workers=args.workers) as loop, \
            _progress(loop, args, args.json):
        report = loop.audit(args.runs)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, allow_nan=False))
    else:
        print("\n".join(report.lines()))
    return 0


def proposer_settings(name: str | None, args: argparse.Namespace):
    """The proposer's configuration: [proposer] in autoresearch.toml, overridden by the flags."""
    from autoresearch import workspace
    from autoresearch.errors import WorkspaceError
    from autoresearch.proposers import config as proposer_config

    try:
        base = proposer_config.load(workspace.find().root)
    except WorkspaceError:
        base = proposer_config.ProposerConfig()
    flags = dict(name=name, seed=args.seed, provider=args.provider, model=args.model, base_url=args.base_url,
                 api_key_env=args.api_key_env, context_tokens=args.context_tokens, agent=args.agent,
                 command=args.agent_command, agent_timeout=args.agent_timeout, max_cost=args.max_cost,
                 agent_idle_timeout=args.agent_idle_timeout,
                 max_tokens=args.max_tokens)
    if name is None and (args.agent or args.agent_command):
        flags["name"] = "cmd"  # --agent/--command alone say which proposer
    return base.replace(**flags)


def cmd_loop(args: argparse.Namespace) -> int:
    from autoresearch import proposers
    from autoresearch.loop import Loop
    from autoresearch.research import Limits

    config = proposer_settings(args.proposer, args)
    proposer = proposers.create(config)
    if config.name == "llm":  # the client holds the key now: training runs and their logs never see it
        os.environ.pop(config.key_env(), None)
    limits = Limits(max_experiments=args.max_experiments, hours=args.hours, max_cost=config.max_cost,
                    max_tokens=config.max_tokens)
    resume = "autoresearch loop" + (f" --workers {args.workers}" if (args.workers or 1) > 1 else "") + (
        f" --executor {args.executor}" if args.executor == "ray" else "")
    with stopped_by_signals(resume), Loop.open(
            tag=args.tag, workers=args.workers or 1, executor=args.executor or "local",
            ray_address=args.ray_address, cpus_per_run=args.cpus_per_run, track=args.track,
            notify=args.notify) as loop:
        with _progress(loop, args):
            loop.run(proposer, limits)
        print(loop.closing_line())
    return 0


def _progress(loop, args: argparse.Namespace, stderr: bool = False):
    from rich.console import Console

    from autoresearch.progress import LiveProgress

    console = Console(highlight=False, stderr=stderr)
    return LiveProgress(loop.ws.root, loop.settings.time_budget, console=console, enabled=not args.quiet)


class Interrupted(Exception):
    """The loop was stopped by a signal; it ended its runs and can be resumed."""

    def __init__(self, signal_name: str, exit_code: int, resume: str) -> None:
        super().__init__(f"interrupted ({signal_name}): nothing recorded is lost; resume with `{resume}`")
        self.exit_code = exit_code


@contextlib.contextmanager
def stopped_by_signals(resume: str):
    """Ctrl-C, SIGTERM and SIGHUP end the runs under way (interrupts.py), then say how to resume."""
    from autoresearch.interrupts import Interrupts

    with Interrupts() as signals:
        try:
            yield
        except KeyboardInterrupt:
            name = signals.received.name if signals.received else "SIGINT"
            raise Interrupted(name, signals.exit_code, resume) from None


def print_state(folder: Path) -> int:
    """The state document of `folder` on stdout (its warnings on stderr): status --json, report --json."""
    import json

    from autoresearch.report.state import document

    doc = document(folder)
    for line in doc["warnings"]:
        print(line, file=sys.stderr)
    print(json.dumps(doc, indent=2, allow_nan=False))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from autoresearch import ledger_check, status, workspace

    ws = workspace.find()
    if args.json:
        return print_state(ws.root)
    contents, warnings = ledger_check.read_for_display(ws.ledger_path, ws.runs_dir) \
        if ws.ledger_path.exists() else (None, [])
    for line in warnings:
        print(line, file=sys.stderr)
    status.render(contents.rows if contents else [], ws.settings(), last=args.last, rule=args.rule)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from autoresearch import logs
    from autoresearch.report.reading import results_folder

    folder = results_folder(None, "logs")
    try:
        logs.show(folder, logs.resolve(folder, args.run), follow=args.follow)
    except BrokenPipeError:  # `autoresearch logs last | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_ledger(args: argparse.Namespace) -> int:
    from autoresearch.ledger_check import run_check

    from autoresearch.report.reading import results_folder

    return run_check(results_folder(args.folder, "ledger check"), fix=args.repair)


COMMANDS = {"init": cmd_init, "prepare": cmd_prepare, "run": cmd_run, "loop": cmd_loop, "status": cmd_status}
COMMANDS.update(report=cmd_report, dashboard=cmd_dashboard, logs=cmd_logs, ledger=cmd_ledger, rebaseline=cmd_rebaseline)
COMMANDS.update({"track": cmd_track, "export-best": cmd_export_best, "audit": cmd_audit})


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
    except Interrupted as e:
        print(e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Run one experiment: `python train.py` under the harness's clock, then the harness's evaluator.

1. Launch train.py in its own session and process group, its output going to `train.log` in
   the run folder, with a pipe for the hand-over (handover.py).
2. Own the clock: the time of the hand-over is read on the runner's monotonic clock, and on the
   `cpu` clock (clock.py) from the kernel's CPU times of the run; at the hard limit (wall time)
   the whole process group is killed (`timeout`).
3. When the hand-over arrives, copy the exported model and hash it at once: whatever train.py
   does afterwards cannot change what is evaluated.
4. After train.py exits: end every process of the run (the group, and any that left it); then
   containment.py undoes what it changed: the fixed files, the ledger, the git state and the
   harness code (changed: `invalid`, and restored), train.py and other tracked files (reverted,
   flagged), files it created outside its run folder (removed, flagged).
5. Evaluate the handed-over model in a process of the harness's own (evaluator.py), started
   with train.py so that it is ready (torch imported, data verified and in memory) when train.py
   exits; should it have died (train.py may kill it), a fresh one is started. Its val_bpb is the
   result; what train.py printed is compared with it and only flags the run when they differ.

The outcome is `ok`, `crash`, `timeout` or `invalid`; the loop turns `ok` into keep/discard.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoresearch import atomic, containment, guard, processes
from autoresearch.clock import CPU_CLOCK_ENV, run_clock_seconds
from autoresearch.compilecache import compile_env
from autoresearch.crashlog import crash_cause
from autoresearch.data.prepare import cache_root
from autoresearch.data.shards import file_sha256
from autoresearch.evaluator import EvalSpec
from autoresearch.handover import ENV_HANDOVER_FD, ENV_RUN_DIR
from autoresearch.interference import Meter, run_demand
from autoresearch.nvml import GpuSampler
from autoresearch.rundir import (
    EVAL_FILE,
    HANDED_OVER,
    INPROCESS_RECORD,
    LOG_FILE,
    MODEL_FILE,
    RunResult,
    now,
    parse_summary,
    tail,
)
from autoresearch.settings import Settings
from autoresearch.workspace import TRAIN_FILE, Workspace

PRINTED_TOLERANCE = 1e-3  # |printed - measured| val_bpb beyond which a run is flagged
GROUP_GRACE = 3.0  # seconds the run's helpers get to exit after train.py did


def _last_json_line(text: str) -> dict | None:
    """The evaluator's result: the last line of its stdout that is a JSON object."""
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


@dataclass
class _Attempt:
    """State of one run while it is under way."""

    run_dir: Path
    result: RunResult
    group: int | None = None
    known: set[int] = field(default_factory=set)
    model_sha256: str | None = None
    device: str = "cpu"
    demand: float = 1.0  # cores the run wants (interference.run_demand)
    autocast: str | None = None
    evaluator: subprocess.Popen | None = None  # started with train.py, waiting for the model
    scratch: Path | None = None  # the evaluator's working folder


@dataclass
class Runner:
    """Runs experiments of one workspace. Create it once per loop: it snapshots the harness code."""

    ws: Workspace
    settings: Settings
    data_sha256: str
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)
    runs_dir: Path | None = None  # where run folders go (default: the workspace's runs/)
    package: dict[Path, bytes] = field(default_factory=guard.package_files, repr=False)

    def __post_init__(self) -> None:
        processes.become_subreaper()
        processes.mark_harness()

    def run(self, run_id: str, commit: str) -> RunResult:
        run_dir = (self.runs_dir or self.ws.runs_dir) / run_id
        if run_dir.exists():  # an attempt that was interrupted: start it over
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        result = RunResult(run_id=run_id, commit=commit, outcome="ok", started=now())
        attempt = _Attempt(run_dir, result)
        before = containment.take(self.ws, package=self.package)
        try:
            self._start_evaluator(attempt)
            self._train(attempt)
            self._contain(attempt, before)
            (run_dir / MODEL_FILE).unlink(missing_ok=True)  # train.py's own export; the copy is what counts
            if result.outcome in ("ok", "timeout") and result.handover_seconds is not None and not result.error:
                self._evaluate(attempt)
        finally:
            self._stop_evaluator(attempt)
        result.ended = now()
        result.save(run_dir)
        return result

    # --- 1-3: training under the runner's clock ---------------------------------------------

    def _train(self, attempt: _Attempt) -> None:
        run_dir, result = attempt.run_dir, attempt.result
        read_fd, write_fd = os.pipe()
        env = self._environment()
        env.update({
            ENV_RUN_DIR: str(run_dir),
            ENV_HANDOVER_FD: str(write_fd),
            processes.ENV_RUN_ID: processes.run_key(run_dir),
            "PYTHONUNBUFFERED": "1",
        })
        if self.settings.clock == "cpu":
            env.update(CPU_CLOCK_ENV)
        limit = self.settings.effective_hard_limit
        device = {"gpu": "cuda", "mps": "mps"}.get(self.settings.preset, "cpu")
        attempt.demand = run_demand(env, device)
        meter = Meter(attempt.demand, gpu=GpuSampler.open(env) if device == "cuda" else None)
        with open(run_dir / LOG_FILE, "wb") as log:
            meter.start()
            started = time.monotonic()
            proc = subprocess.Popen(
                [self.python, TRAIN_FILE], cwd=self.ws.root, env=env, stdout=log, stderr=subprocess.STDOUT,
                pass_fds=(write_fd,), start_new_session=True,
            )
            os.close(write_fd)
            attempt.group = proc.pid
            attempt.known.add(proc.pid)
            buffer = b""
            sel = selectors.DefaultSelector()
            sel.register(read_fd, selectors.EVENT_READ)
            pipe_open = True
            checked = started
            while proc.poll() is None:
                remaining = limit - (time.monotonic() - started)
                if remaining <= 0:
                    result.outcome = "timeout"
                    result.error = f"killed at the hard limit of {limit:.0f} s"
                    processes.kill_group(proc.pid)
                    break
                if self.settings.clock == "cpu" and time.monotonic() - checked >= 1.0:
                    checked = time.monotonic()
                    if (run_clock_seconds(proc.pid, attempt.demand) or 0.0) > self.settings.clock_hard_limit:
                        result.outcome = "timeout"
                        result.error = f"killed at the hard limit of {self.settings.clock_hard_limit:.0f} s of CPU time"
                        processes.kill_group(proc.pid)
                        break
                if pipe_open and sel.select(timeout=min(remaining, 0.2)):
                    chunk = os.read(read_fd, 65536)
                    if not chunk:
                        pipe_open = False
                        sel.unregister(read_fd)
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        self._on_message(line, attempt, time.monotonic() - started)
                elif not pipe_open:
                    time.sleep(0.2)
            proc.wait()
            evaluator = attempt.evaluator.pid if attempt.evaluator is not None else None
            measured = meter.stop((evaluator,) if evaluator else ())
            result.interference = measured.as_dict() if measured else None
            if result.handover_seconds is not None and result.clock_seconds is None and measured:
                # it exited before its hand-over was read: its whole CPU time per core stands in
                result.clock_seconds = round((measured.run_share or 0.0) * measured.seconds, 2)
            sel.close()
            os.close(read_fd)
            result.wall_seconds = round(time.monotonic() - started, 2)
            result.exit_code = proc.returncode
        log_text = (run_dir / LOG_FILE).read_text(encoding="utf-8", errors="replace")
        result.summary = parse_summary(log_text)
        result.printed_bpb = result.summary.get("val_bpb")
        if result.outcome == "timeout":
            result.log_tail = tail(log_text)
            return
        if proc.returncode != 0:
            result.outcome = "crash"
            cause = crash_cause(log_text)
            result.error = (str(cause) if cause else f"train.py exited with code {proc.returncode}") + (
                " after the hand-over" if result.handover_seconds is not None else "")
            result.log_tail = tail(log_text)
        elif result.handover_seconds is None:
            result.outcome = "crash"
            result.error = "train.py finished without handing over a model (it must call evaluate_bpb)"
            result.log_tail = tail(log_text)
        elif (result.clock_seconds or result.handover_seconds) > self.settings.deadline:
            result.outcome = "timeout"
            on_clock = " of CPU time" if self.settings.clock == "cpu" else ""
            result.flags.append(
                f"overstayed: handed over at {result.clock_seconds or result.handover_seconds:.0f} s{on_clock}, "
                f"past budget + allowance ({self.settings.deadline:.0f} s)")

    def _on_message(self, line: bytes, attempt: _Attempt, at: float) -> None:
        run_dir, result = attempt.run_dir, attempt.result
        try:
            message = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if not isinstance(message, dict) or message.get("event") != "handover":
            return
        if result.handover_seconds is not None:
            result.flags.append("handed over more than once (the first counts)")
            return
        result.handover_seconds = round(at, 2)
        if self.settings.clock == "cpu" and attempt.group is not None:
            seconds = run_clock_seconds(attempt.group, attempt.demand)
            result.clock_seconds = round(seconds, 2) if seconds is not None else None
        else:
            result.clock_seconds = result.handover_seconds
        source = run_dir / MODEL_FILE
        if not source.is_file():
            result.error = "hand-over without an exported model file"
            return
        shutil.copyfile(source, run_dir / HANDED_OVER)
        attempt.model_sha256 = file_sha256(run_dir / HANDED_OVER)
        attempt.device = str(message.get("device") or "cpu")
        attempt.autocast = message.get("autocast")

    # --- 4: containment and guards ----------------------------------------------------------

    def _contain(self, attempt: _Attempt, before: containment.Before) -> None:
        """End the run's processes, then undo what it changed in the workspace (containment.py)."""
        result = attempt.result
        deadline = time.monotonic() + GROUP_GRACE
        left = processes.run_processes(processes.run_key(attempt.run_dir), attempt.group, attempt.known)
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = processes.run_processes(processes.run_key(attempt.run_dir), attempt.group, attempt.known)
        if left:
            names = sorted({_name(p) for p in left})
            processes.kill_all(left)
            message = f"left {len(left)} process(es) running ({', '.join(names)}); they were killed"
            if result.outcome == "timeout":  # already not kept; the hang is the story
                result.flags.append(message)
            else:
                mark_invalid(result, message)
        processes.reap_orphans(attempt.known)
        undone = containment.contain(self.ws, before, allow=run_allowance(self.ws, attempt.run_dir))
        record_undone(result, undone)

    # --- 5: the harness's own evaluation ----------------------------------------------------

    def _environment(self) -> dict[str, str]:
        """The environment of train.py and of the evaluator: the harness's own, less any run's
        variables, with the compile cache in the data cache (compilecache.py) and `extra_env`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_RUN")}
        env.update(compile_env(cache_root()))
        env.update(self.extra_env)
        return env

    def _evaluator_command(self, *args: str) -> list[str]:
        # -I: isolated mode keeps the working folder (and PYTHON* variables) off the import path
        return [self.python, "-I", "-m", "autoresearch.evaluator", *args]

    def _start_evaluator(self, attempt: _Attempt) -> None:
        """Start the evaluator with the run, so that it is ready when train.py exits. Spec, order
        and result pass through its pipes; it is the harness's process, not the run's (`known`)."""
        attempt.scratch = Path(tempfile.mkdtemp(prefix="autoresearch-eval-"))
        with open(attempt.scratch / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(
                self._evaluator_command("--serve"), cwd=attempt.scratch,
                env=self._environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                start_new_session=True,
            )
        attempt.evaluator = proc
        attempt.known.add(proc.pid)
        spec = EvalSpec(settings=self.settings.as_dict(), data_sha256=self.data_sha256)
        try:
            proc.stdin.write(json.dumps(spec.__dict__) + "\n")
            proc.stdin.flush()
        except OSError:
            pass  # it died at once; _evaluate falls back to a fresh one

    def _stop_evaluator(self, attempt: _Attempt) -> None:
        proc = attempt.evaluator
        if proc is not None:
            if proc.poll() is None:
                processes.kill_group(proc.pid, grace=1.0)
            try:
                proc.communicate()  # reap it and close its pipes
            except (ValueError, OSError):  # already done by _evaluate
                pass
        if attempt.scratch is not None:
            shutil.rmtree(attempt.scratch, ignore_errors=True)

    def _evaluate(self, attempt: _Attempt) -> None:
        run_dir, result, proc = attempt.run_dir, attempt.result, attempt.evaluator
        if attempt.model_sha256 is None:
            result.outcome, result.error = "crash", "no model was handed over"
            return
        order = {"model_file": str(run_dir / HANDED_OVER), "model_sha256": attempt.model_sha256,
                 "device": attempt.device, "autocast": attempt.autocast}
        limit = self.settings.effective_hard_limit
        # A fresh secret the evaluator must echo: train.py, gone by now, could not have forged a
        # result line that carries it.
        nonce = secrets.token_hex(16)
        started = time.monotonic()
        try:
            stdout, _ = proc.communicate(json.dumps({**order, "nonce": nonce}) + "\n", timeout=limit)
            out = _last_json_line(stdout)
            if out is not None and "error" not in out and out.get("nonce") != nonce:
                out = None  # not this evaluator's answer to this order
        except subprocess.TimeoutExpired:
            processes.kill_group(proc.pid, grace=1.0)
            out = {"error": "the evaluator timed out"}
        if out is None:  # it did not survive the run (train.py may have killed it): a fresh one, now
            result.flags.append(f"the evaluator started with the run had died (exit {proc.returncode}); "
                                "evaluated in a fresh one")
            started = time.monotonic()
            out = self._evaluate_fresh(EvalSpec(settings=self.settings.as_dict(), data_sha256=self.data_sha256,
                                                **order), limit)
        result.eval_seconds = round(time.monotonic() - started, 2)
        stderr = (attempt.scratch / "stderr.txt").read_text(errors="replace")
        atomic.write_json(run_dir / EVAL_FILE, out)
        if "error" in out or "val_bpb" not in out:
            detail = out.get("error") or tail(stderr, 5) or "no result"
            result.outcome = "invalid" if "modified" in detail or "fingerprint" in detail else "crash"
            result.error = f"evaluation failed: {detail}"
            return
        result.val_bpb = out["val_bpb"]
        result.heldout_bpb = out["heldout_bpb"]
        inprocess = run_dir / INPROCESS_RECORD
        if inprocess.exists():
            try:
                result.inprocess_bpb = float(json.loads(inprocess.read_text())["val_bpb"])
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                pass
        for label, value in (("printed", result.printed_bpb), ("in-process", result.inprocess_bpb)):
            if value is not None and not abs(value - result.val_bpb) <= PRINTED_TOLERANCE:
                result.flags.append(f"{label} val_bpb {value:.6f} differs from the harness's {result.val_bpb:.6f}")

    def _evaluate_fresh(self, spec: EvalSpec, limit: float) -> dict:
        """One-shot evaluation in a new process and a new folder, after the run has ended."""
        scratch = Path(tempfile.mkdtemp(prefix="autoresearch-eval-"))
        try:
            (scratch / "spec.json").write_text(spec.to_json())
            done = subprocess.run(
                self._evaluator_command("--spec", str(scratch / "spec.json"), "--out", str(scratch / "out.json")),
                cwd=scratch, env=self._environment(), capture_output=True, text=True, timeout=limit,
            )
            out = json.loads((scratch / "out.json").read_text()) if (scratch / "out.json").exists() else {}
            if not out:
                out = {"error": tail(done.stderr, 5) or f"the evaluator exited with code {done.returncode}"}
            return out
        except subprocess.TimeoutExpired:
            return {"error": "the evaluator timed out"}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def run_allowance(ws: Workspace, run_dir: Path) -> tuple[str, ...]:
    """What a run may change in the workspace: its own run folder (when it lies there), nothing else;
    train.py is reverted too."""
    try:
        return (run_dir.resolve().relative_to(ws.root.resolve()).as_posix() + "/",)
    except ValueError:  # the run folder is elsewhere (a node's runs go to the coordinator's)
        return ()


def record_undone(result: RunResult, undone: containment.Undone) -> None:
    """What containment undid, in the run's record: a change to the guarded state (fixed files, ledger,
    git state, harness code) makes the run `invalid`; files it left or changed otherwise are flags."""
    if undone.guarded:
        mark_invalid(result, "; ".join(undone.guarded) + " (restored)")
    if undone.created:
        result.flags.append(f"removed {len(undone.created)} untracked file(s) the run left in the workspace")
    if TRAIN_FILE in undone.modified:
        result.flags.append("train.py changed itself during the run (reverted)")
    others = replace(undone, guarded=(), created=(), modified=tuple(p for p in undone.modified if p != TRAIN_FILE))
    result.flags.extend(others.phrases())


def mark_invalid(result: RunResult, reason: str) -> None:
    result.outcome = "invalid"
    result.error = f"{result.error}; {reason}" if result.error else reason
    result.val_bpb = None


def _name(proc) -> str:
    try:
        return proc.name()
    except Exception:
        return "?"

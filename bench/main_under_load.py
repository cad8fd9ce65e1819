"""The main job (`scripts/main.sh`) with a load during its first baseline run, against the same job
on a quiet machine.

Runs the README's main job twice, each in a fresh workspace folder, as a user would:
1. quiet: nothing else started by the benchmark;
2. loaded: bench/loadgen.py keeps `--load-cores` cores busy from the start until the first
   baseline run has finished (its runs/0001/result.json exists), then stops.
After each, `autoresearch status --json` gives the noise the job reports (`noise.sigma`) and its
warning. Target (issue #16): the loaded job's sigma within 2x of the quiet job's, or a one-line
warning that the measurement was disturbed, with the measured interference and what to do.

    python bench/main_under_load.py [--budget 60] [--experiments 1] [--load-cores 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from _workspace import machine
from loadgen import LoadGenerator

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 2.0


def run_main_job(folder: Path, budget: float, experiments: int, load: LoadGenerator | None) -> tuple[dict, str, float]:
    """Run scripts/main.sh into `folder`; with `load`, keep it on until the first run has a result."""
    env = {**os.environ, "BUDGET": f"{budget:g}", "EXPERIMENTS": str(experiments)}
    first = folder / "runs" / "0001" / "result.json"
    stop = threading.Event()

    def load_until_first_run() -> None:
        load.on()
        while not first.exists() and not stop.wait(0.5):
            pass
        load.off()
        print(f"  load off: the first baseline run finished ({time.strftime('%H:%M:%S')})", flush=True)

    watcher = threading.Thread(target=load_until_first_run, daemon=True) if load else None
    if watcher:
        watcher.start()
    started = time.monotonic()
    out = subprocess.run([str(REPO / "scripts" / "main.sh"), str(folder)], env=env, cwd=REPO,
                         capture_output=True, text=True)
    seconds = time.monotonic() - started
    stop.set()
    if watcher:
        watcher.join()
    if out.returncode != 0:
        print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
    state = subprocess.run([str(REPO / ".venv" / "bin" / "autoresearch"), "status", "--json"], cwd=folder,
                           capture_output=True, text=True)
    return json.loads(state.stdout), out.stdout + out.stderr, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=60.0, help="training seconds per run (main.sh's BUDGET)")
    parser.add_argument("--experiments", type=int, default=1, help="experiments after the baseline")
    parser.add_argument("--load-cores", type=int, default=os.cpu_count() or 1, help="cores the load keeps busy")
    args = parser.parse_args()
    print(f"machine: {machine()}; {date.today()}")
    root = Path(tempfile.mkdtemp(prefix="autoresearch-main-load-"))
    results = {}
    with LoadGenerator(args.load_cores) as load:
        for condition in ("quiet", "loaded"):
            print(f"{condition}: scripts/main.sh {root / condition} (BUDGET={args.budget:g}, "
                  f"EXPERIMENTS={args.experiments})", flush=True)
            state, output, seconds = run_main_job(root / condition, args.budget, args.experiments,
                                                  load if condition == "loaded" else None)
            noise = state.get("noise") or {}
            results[condition] = noise
            warnings = [line for line in output.splitlines() if "disturbed" in line or "implausible" in line]
            print(f"  {seconds / 60:.1f} min; sigma {noise.get('sigma')}, interference {noise.get('interference')}, "
                  f"disturbed runs {noise.get('disturbed_runs')}, warning: {noise.get('warning') or 'none'}")
            for line in warnings[:5]:
                print(f"  | {line.strip()}")
    quiet, loaded = results["quiet"].get("sigma"), results["loaded"].get("sigma")
    if not quiet or loaded is None:
        print("RESULT unknown: a job did not report its noise")
        sys.exit(1)
    ratio = loaded / quiet
    warned = bool(results["loaded"].get("warning"))
    met = ratio <= TARGET_RATIO or warned
    print(f"RESULT sigma quiet {quiet:.4f}, loaded {loaded:.4f}: ratio {ratio:.2f} (target <= {TARGET_RATIO:g}"
          f"{', or a warning' if not ratio <= TARGET_RATIO else ''}): {'met' if met else 'NOT met'}"
          f"{'; warned: ' + results['loaded']['warning'] if warned else ''}")


if __name__ == "__main__":
    main()

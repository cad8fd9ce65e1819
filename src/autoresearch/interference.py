"""What else the machine did while a run trained: interference, measured by the runner.

A run's val_bpb depends on how many optimizer steps fit in its budget, so another program that
takes CPU from it makes it look worse, and one that stops makes the next run look better. The
runner measures, from the launch of train.py to its exit:

- `others_cores`: CPU time the machine spent on processes outside the run (and outside the
  harness's own: the loop, the evaluator) per second, in cores. Machine-wide busy time
  (psutil.cpu_times: user, nice, system, irq, softirq, steal; steal is a VM neighbour's) less the
  run's process tree (getrusage of the reaped train.py) less the harness's processes.
- `demand`: the cores the run wants: its threads (OMP_NUM_THREADS, or every core), 1 on a GPU.
- `contention`: the share of that demand that other work competed for:
  max(0, others_cores - (cores - demand)) / demand. Others that fit on cores the run does not use
  count nothing; others that need the run's cores count in full. 0 on a quiet machine.
- `run_share`: the run's own CPU time per second per core of demand (how busy it kept its threads).
- `pressure`: the share of the time some runnable task waited for a CPU (/proc/pressure/cpu
  `some`, Linux 4.20+), None where the kernel does not report it.

On CUDA, where nvidia-ml-py and a driver are present (nvml.py samples the run's device every
second), also:
- `gpu_others`, `gpu_others_mb`: the most compute processes on the run's device outside the
  run's process tree and the harness at any sample, and the most memory they used (MiB);
- `gpu_shared`: the share of the samples in which such a process competed (ran kernels, where
  the driver reports per-process utilization; was there, where it does not);
- `sm_clock`: the median SM clock over the maximum, over the samples the device was busy;
- `gpu_throttled`: the share of those samples in which the driver slowed the clocks for a
  disturbing reason (thermal, hardware slowdown, power brake: not the power cap every busy GPU
  reaches, nor an applications-clock setting); `gpu_reasons` names every reason seen.
`gpu_interference` turns the samples into these fields (a pure function). Without NVML they are
None and everything else is as on a CPU.

The loop (research.py) calls a run disturbed when its `level` (its contention, or on CUDA the
larger of that and the GPU's: max(gpu_shared, gpu_throttled)) is above `max_interference`, or
when it made its steps more than `max_slowdown` slower than earlier runs of the same commit
(a cause the counters do not see: memory bandwidth, a clock the driver lowered for another reason).
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from autoresearch.nvml import GpuSample, GpuSampler

PSI_CPU = Path("/proc/pressure/cpu")
GPU_IDLE = 0x1  # NVML clock event reason: the device is idle
# Clock event reasons that disturb a measurement: another run's heat or the board's limits, not this run's own
# load (the software power cap, 0x4, is where every busy GPU runs; 0x2 is a setting, the same for every run).
GPU_DISTURBING = {0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal", 0x80: "hw_power_brake"}
GPU_REASONS = {0x2: "applications_clocks", 0x4: "sw_power_cap", 0x10: "sync_boost", 0x100: "display_clocks",
               **GPU_DISTURBING}


def gpu_interference(samples: Sequence[GpuSample]) -> dict:
    """The GPU fields of an Interference record from the samples of a run (the module's docstring).

    Another process is one outside the run and the harness. A pid that does not exist here cannot
    be placed: it counts as another's only when it was on the device before the run started (the
    first sample, taken before the launch); a new one may be the run itself. {} without samples."""
    if not samples:
        return {}
    before = {p.pid for p in samples[0].processes}
    counts: list[int] = []
    memory: list[float] = []
    competing = 0
    for s in samples:
        others = [p for p in s.processes if p.pid not in s.ours and (p.pid not in s.foreign or p.pid in before)]
        counts.append(len(others))
        used = [p.used_mb for p in others if p.used_mb is not None]
        if used:
            memory.append(sum(used))
        competing += any(p.sm_util is None or p.sm_util > 0 for p in others)
    busy = [s for s in samples if s.reasons is None or not s.reasons & GPU_IDLE]
    clocks = [s.sm_clock / s.sm_max for s in busy if s.sm_clock and s.sm_max]
    known = [s.reasons for s in busy if s.reasons is not None]
    seen = 0
    for reasons in known:
        seen |= reasons
    disturbing = sum(1 for reasons in known if any(reasons & bit for bit in GPU_DISTURBING))
    return {
        "gpu_samples": len(samples), "gpu_others": max(counts), "gpu_others_mb": round(max(memory), 1) if memory else None,
        "gpu_shared": round(competing / len(samples), 3),
        "sm_clock": round(statistics.median(clocks), 3) if clocks else None,
        "gpu_throttled": round(disturbing / len(known), 3) if known else None,
        "gpu_reasons": ",".join(name for bit, name in sorted(GPU_REASONS.items()) if seen & bit) if known else None,
    }


@dataclass(frozen=True)
class Interference:
    """The interference a run met (see the module's docstring)."""

    seconds: float  # wall time measured over
    cores: int  # the machine's logical cores
    demand: float  # cores the run wants
    others_cores: float
    contention: float
    run_share: float | None = None
    pressure: float | None = None
    # on CUDA with NVML (the module's docstring); None elsewhere
    gpu_samples: int | None = None
    gpu_others: int | None = None
    gpu_others_mb: float | None = None
    gpu_shared: float | None = None
    sm_clock: float | None = None
    gpu_throttled: float | None = None
    gpu_reasons: str | None = None

    @property
    def gpu_contention(self) -> float | None:
        """The share of the run's GPU time others (or the driver's slowdowns) took; None without NVML."""
        if not self.gpu_samples:
            return None
        return max(self.gpu_shared or 0.0, self.gpu_throttled or 0.0)

    @property
    def level(self) -> float:
        """The interference that decides whether a run is disturbed: its contention, or the GPU's if larger."""
        return max(self.contention, self.gpu_contention or 0.0)

    def describe(self) -> str:
        """One line for a person: `other processes used 0.9 cores (contention 45%), CPU pressure 60%`, and on
        CUDA `; on its GPU 1 other process (2048 MiB) competing in 80% of the samples, SM clock 71% of its maximum`."""
        text = f"other processes used {self.others_cores:.1f} of {self.cores} cores (contention {self.contention:.0%})"
        if self.pressure is not None:
            text += f", CPU pressure {self.pressure:.0%}"
        if self.gpu_samples:
            if self.gpu_others:
                memory = f" ({self.gpu_others_mb:.0f} MiB)" if self.gpu_others_mb is not None else ""
                text += (f"; on its GPU {self.gpu_others} other process(es){memory} competing in "
                         f"{self.gpu_shared or 0:.0%} of the samples")
            else:
                text += "; no other process on its GPU"
            if self.sm_clock is not None:
                text += f", SM clock {self.sm_clock:.0%} of its maximum"
            if self.gpu_throttled:
                text += f", slowed by the driver ({self.gpu_reasons}) in {self.gpu_throttled:.0%} of the samples"
        return text

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Interference | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


def run_demand(env: dict[str, str], device: str = "cpu") -> float:
    """The cores a run wants: 1 on a GPU (a thread that feeds it), else its threads (capped)."""
    cores = psutil.cpu_count() or 1
    if device in ("cuda", "mps"):
        return 1.0
    try:
        threads = int(env.get("OMP_NUM_THREADS") or cores)
    except ValueError:
        threads = cores
    return float(max(1, min(threads, cores)))


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    busy = t.user + t.system
    for name in ("nice", "irq", "softirq", "steal"):
        busy += getattr(t, name, 0.0)
    # Linux counts guest time inside user and nice; it is not a second use of the CPU.
    return busy - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pressure_us() -> float | None:
    try:
        for line in PSI_CPU.read_text().splitlines():
            if line.startswith("some "):
                return float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class Meter:
    """Measures interference between `start()` (just before train.py is launched) and `stop()`
    (just after it was reaped: its CPU time is then in this process's children's usage).
    `gpu`: a sampler of the run's device (nvml.GpuSampler.open; None without NVML or off CUDA)."""

    def __init__(self, demand: float, gpu: GpuSampler | None = None) -> None:
        self.demand = demand
        self.gpu = gpu
        self._start: tuple[float, float, float, float, float | None] | None = None

    def start(self) -> None:
        self._start = (time.monotonic(), _busy_seconds(), _children_seconds(), _self_seconds(), _pressure_us())
        if self.gpu is not None:
            try:
                self.gpu.start()
            except Exception:  # noqa: BLE001 - a measurement must never stop a run
                self.gpu = None

    def stop(self, harness_pids: tuple[int, ...] = ()) -> Interference | None:
        """The interference since start(). `harness_pids`: live processes of the harness that ran
        beside the run (the evaluator), whose CPU time is not the others'."""
        gpu = gpu_interference(self.gpu.stop()) if self.gpu is not None else {}
        if self._start is None:
            return None
        t0, busy0, children0, self0, psi0 = self._start
        seconds = time.monotonic() - t0
        if seconds <= 0:
            return None
        run = _children_seconds() - children0
        harness = _self_seconds() - self0 + sum(_cpu_seconds(pid) for pid in harness_pids)
        others = max(0.0, _busy_seconds() - busy0 - run - harness)
        cores = psutil.cpu_count() or 1
        others_cores = others / seconds
        spare = max(0.0, cores - self.demand)
        contention = min(1.0, max(0.0, others_cores - spare) / self.demand)
        psi1 = _pressure_us()
        pressure = None if psi0 is None or psi1 is None else min(1.0, (psi1 - psi0) / 1e6 / seconds)
        return Interference(seconds=round(seconds, 2), cores=cores, demand=self.demand,
                            others_cores=round(others_cores, 3), contention=round(contention, 3),
                            run_share=round(run / seconds / self.demand, 3), pressure=_round(pressure), **gpu)


def _cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    except psutil.Error:
        return 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def describe_load() -> str:
    """The machine's load now, for messages: `load average 1.9 on 2 cores`."""
    try:
        one, _, _ = os.getloadavg()
    except OSError:
        return ""
    return f"load average {one:.1f} on {psutil.cpu_count() or 1} cores"

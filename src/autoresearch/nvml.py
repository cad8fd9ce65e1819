"""What the GPU driver says of a run's device while the run trains: NVML, through nvidia-ml-py.

Optional (`pip install 'autoresearch[gpu]'`): without the library, without a driver or without
the device, `GpuSampler.open` returns None and the run is measured without it, silently. A call
the device or driver does not support leaves that value unknown.

Every `INTERVAL_S` a thread of the runner asks NVML, for the run's device (the first entry of the
run's CUDA_VISIBLE_DEVICES: an index or a GPU UUID; device 0 without it), for the compute
processes on it (pid, memory used), their SM utilization since the last sample (where the driver
reports it), the SM clock and its maximum, and the clock event ("throttle") reasons; and notes
which of those processes are the run's or the harness's (this process and its descendants) and
which pids do not exist here (NVML reports the host's pids to a container without the host's pid
namespace). interference.gpu_interference turns the samples into the record; nothing here decides.
NVML creates no CUDA context: the runner still takes no GPU memory from the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil

INTERVAL_S = 1.0  # between samples


@dataclass(frozen=True)
class GpuProcess:
    """A compute process on the run's device, as NVML reported it at one sample."""

    pid: int
    used_mb: float | None  # its device memory (MiB); None where the driver does not say
    sm_util: float | None  # its highest SM utilization (%) since the last sample; None where not reported


@dataclass(frozen=True)
class GpuSample:
    """One look at the run's device (GpuSampler), with what is needed to tell whose processes are whose."""

    processes: tuple[GpuProcess, ...]
    ours: frozenset[int]  # the run's process tree and the harness's processes at that moment
    foreign: frozenset[int]  # reported pids that do not exist here (a container without the host's pid namespace)
    sm_clock: float | None  # MHz
    sm_max: float | None  # MHz
    reasons: int | None  # the clock event reasons, a bit mask


def device_of(env: dict[str, str]) -> str:
    """The run's device as CUDA_VISIBLE_DEVICES names it: its first entry, "0" without one."""
    first = (env.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0].strip()
    return first or "0"


def _ask(call: Callable[[], Any]) -> Any:
    """One NVML call; None when the device, the driver or the library cannot answer it."""
    try:
        return call()
    except Exception:  # noqa: BLE001 - NVMLError of any code, or a function this driver lacks: unknown
        return None


class GpuSampler:
    """Samples one device every `interval` seconds on a thread, from start() to stop()."""

    def __init__(self, nvml: Any, handle: Any, interval: float = INTERVAL_S) -> None:
        self.nvml = nvml
        self.handle = handle
        self.interval = interval
        self.samples: list[GpuSample] = []
        self._last_seen = 0  # NVML's timestamp of the last utilization sample read (microseconds)
        self._max_clock: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def open(cls, env: dict[str, str], interval: float = INTERVAL_S) -> GpuSampler | None:
        """A sampler of the run's device; None without nvidia-ml-py, a driver or the device."""
        try:
            import pynvml
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
        except Exception:  # noqa: BLE001 - no driver (NVMLError), or its library failed to load
            return None
        device = device_of(env)
        handle = _ask(lambda: pynvml.nvmlDeviceGetHandleByUUID(device) if not device.isdigit()
                      else pynvml.nvmlDeviceGetHandleByIndex(int(device)))
        if handle is None:
            _ask(pynvml.nvmlShutdown)
            return None
        return cls(pynvml, handle, interval)

    def start(self) -> None:
        """The first sample now (before the run starts: what was on the device already), then a thread."""
        self._max_clock = _ask(lambda: float(self.nvml.nvmlDeviceGetMaxClockInfo(self.handle, self.nvml.NVML_CLOCK_SM)))
        self._utilization()  # only what runs from now on counts
        self.samples.append(self.sample())
        self._thread = threading.Thread(target=self._watch, name="gpu-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> list[GpuSample]:
        """End the sampling (and NVML); the samples taken."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5 * self.interval + 5)
        _ask(self.nvml.nvmlShutdown)
        return list(self.samples)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(self.sample())
            except Exception:  # noqa: BLE001 - a measurement must never stop a run
                continue

    def sample(self) -> GpuSample:
        nv, handle = self.nvml, self.handle
        running = _ask(lambda: nv.nvmlDeviceGetComputeRunningProcesses(handle)) or []
        active = self._utilization()
        processes = tuple(GpuProcess(
            pid=int(p.pid), used_mb=None if getattr(p, "usedGpuMemory", None) is None else p.usedGpuMemory / 2**20,
            sm_util=None if active is None else float(active.get(int(p.pid), 0))) for p in running)
        return GpuSample(
            processes=processes, ours=_harness_pids(), foreign=frozenset(p.pid for p in processes
                                                                         if not psutil.pid_exists(p.pid)),
            sm_clock=_ask(lambda: float(nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM))),
            sm_max=self._max_clock, reasons=self._reasons())

    def _reasons(self) -> int | None:
        reasons = _ask(lambda: self.nvml.nvmlDeviceGetCurrentClocksEventReasons(self.handle))
        if reasons is None:  # drivers before the rename
            reasons = _ask(lambda: self.nvml.nvmlDeviceGetCurrentClocksThrottleReasons(self.handle))
        return None if reasons is None else int(reasons)

    def _utilization(self) -> dict[int, float] | None:
        """Each process's highest SM utilization (%) since the last call; {} when none ran a kernel
        since (NVML: not found), None when the device does not report it."""
        try:
            found = self.nvml.nvmlDeviceGetProcessUtilization(self.handle, self._last_seen)
        except Exception as e:  # noqa: BLE001
            return {} if type(e).__name__ == "NVMLError_NotFound" else None
        out: dict[int, float] = {}
        for s in found:
            out[int(s.pid)] = max(out.get(int(s.pid), 0.0), float(s.smUtil))
            self._last_seen = max(self._last_seen, int(s.timeStamp))
        return out


def _harness_pids() -> frozenset[int]:
    """This process (the runner) and its descendants: the run's process tree, the evaluator."""
    me = psutil.Process()
    try:
        return frozenset({me.pid, *(c.pid for c in me.children(recursive=True))})
    except psutil.Error:
        return frozenset({me.pid})

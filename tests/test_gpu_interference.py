"""GPU interference (nvml.py, interference.gpu_interference): what the driver's samples of a run's
device make of the Interference record, how the loop treats a run whose GPU others competed for,
and that without a driver (this machine) nothing is measured and nothing fails.

The samples below are values NVML reports (pids, MiB, SM %, MHz, clock event reason bits) fed to
the pure function that turns them into the record; no stand-in of the library runs in a loop.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from autoresearch.interference import Interference, Meter, gpu_interference
from autoresearch.ledger import Ledger
from autoresearch.loop import Loop
from autoresearch.nvml import GpuProcess, GpuSample, GpuSampler, device_of
from autoresearch.research import Limits
from tests.scripted import ScriptedExecutor, ScriptedProposer

RUNNER, TRAIN, EVALUATOR = 4100, 4200, 4201  # the runner and its children
OURS = frozenset({RUNNER, TRAIN, EVALUATOR})
IDLE, POWER_CAP, HW_THERMAL = 0x1, 0x4, 0x40
MAX = 1980.0  # MHz


def sample(*processes: tuple[int, float | None, float | None], clock: float = 1755.0, reasons: int | None = POWER_CAP,
           foreign: frozenset[int] = frozenset()) -> GpuSample:
    return GpuSample(tuple(GpuProcess(*p) for p in processes), OURS, foreign, clock, MAX, reasons)


def quiet_run() -> list[GpuSample]:
    """Before the launch the device idles; then train.py alone, at the power cap."""
    return [sample(clock=345.0, reasons=IDLE)] + [sample((TRAIN, 30000.0, 97.0)) for _ in range(9)]


def test_a_run_alone_on_its_gpu_meets_no_interference():
    fields = gpu_interference(quiet_run())
    assert fields == {"gpu_samples": 10, "gpu_others": 0, "gpu_others_mb": None, "gpu_shared": 0.0,
                      "sm_clock": pytest.approx(0.886, abs=1e-3), "gpu_throttled": 0.0, "gpu_reasons": "sw_power_cap"}
    record = Interference(seconds=10.0, cores=16, demand=1.0, others_cores=0.1, contention=0.0, **fields)
    assert record.gpu_contention == 0.0 and record.level == 0.0
    assert "no other process on its GPU, SM clock 89% of its maximum" in record.describe()


def test_another_job_on_the_device_is_seen_with_its_memory_and_share():
    other = (9100, 20480.0, 60.0)
    samples = [sample(other, clock=1410.0)] + [sample((TRAIN, 30000.0, 50.0), other) for _ in range(3)] + [
        sample((TRAIN, 30000.0, 90.0), (9100, 20480.0, 0.0))]  # it stopped computing at the end
    fields = gpu_interference(samples)
    assert (fields["gpu_others"], fields["gpu_others_mb"], fields["gpu_shared"]) == (1, 20480.0, 0.8)
    record = Interference(seconds=5.0, cores=16, demand=1.0, others_cores=0.0, contention=0.0, **fields)
    assert record.level == 0.8
    assert "on its GPU 1 other process(es) (20480 MiB) competing in 80% of the samples" in record.describe()


def test_an_idle_context_is_there_but_does_not_compete_and_unknown_utilization_does():
    idle = [sample((TRAIN, 30000.0, 95.0), (7000, 500.0, 0.0)) for _ in range(4)]
    assert gpu_interference(idle)["gpu_shared"] == 0.0 and gpu_interference(idle)["gpu_others"] == 1
    unknown = [sample((TRAIN, 30000.0, None), (7000, 500.0, None)) for _ in range(4)]  # no per-process figures
    assert gpu_interference(unknown)["gpu_shared"] == 1.0


def test_thermal_slowdowns_count_the_power_cap_and_idle_samples_do_not():
    samples = [sample(clock=345.0, reasons=IDLE)] + [sample((TRAIN, 1.0, 99.0)) for _ in range(2)] + [
        sample((TRAIN, 1.0, 99.0), clock=990.0, reasons=POWER_CAP | HW_THERMAL) for _ in range(2)]
    fields = gpu_interference(samples)
    assert fields["gpu_throttled"] == 0.5 and fields["gpu_reasons"] == "sw_power_cap,hw_thermal"
    assert fields["sm_clock"] == pytest.approx((1755 + 990) / 2 / MAX, abs=1e-3)  # the median of 4 busy samples
    record = Interference(seconds=5.0, cores=16, demand=1.0, others_cores=0.0, contention=0.1, **fields)
    assert record.level == 0.5 and "slowed by the driver (sw_power_cap,hw_thermal) in 50% of the samples" in \
        record.describe()


def test_host_pids_in_a_container_count_only_when_they_were_there_before_the_run():
    before = (1234567, 8000.0, 70.0)  # another container's job: on the device before the launch
    run = (2345678, 30000.0, 90.0)  # a host pid that appeared with the run: possibly the run itself
    foreign = frozenset({before[0], run[0]})
    samples = [sample(before, foreign=foreign)] + [sample(before, run, foreign=foreign) for _ in range(3)]
    fields = gpu_interference(samples)
    assert (fields["gpu_others"], fields["gpu_others_mb"], fields["gpu_shared"]) == (1, 8000.0, 1.0)


def test_no_samples_no_fields_and_older_records_read_as_before():
    assert gpu_interference([]) == {}
    old = Interference.from_dict({"seconds": 4.0, "cores": 2, "demand": 1.0, "others_cores": 0.5, "contention": 0.2})
    assert old.gpu_contention is None and old.level == 0.2 and "GPU" not in old.describe()
    full = Interference(seconds=1.0, cores=2, demand=1.0, others_cores=0.0, contention=0.0,
                        **gpu_interference(quiet_run()))
    assert Interference.from_dict(full.as_dict()) == full


@pytest.mark.parametrize("clock", ["wall", "cpu"])  # on the cpu clock too: its CPU time says nothing of the GPU
def test_a_run_whose_gpu_others_competed_for_is_run_again_before_it_is_judged(make_workspace, clock):
    ws = make_workspace(budget=3, max_interference=0.25, control_every=0, clock=clock)
    shared = gpu_interference([sample((9100, 20480.0, 60.0))] + [sample((TRAIN, 1.0, 50.0), (9100, 20480.0, 60.0))])
    logged: list[str] = []
    executor = ScriptedExecutor(ws, gpu=[{}, {}, shared])  # the experiment's first run shares its GPU
    with Loop.open(ws.root, tag="t", log=logged.append, executor=executor) as loop:
        loop.run(ScriptedProposer([("a gain", {"val": [2.0]})]), Limits(max_experiments=1))
    rows = Ledger.open(ws.ledger_path).rows
    assert [(r.kind, r.status) for r in rows] == [("baseline", "keep")] * 2 + [("disturbed", "discard"),
                                                                              ("experiment", "keep")]
    assert rows[2].interference == 1.0 and "on its GPU 1 other process(es) (20480 MiB)" in rows[2].reason
    assert any("run 0003 disturbed" in line for line in logged)


# --- without a driver: nothing measured, nothing fails ---------------------------------------------


def test_device_of_the_run():
    assert device_of({}) == "0" and device_of({"CUDA_VISIBLE_DEVICES": "3,1"}) == "3"
    assert device_of({"CUDA_VISIBLE_DEVICES": "GPU-8c4f0d5e-1b2a"}) == "GPU-8c4f0d5e-1b2a"


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_without_a_driver_the_sampler_is_none_and_a_run_is_measured_as_on_a_cpu():
    pytest.importorskip("pynvml")  # installed (the test extra), its driver library absent
    assert GpuSampler.open({"CUDA_VISIBLE_DEVICES": "0"}) is None
    meter = Meter(demand=1.0, gpu=GpuSampler.open({}))
    meter.start()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    measured = meter.stop()
    assert measured is not None and measured.gpu_samples is None and measured.gpu_contention is None


def test_without_nvidia_ml_py_the_sampler_is_none(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    assert GpuSampler.open({}) is None

"""What this machine can run on: the accelerator, its precision, its peak speed."""

from __future__ import annotations

import ctypes
import os
import sys

import torch


def best_device() -> str:
    """cuda, then mps, then cpu; AUTORESEARCH_DEVICE overrides."""
    forced = os.environ.get("AUTORESEARCH_DEVICE")
    if forced:
        return forced
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is ~100x slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def preset_for_machine() -> str:
    """The preset that fits the accelerator found here."""
    return {"cuda": "gpu", "mps": "mps"}.get(best_device(), "cpu")


def describe() -> str:
    device = best_device()
    if device == "cuda":
        return f"cuda ({torch.cuda.get_device_name(0)}, {torch.cuda.device_count()} GPU)"
    if device == "mps":
        return "mps (Apple silicon)"
    cap = torch.backends.cpu.get_cpu_capability()
    return f"cpu ({os.cpu_count()} cores, {cap}, {'bf16' if cpu_has_fast_bf16() else 'fp32'})"


def tune_allocator() -> None:
    """Keep large freed blocks in the heap (glibc): re-faulting them each step costs ~1.5x on CPU."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def total_memory_gb() -> float | None:
    """Memory of the accelerator runs train on (GiB): the GPU's, else the machine's RAM; None if unknown.

    CUDA is asked through nvidia-smi, not torch: the coordinator must not hold a CUDA context
    (it would take GPU memory from the runs)."""
    import psutil

    device = best_device()
    if device == "cuda":
        return _nvidia_total_gb()
    if device == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return torch.mps.recommended_max_memory() / 1024**3
    return psutil.virtual_memory().total / 1024**3


def _nvidia_total_gb() -> float | None:
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits", "-i", visible],
                             capture_output=True, text=True, timeout=30, check=True).stdout
        return float(out.split()[0]) / 1024  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None

"""Machine utilisation of a training run: CPU, RAM and GPU, sampled once per epoch.

Without psutil the figures come from ``/proc`` (Linux); where neither answers, the value is None.
"""
from __future__ import annotations

import os
import time

import torch


class UsageSampler:
    """CPU / RAM / GPU utilisation, sampled once per epoch (psutil if installed, else /proc).

    ``cpu_util_pct``: whole machine, 0-100 over all cores since the previous sample;
    ``proc_cpu_pct``: this process, top-style (100 = one core busy); ``ram_used_pct``: machine
    memory in use; ``rss_mb``: this process; ``gpu_util_pct``: NVML, only with pynvml and CUDA.
    """

    def __init__(self, device: torch.device):
        self._wall, self._proc, self._stat = time.perf_counter(), time.process_time(), _cpu_times()
        self._nvml = _nvml_handle() if device.type == "cuda" else None

    def sample(self) -> dict[str, float | None]:
        wall, proc, stat = time.perf_counter(), time.process_time(), _cpu_times()
        busy = (stat[0] - self._stat[0]) / max(stat[1] - self._stat[1], 1e-9) if stat else None
        out = {"cpu_util_pct": None if busy is None else 100.0 * busy,
               "proc_cpu_pct": 100.0 * (proc - self._proc) / max(wall - self._wall, 1e-9),
               "ram_used_pct": _ram_used_pct(), "rss_mb": _rss_mb(), "gpu_util_pct": None}
        if self._nvml is not None:
            import pynvml
            out["gpu_util_pct"] = float(pynvml.nvmlDeviceGetUtilizationRates(self._nvml).gpu)
        self._wall, self._proc, self._stat = wall, proc, stat
        return out


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            vals = [float(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals) - idle, sum(vals)


def _ram_used_pct() -> float | None:
    try:
        import psutil
        return float(psutil.virtual_memory().percent)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: float(line.split()[1]) for line in f}
        return 100.0 * (1 - info["MemAvailable"] / info["MemTotal"])
    except (OSError, KeyError, ValueError):
        return None


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def _nvml_handle():
    try:
        import pynvml
        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
    except Exception:  # pynvml absent or no driver: GPU utilisation is simply not recorded
        return None


__all__ = ["UsageSampler"]

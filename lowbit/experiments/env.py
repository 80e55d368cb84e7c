"""Code version and environment columns that every results row carries."""
from __future__ import annotations

import platform
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

import lowbit
from lowbit.distributed.cores import cpu_count


@lru_cache(maxsize=1)
def code_version() -> dict:
    """``lowbit_version`` plus ``git_commit`` / ``git_dirty`` when lowbit sits in a git checkout."""
    out = {"lowbit_version": lowbit.__version__, "git_commit": None, "git_dirty": None}
    src = Path(lowbit.__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                                text=True, timeout=10)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=src, capture_output=True, text=True, timeout=10)
            out["git_dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def environment(device: str = "cpu") -> dict:
    """Library versions, host and device description for a results row."""
    dev = torch.device(device)
    if dev.type == "cuda":
        device_name = torch.cuda.get_device_name(dev)
    else:
        device_name = platform.processor() or platform.machine()
    return {"torch_version": torch.__version__, "numpy_version": np.__version__,
            "python_version": platform.python_version(), "platform": sys.platform,
            "hostname": socket.gethostname(), "device_name": device_name,
            "cpu_count": cpu_count()}

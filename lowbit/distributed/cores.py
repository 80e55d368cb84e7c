"""The CPU cores this process may run on (its affinity mask, not the machine's core count)."""
from __future__ import annotations

import os


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1

"""Per-run claims: two sweep processes on one ``out_dir`` never train the same run at once.

A run is claimed by the process that trains it (the worker, :func:`lowbit.experiments.worker.execute`)
with an exclusive ``fcntl.flock`` on ``runs/<run_id>/claim.lock``, held from before the run's log is
opened until its ``result.json`` is written. The file records ``pid@host`` of the holder, so a
process that finds the run claimed can say by whom. A claim cannot go stale: the kernel drops the
lock when its process exits, however it exits (kill -9 included), so the next sweep takes the run
over and resumes it from its checkpoint. The file itself stays; it is a lock, not a marker.
``flock`` works on local file systems and on NFS (Linux emulates it with POSIX locks there).
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

CLAIM_FILE = "claim.lock"
# The worker's status when another process holds the run's claim (or has just finished the run):
# it wrote nothing. A worker child exits with EXIT_CLAIMED then, so its executor can tell.
CLAIMED = "claimed"
EXIT_CLAIMED = 75


class Claim:
    """A held claim on one run folder; :meth:`release` (or process exit) frees it."""

    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = -1


def _open(run_dir: Path) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    return os.open(run_dir / CLAIM_FILE, os.O_RDWR | os.O_CREAT, 0o644)


def try_claim(run_dir) -> Claim | None:
    """Claim ``run_dir`` for this process; None when another process holds it."""
    run_dir = Path(run_dir)
    fd = _open(run_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
    return Claim(fd, run_dir / CLAIM_FILE)


def holder(run_dir) -> str | None:
    """``pid@host`` of the process that holds ``run_dir``'s claim, or None when it is free."""
    path = Path(run_dir) / CLAIM_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

"""Sweep progress: one updating line on a terminal, plain lines otherwise."""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


class Progress:
    """Shows runs done / total and the epoch each running run is at.

    On a TTY a single line is redrawn (``\\r``); elsewhere (logs, CI) each epoch and each finished
    run prints one line. ``quiet`` prints only finished runs.
    """

    def __init__(self, total: int, done: int = 0, stream: TextIO | None = None,
                 quiet: bool = False):
        self.total, self.done = total, done
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.quiet = quiet
        self.running: dict[str, list] = {}  # run_id -> [label, epoch, epochs]
        self.t0 = time.perf_counter()

    def _line(self, text: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
        self.stream.write(text + "\n")
        self._redraw()

    def _redraw(self) -> None:
        if self.tty:
            parts = [f"{label} {ep}/{n}" for label, ep, n in self.running.values()]
            text = f"[{self.done}/{self.total} done, {time.perf_counter() - self.t0:.0f}s] " \
                   + " | ".join(parts)
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[2K" + text[:width])
        self.stream.flush()

    def start(self, run_id: str, label: str, epochs: int) -> None:
        self.running[run_id] = [label, 0, epochs]
        self._redraw()

    def epoch(self, run_id: str, epoch: int, epochs: int, val_acc: float) -> None:
        entry = self.running.setdefault(run_id, [run_id, 0, epochs])
        entry[1:] = [epoch, epochs]
        if not self.tty and not self.quiet:
            self._line(f"[{self.done}/{self.total}] {entry[0]} epoch {epoch}/{epochs} "
                       f"val_acc {val_acc:.4f}")
        else:
            self._redraw()

    def note(self, text: str) -> None:
        """One line of news (e.g. a run another process is training)."""
        self._line(text)

    def end(self, run_id: str, label: str, status: str, detail: str = "") -> None:
        self.running.pop(run_id, None)
        self.done += 1
        self._line(f"[{self.done}/{self.total}] {label} {status}{' ' + detail if detail else ''}")

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

"""Progress display: a live line on a TTY (bytes, MB/s, ETA), plain periodic lines otherwise.

The initramfs console is not a TTY in the useful sense (no carriage-return redraw in logs), so
there a line is printed every ``interval`` seconds. ``add`` is called from download threads.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

MB = 1_000_000


def format_bytes(count: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(count) >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count:.0f} B"


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0 or seconds > 359999:
        return "--:--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def status_line(name: str, done: int, total: int, elapsed: float) -> str:
    """``kernel  512.0 MiB / 1.0 GiB  50%  850.3 MB/s  ETA 00:01`` (pure, for tests)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else None
    percent = 100.0 * done / total if total else 100.0
    return (
        f"{name}  {format_bytes(done)} / {format_bytes(total)}  {percent:3.0f}%  "
        f"{rate / MB:.1f} MB/s  ETA {format_eta(eta)}"
    )


class Progress:
    """Counts bytes of the current artifact and renders them now and then."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        enabled: bool = True,
        tty: bool | None = None,
        interval: float | None = None,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval if interval is not None else (0.25 if self.tty else 5.0)
        self.lock = threading.Lock()
        self.name = ""
        self.total = 0
        self.done = 0
        self.started = time.monotonic()
        self.last_shown = self.started

    def start(self, name: str, total: int) -> None:
        with self.lock:
            self.name, self.total, self.done = name, total, 0
            self.started = self.last_shown = time.monotonic()

    def add(self, count: int) -> None:
        with self.lock:
            self.done += count
            now = time.monotonic()
            if not self.enabled or now - self.last_shown < self.interval:
                return
            self.last_shown = now
            line = status_line(self.name, self.done, self.total, now - self.started)
        self._show(line)

    def _show(self, line: str) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + line)
        else:
            self.stream.write(f"INFO {line}\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the live line so the next log line starts on a fresh line."""
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

"""Step lines for a long build: ``[2/6] mmdebstrap bookworm amd64 ... done in 41.3 s``.

On a terminal the current step's line shows a live elapsed-time counter (rewritten once a
second by a thread); elsewhere (CI logs, pipes) each step is one line when it starts and one
when it ends. ``quiet`` prints nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO, total: int, *, tty: bool, quiet: bool = False) -> None:
        self.stream = stream
        self.total = total
        self.tty = tty
        self.quiet = quiet
        self.index = 0
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def note(self, text: str) -> None:
        if not self.quiet:
            self._write(f"{text}\n")

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        self.index += 1
        head = f"[{self.index}/{self.total}] {label}"
        start = time.monotonic()
        stop = threading.Event()
        ticker: threading.Thread | None = None
        if self.quiet:
            pass
        elif self.tty:
            self._write(f"{head} ...")

            def tick() -> None:
                # Bounded by the step: the event is set when it ends, whatever happens.
                while not stop.wait(1.0):
                    self._write(f"\r\x1b[K{head} ... {time.monotonic() - start:.0f}s")

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
        else:
            self._write(f"{head} ...\n")
        ok = False
        try:
            yield
            ok = True
        finally:
            stop.set()
            if ticker is not None:
                ticker.join(timeout=5)
            if not self.quiet:
                elapsed = time.monotonic() - start
                outcome = f"done in {elapsed:.1f} s" if ok else f"FAILED after {elapsed:.1f} s"
                prefix = "\r\x1b[K" if self.tty else ""
                self._write(f"{prefix}{head} ... {outcome}\n")

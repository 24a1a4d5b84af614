"""plasmd serve's stop on SIGTERM/SIGINT (cli/plasmd_serve.stop_on_signals): the signal sets the
stop event from a thread of its own, so it cannot deadlock the main thread.

The interleaving a fresh-clone CI run hit (plasmd serve ignored a SIGTERM and was killed 30 s
later): the signal arrived while the main thread was inside ``stop.wait()`` holding the event's
lock, and a handler calling ``stop.set()`` in that thread waited for that lock forever. Each
case runs in a child process, with a bounded wait."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.conftest import REPO

CHILD = """
import os, signal, sys, threading
sys.path.insert(0, {repo!r})
from phase_client.cli.plasmd_serve import stop_on_signals

stop = threading.Event()
stop_on_signals(stop, (signal.SIGTERM, signal.SIGINT))
# The main thread holding the event's lock, as inside stop.wait() (the test reaches into
# threading's internals only to force the interleaving).
with stop._cond:
    os.kill(os.getpid(), signal.{name})
    for _ in range(10000):  # bytecodes: Python runs the main thread's handler among these
        pass
print("stopped" if stop.wait(10) else "not stopped", flush=True)
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_signal_while_the_main_thread_holds_the_events_lock_still_stops(name: str) -> None:
    child = textwrap.dedent(CHILD.format(repo=str(REPO), name=name))
    result = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "stopped\n"


def test_other_signals_do_not_stop() -> None:
    child = textwrap.dedent(
        CHILD.format(repo=str(REPO), name="SIGUSR1")
        .replace(
            "stop_on_signals(stop, (signal.SIGTERM, signal.SIGINT))",
            "stop_on_signals(stop, (signal.SIGTERM, signal.SIGINT))\n"
            "signal.signal(signal.SIGUSR1, lambda *a: None)",
        )
        .replace("stop.wait(10)", "stop.wait(0.5)")
    )
    result = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "not stopped\n"

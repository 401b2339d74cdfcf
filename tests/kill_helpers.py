"""Killing a subprocess at a chosen moment (the SIGKILL-then-resume tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sigkill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 20 ms, at most ``timeout`` s);
    fails when ``proc`` ended first. Always reaps it and closes its pipes."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if ready():
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert proc.returncode == -signal.SIGKILL


def batches_polled(state_path: Path, server: Any, count: int | None = None) -> Callable[[], bool]:
    """Ready once the batch state file lists ``count`` batches (any number when None), each with an
    id that the fake server has answered at least two polls for."""
    from interp_playground.judge.batch import load_state

    def ready() -> bool:
        ids = [b.get("batch_id") for b in load_state(state_path)["batches"]] if state_path.exists() else []
        return bool(ids) and (count is None or len(ids) == count) and all(ids) and \
            all(server.retrieves[i] >= 2 for i in ids)

    return ready

"""Headless Chromium driven over the Chrome DevTools Protocol (``websocket-client``), for the report tests.

The tests that use it skip when ``/usr/bin/chromium`` is absent (CI installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


class Chromium:
    """A headless Chromium showing one page, driven over the DevTools Protocol."""

    def __init__(self, url: str, timeout: float = 60.0) -> None:
        import websocket

        self.profile = tempfile.mkdtemp(prefix="report-chromium-")
        self.proc = subprocess.Popen(
            [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-dev-shm-usage", "--remote-allow-origins=*",
             "--window-size=1400,1000", f"--user-data-dir={self.profile}",
             "--remote-debugging-port=0", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        try:
            port = self._port(timeout)
            ws_url = self._page_socket(port, timeout)
            self.ws = websocket.create_connection(ws_url, timeout=timeout, suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self._id = 0

    def _port(self, timeout: float) -> int:
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_file.exists():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    return int(lines[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self.proc.returncode}")
            time.sleep(0.1)
        raise TimeoutError("chromium did not open its DevTools port")

    def _page_socket(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                pages = [t for t in json.load(resp) if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.1)
        raise TimeoutError("chromium has no page target")

    def call(self, method: str, **params: Any) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        """Wait until ``url`` is loaded and its script has run to the end (``data-ready``)."""
        deadline = time.monotonic() + timeout
        check = (f"location.href === {json.dumps(url)} && document.readyState === 'complete' && "
                 "document.body !== null && document.body.getAttribute('data-ready') === '1'")
        while time.monotonic() < deadline:
            if self.js(check):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{url} did not finish loading")

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group this test started
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def choose(b: Chromium, select_id: str, value: str) -> None:
    """Set a ``<select>`` (or input) to ``value`` and fire its change event."""
    b.js(f"""(function () {{
        var s = document.getElementById({json.dumps(select_id)});
        s.value = {json.dumps(value)};
        s.dispatchEvent(new Event('change'));
    }})()""")


@contextmanager
def open_page(path: Path) -> Iterator[Chromium]:
    """A headless Chromium showing the file ``path`` once its script has run (the test skips
    without ``/usr/bin/chromium``)."""
    if not CHROMIUM.exists():
        pytest.skip("headless browser test needs /usr/bin/chromium (apt-get install -y chromium)")
    url = Path(path).resolve().as_uri()
    b = Chromium(url)
    try:
        b.wait_ready(url)
        yield b
    finally:
        b.close()


def show(b: Chromium, path: Path) -> None:
    """Navigate ``b`` to the file ``path`` and wait until its script has run."""
    url = Path(path).resolve().as_uri()
    b.call("Page.navigate", url=url)
    b.wait_ready(url)

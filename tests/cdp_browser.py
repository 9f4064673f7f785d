"""A minimal headless-Chromium driver over the DevTools protocol, for the browser tests of
the sidecar and the dashboard: load a page, collect JavaScript errors, evaluate an
expression, take a screenshot (of the viewport or of one element)."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
START_TIMEOUT_S = 30.0
COMMAND_TIMEOUT_S = 30.0

# Resolves once every plot on the page has drawn its SVG, two frames later; returns the
# plot count, plotly's own trace count, and the trace groups present in the DOM
# (g.trace for scatter/bar/box, g.hm for heatmaps).
RENDERED = """
new Promise((resolve, reject) => {
  const started = Date.now();
  const poll = () => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')];
    const drawn = plots.length > 0 && plots.every(p => p._fullLayout && p.querySelector('.main-svg'));
    if (drawn) {
      requestAnimationFrame(() => requestAnimationFrame(() => resolve({
        plots: plots.length,
        data_traces: plots.map(p => p.data.length),
        dom_traces: plots.map(p => p.querySelectorAll('g.trace, g.hm').length),
      })));
    } else if (Date.now() - started > 15000) {
      reject(new Error('plots not drawn within 15 s'));
    } else {
      setTimeout(poll, 25);
    }
  };
  poll();
})
"""


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("Chromium is not installed (.ci/run installs Debian's chromium)")


# The window every browser test renders in (the tests check screenshots against it).
WINDOW = (1100, 800)


class Browser:
    """One headless Chromium with a fresh profile, driven through one page target."""

    def __init__(self, profile_dir: Path, window: tuple[int, int] = (1100, 800)) -> None:
        profile_dir.mkdir(parents=True, exist_ok=False)  # fresh profile every time
        self._log = open(profile_dir.parent / "chromium.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                find_chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile_dir}",
                "--remote-debugging-port=0",
                f"--window-size={window[0]},{window[1]}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        try:
            port = self._devtools_port(profile_dir / "DevToolsActivePort")
            self._ws = websocket.create_connection(
                self._page_socket(port), timeout=COMMAND_TIMEOUT_S, suppress_origin=True
            )
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
            # The window includes browser chrome; fix the page's viewport itself.
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=window[0],
                height=window[1],
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def _devtools_port(self, port_file: Path) -> int:
        # With port 0, Chromium picks a free port and writes it to this file.
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if port_file.exists():
                lines = port_file.read_text().split("\n")
                if lines and lines[0].strip().isdigit():
                    return int(lines[0])
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"Chromium did not open its DevTools port (exit {self.process.poll()})")

    def _page_socket(self, port: int) -> str:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            with opener.open(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
                targets = json.loads(response.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise RuntimeError("Chromium opened no page target")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Sends one command and returns its result; events met meanwhile are kept."""
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float = COMMAND_TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for event in self.events[seen:]:
                if event["method"] == method:
                    return event
            seen = len(self.events)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {timeout} s")
            message = json.loads(self._ws.recv())
            if "method" in message:
                self.events.append(message)

    def load(self, url: str) -> None:
        """Navigates to ``url`` and waits for its load event; clears earlier events."""
        self.events.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"navigation to {url} failed: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """Evaluates JavaScript in the page (awaiting a promise) and returns its value."""
        result = self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluation failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def js_errors(self) -> list[str]:
        """Uncaught exceptions, console.error calls and error log entries since load."""
        errors = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(details.get("exception", {}).get("description") or details["text"])
            elif event["method"] == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "assert",
            ):
                errors.append(" ".join(str(a.get("value", a)) for a in params["args"]))
            elif event["method"] == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
        return errors

    def screenshot(self, path: Path, selector: str | None = None) -> bytes:
        """Saves a PNG of the viewport, or of the first element matching ``selector``
        (wherever it lies on the page), and returns its bytes."""
        params: dict[str, Any] = {"format": "png"}
        if selector is not None:
            box = self.evaluate(
                f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                ".getBoundingClientRect(); return {x: r.left + window.scrollX, "
                "y: r.top + window.scrollY, width: r.width, height: r.height}; })()"
            )
            params.update(clip={**box, "scale": 1}, captureBeyondViewport=True)
        data = base64.b64decode(self.call("Page.captureScreenshot", **params)["data"])
        path.write_bytes(data)
        return data

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

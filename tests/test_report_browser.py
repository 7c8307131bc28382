"""The HTML report in real headless Chromium: no console errors, no network, a real screenshot.

Chromium is Debian's ``chromium`` package (CI installs it). When it is missing this test fails
with a clear message rather than skipping: a skipped browser check would hide a broken report.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket  # websocket-client (installed with kubernetes)

from perfgate.report import load_result, write_report

try:
    from report_fixtures import make_history
except ImportError:  # tests/ imported as a package
    from tests.report_fixtures import make_history

pytestmark = pytest.mark.browser

DATA = Path(__file__).parent / "data"
WIDTH, HEIGHT = 1280, 900
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--hide-scrollbars",
    f"--window-size={WIDTH},{HEIGHT}",
)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if os.path.exists("/usr/bin/chromium"):
        return "/usr/bin/chromium"
    pytest.fail(
        "headless Chromium is required for the browser test and was not found: "
        "install Debian's package with `apt-get install -y chromium` (CI does this)"
    )


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = load_result(DATA / "result_block.json")
    out = tmp_path_factory.mktemp("browser") / "report"
    return write_report(result, out, history=make_history()).html


@contextlib.contextmanager
def _devtools(chromium: str) -> Iterator[str]:
    """Start Chromium with a DevTools port; yield the page's websocket URL; always stop it."""
    with tempfile.TemporaryDirectory(prefix="perfgate-chromium-") as profile:
        proc = subprocess.Popen(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",  # Chromium picks a free port, written to a file
                "--remote-debugging-address=127.0.0.1",
                "--remote-allow-origins=*",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None:
                    pytest.fail(
                        f"chromium exited with code {proc.returncode} before DevTools came up"
                    )
                if time.monotonic() > deadline:
                    pytest.fail("chromium's DevTools port did not come up within 30 s")
                time.sleep(0.05)
            port = int(port_file.read_text().splitlines()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                targets = json.load(resp)
            page = next(t for t in targets if t.get("type") == "page")
            yield page["webSocketDebuggerUrl"]
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


class _Cdp:
    """A minimal DevTools-protocol client: commands by id, events collected on the side."""

    def __init__(self, url: str) -> None:
        self.ws = websocket.create_connection(url, timeout=20, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.ws.close()

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg_id = self.next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise AssertionError(f"{method} failed: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def wait_for(self, event: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(e["method"] == event for e in self.events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event} within {timeout_s} s")
            self.ws.settimeout(remaining)
            msg = json.loads(self.ws.recv())
            if "method" in msg:
                self.events.append(msg)

    def drain(self, seconds: float) -> None:
        """Collect late events (a lazy request, a deferred error) for a moment."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.ws.settimeout(remaining)
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                return
            if "method" in msg:
                self.events.append(msg)


def test_report_loads_offline_without_errors_or_requests(report_html: Path) -> None:
    chromium = _chromium()
    url = report_html.resolve().as_uri()
    with _devtools(chromium) as ws_url:
        cdp = _Cdp(ws_url)
        try:
            for domain in ("Network", "Runtime", "Log", "Page"):
                cdp.send(f"{domain}.enable")
            # A laptop-sized viewport, whatever window decorations headless mode assumes.
            cdp.send(
                "Emulation.setDeviceMetricsOverride",
                width=WIDTH,
                height=HEIGHT,
                deviceScaleFactor=1,
                mobile=False,
            )
            cdp.events.clear()  # about:blank's own events
            cdp.send("Page.navigate", url=url)
            cdp.wait_for("Page.loadEventFired", timeout_s=30)
            cdp.drain(1.0)
            state = cdp.send(
                "Runtime.evaluate",
                expression=(
                    "JSON.stringify({svgs: document.querySelectorAll('svg').length,"
                    " title: document.title,"
                    " banner: document.querySelector('.banner .word').textContent,"
                    " overflow: document.documentElement.scrollWidth - window.innerWidth,"
                    " chartWidth: document.querySelector('#chart-throughput svg')"
                    ".getBoundingClientRect().width})"
                ),
                returnByValue=True,
            )
            shot = cdp.send("Page.captureScreenshot", format="png")
        finally:
            cdp.close()

    requests = [
        e["params"]["request"]["url"]
        for e in cdp.events
        if e["method"] == "Network.requestWillBeSent"
    ]
    assert requests == [url], f"only the report itself may be loaded, saw {requests}"
    errors = [e for e in cdp.events if e["method"] == "Runtime.exceptionThrown"]
    errors += [
        e
        for e in cdp.events
        if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
    ]
    errors += [
        e
        for e in cdp.events
        if e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert")
    ]
    assert errors == [], f"console errors: {errors}"

    page = json.loads(state["result"]["value"])
    assert page["svgs"] == 8
    assert page["banner"] == "BLOCKED"
    assert page["title"].startswith("perfgate · exchange · v1.5.0-rc.2")
    assert page["overflow"] <= 0, "the page must fit a laptop-wide window without side-scrolling"
    assert page["chartWidth"] > 400, "charts must be large enough to read"
    _assert_real_png(base64.b64decode(shot["data"]), WIDTH, HEIGHT)


def test_screenshot_flag_renders_the_report(report_html: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    shot = tmp_path / "report.png"
    with tempfile.TemporaryDirectory(prefix="perfgate-chromium-") as profile:
        proc = subprocess.run(
            [
                chromium,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                report_html.resolve().as_uri(),
            ],
            capture_output=True,
            timeout=90,
            check=False,
        )
    assert shot.exists(), f"no screenshot; chromium said: {proc.stderr.decode()[-2000:]}"
    _assert_real_png(shot.read_bytes(), WIDTH, HEIGHT)


def _assert_real_png(data: bytes, width: int, height: int) -> None:
    """A PNG of the window's size showing a page, with the red BLOCKED banner at the top."""
    from PIL import Image  # Pillow comes with matplotlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    assert image.size == (width, height)
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 200, "a rendered report has text, charts and tints, not a blank page"
    banner_red = (0xB9, 0x1C, 0x1C)
    top = image.crop((0, 0, width, 120))
    reds = sum(n for n, c in top.getcolors(maxcolors=1_000_000) or [] if c == banner_red)
    assert reds > 20_000, "the verdict banner is missing from the top of the page"

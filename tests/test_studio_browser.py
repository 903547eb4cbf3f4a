"""Browser mode, driven by headless Chromium: `fourd-studio --browser` serves the page, the page shows
the scene, and clicking a control (a camera preset) changes what it shows.

Chromium is driven through its DevTools protocol (websockets, already a viser dependency); the test
skips when Debian's `chromium` is not installed.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` package")]


def colourful_pixels(png: bytes) -> int:
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((image.max(-1) - image.min(-1) > 60).sum())


@pytest.fixture
def studio_url(tmp_path):
    from studio.viewer import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.pop("DISPLAY", None)
    process = subprocess.Popen([sys.executable, "-m", "studio.app", "--browser", "--port", str(port)], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        for line in process.stdout:
            if "serving at" in line:
                url = line.split("serving at", 1)[1].split()[0]
                break
            assert time.monotonic() < deadline and process.poll() is None, "browser mode did not start"
        else:
            pytest.fail("browser mode exited without printing its URL")
        assert url == f"http://127.0.0.1:{port}"
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


class DevTools:
    """A minimal Chrome DevTools Protocol client for one page."""

    def __init__(self, user_dir: Path) -> None:
        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={user_dir}",
             "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", "--window-size=1100,700",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        active = user_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (active.exists() and active.read_text().strip()):
            assert time.monotonic() < deadline and self.process.poll() is None, "chromium did not start"
            time.sleep(0.1)
        port = int(active.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        from websockets.sync.client import connect

        self.socket = connect(page["webSocketDebuggerUrl"], max_size=2**26)
        self._ids = itertools.count(1)

    def call(self, method: str, **params):
        request_id = next(self._ids)
        self.socket.send(json.dumps({"id": request_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=60))
            if message.get("id") == request_id:
                assert "error" not in message, message
                return message.get("result", {})

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        self.socket.close()
        self.process.terminate()
        self.process.wait(timeout=20)


def wait_for_stable_scene(browser: DevTools, timeout: float = 90.0) -> bytes:
    deadline = time.monotonic() + timeout
    previous = None
    while time.monotonic() < deadline:
        time.sleep(1.0)
        shot = browser.screenshot()
        if colourful_pixels(shot) > 2000 and shot == previous:
            return shot
        previous = shot
    pytest.fail("the page never showed a stable scene")


def test_browser_mode_shows_the_scene_and_a_control_changes_it(studio_url, tmp_path):
    browser = DevTools(tmp_path / "chromium")
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=studio_url)
        before = wait_for_stable_scene(browser)
        (tmp_path / "before.png").write_bytes(before)
        labels = browser.evaluate("[...document.querySelectorAll('button')].map(b => b.textContent.trim())")
        assert {"Front", "Side", "Top", "Reset"} <= set(labels), labels
        assert browser.evaluate("[...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Top')"
                                ".click() === undefined")
        time.sleep(1.0)
        after = wait_for_stable_scene(browser)
        (tmp_path / "after.png").write_bytes(after)
    finally:
        browser.close()
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(before)).convert("RGB")).astype(int)
    b = np.asarray(Image.open(io.BytesIO(after)).convert("RGB")).astype(int)
    changed = (np.abs(a - b).max(-1) > 40).mean()
    assert changed > 0.01, f"clicking Top changed only {changed:.2%} of the page"
    if os.environ.get("STUDIO_BROWSER_SHOTS"):
        out = Path(os.environ["STUDIO_BROWSER_SHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "browser-before.png").write_bytes(before)
        (out / "browser-after-top.png").write_bytes(after)

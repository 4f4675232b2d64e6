"""Headless Chromium driven over the DevTools protocol's WebSocket, for the tests of web pages."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

import requests
from websockets.sync.client import connect

from tests.conftest import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium and one page of it, over the DevTools protocol's WebSocket."""

    def __init__(self, profile: Path, host_rules: tuple[str, ...] = ()):
        port = free_port()
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                # Pages may name fonts or scripts on the internet: only this machine resolves.
                # `host_rules` come first: "MAP api.test 127.0.0.1" serves a host by name.
                "--host-resolver-rules="
                + ", ".join(
                    [*host_rules, "MAP * ~NOTFOUND", "EXCLUDE 127.0.0.1", "EXCLUDE localhost"]
                ),
                f"--remote-debugging-port={port}",
                f"--user-data-dir={profile}",
                "--window-size=1280,900",
                "--hide-scrollbars",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        page = self._first_page(port)
        self.closing = ExitStack()
        self.ws = self.closing.enter_context(
            connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        )
        self.ids = itertools.count(1)
        # What the page reports meanwhile (Network.* once enabled), oldest first.
        self.events: list[dict] = []

    def _first_page(self, port: int) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                return next(page for page in pages if page["type"] == "page")
            except (requests.RequestException, StopIteration):
                # A first start on a fresh profile can accept the connection and answer late.
                time.sleep(0.2)
        raise AssertionError("Chromium did not open its DevTools port within 30 s")

    def send(self, method: str, **params) -> dict:
        call = next(self.ids)
        self.ws.send(json.dumps({"id": call, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == call:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def open(self, url: str, width: int = 1280, height: int = 900) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)

    def wait_for(self, expression: str, what: str, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.25)
        text = self.evaluate("document.body ? document.body.innerText : ''")
        raise AssertionError(f"no {what} within {timeout:.0f} s; the page shows: {text[:1500]}")

    def type_and_enter(self, selector: str, text: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)
        self.press_enter()

    def press_enter(self) -> None:
        """Enter, as a keyboard sends it, to whatever has the focus."""
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                type=kind,
                key="Enter",
                code="Enter",
                windowsVirtualKeyCode=13,
                **({"text": "\r"} if kind == "keyDown" else {}),
            )

    def click(self, selector: str, last: bool = False) -> None:
        """Click the first element `selector` matches (`last`: the last one)."""
        pick = f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
        pick += ".pop()" if last else "[0]"
        assert self.evaluate(f"(e => e ? (e.click(), true) : false)({pick})"), (
            f"nothing to click at {selector}"
        )

    def foreign_requests(self) -> list[str]:
        """Every resource the page loaded from another origin than its own."""
        return self.evaluate(
            "performance.getEntriesByType('resource').map(e => e.name)"
            ".filter(n => !n.startsWith(location.origin) && !n.startsWith('data:'))"
        )

    def screenshot(self, name: str, directory: Path) -> Path:
        png = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        assert png.startswith(b"\x89PNG") and len(png) > 20_000, "a blank screenshot"
        path = directory / name
        path.write_bytes(png)
        if os.environ.get("SCREENSHOTS"):
            shutil.copyfile(path, Path(os.environ["SCREENSHOTS"]) / name)
        return path

    def close(self) -> None:
        self.closing.close()
        self.process.terminate()
        self.process.wait(timeout=20)

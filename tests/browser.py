"""Headless Chromium for the tests: open a page, read it back, screenshot it, print it.

Driven through the DevTools protocol (a websocket, via aiohttp) so a test sees what a
coach's browser sees: whether each image decoded, what the tables hold, and which print
styles apply. Debian's ``chromium`` package (``/usr/bin/chromium``); no browser download.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# no network beyond the page, no first-run or sync machinery, a profile of its own
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
ARTIFACTS = Path(__file__).parent / "artifacts"  # git-ignored


class BrowserError(RuntimeError):
    pass


def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``folder`` over http on localhost; yields the base URL."""
    handler = partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Page:
    """What a script read from the loaded page, and the screenshot taken."""

    facts: dict[str, Any]
    print_facts: dict[str, Any]
    screenshot: Path


def _command(profile: Path, *extra: str) -> list[str]:
    if not CHROMIUM.exists():
        raise BrowserError(f"{CHROMIUM} is missing: apt-get install -y chromium "
                           "(deploy/setup.sh installs it)")
    return [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *extra]


@contextlib.contextmanager
def _profile() -> Iterator[Path]:
    """A fresh profile folder, removed afterwards. Chromium's helper processes can still
    write into it for a moment after the browser exits: try again, then leave it."""
    folder = Path(tempfile.mkdtemp(prefix="sw-chromium-"))
    try:
        yield folder
    finally:
        for _ in range(10):
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                break
            time.sleep(0.5)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the browser and every helper it started (they share its process group)."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def inspect(url: str, script: str, print_script: str, screenshot: Path,
            timeout_s: float = 60.0) -> Page:
    """Load ``url``, run ``script`` (an expression giving JSON-able facts), take a
    full-page PNG, then run ``print_script`` with print styles applied."""
    with _profile() as profile:
        process = subprocess.Popen(
            _command(profile, "--remote-debugging-port=0", "--window-size=1280,900",
                     "about:blank"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            port = _devtools_port(profile, process, timeout_s)
            facts, png, print_facts = asyncio.run(asyncio.wait_for(
                _inspect(port, url, script, print_script), timeout_s))
            screenshot.write_bytes(png)
            return Page(facts, print_facts, screenshot)
        finally:
            _stop_group(process)
            if process.stderr is not None:
                process.stderr.close()


def print_to_pdf(url: str, pdf: Path, timeout_s: float = 60.0) -> int:
    """Chromium's own ``--print-to-pdf`` of ``url``; returns the PDF's page count."""
    with _profile() as profile:
        result = subprocess.run(
            _command(profile, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url),
            capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0 or not pdf.exists():
        raise BrowserError(f"chromium --print-to-pdf failed ({result.returncode}): "
                           f"{result.stderr[-2000:]}")
    return pdf_pages(pdf.read_bytes())


def pdf_pages(data: bytes) -> int:
    """Page objects in a PDF (Chromium writes them uncompressed)."""
    if not data.startswith(b"%PDF-"):
        raise BrowserError("not a PDF")
    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], timeout_s: float) -> int:
    """Chromium writes the port it chose into ``DevToolsActivePort`` in its profile."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise BrowserError(f"chromium exited with {process.returncode}: {err[-2000:]}")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(marker.read_text().splitlines()[0])
        time.sleep(0.1)
    raise BrowserError(f"chromium gave no DevTools port within {timeout_s:.0f} s")


class _DevTools:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": method,
                                           "params": params}))
        while True:
            message = json.loads(await self.ws.receive_str())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def wait_event(self, method: str) -> dict[str, Any]:
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(json.loads(await self.ws.receive_str()))

    async def evaluate(self, expression: str) -> Any:
        answer = await self.call("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")


async def _inspect(port: int, url: str, script: str, print_script: str
                   ) -> tuple[Any, bytes, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
            targets = await answer.json()
        page = next(t for t in targets if t.get("type") == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            tools = _DevTools(ws)
            await tools.call("Page.enable")
            await tools.call("Runtime.enable")
            navigated = await tools.call("Page.navigate", url=url)
            if navigated.get("errorText"):
                raise BrowserError(f"could not open {url}: {navigated['errorText']}")
            await tools.wait_event("Page.loadEventFired")  # after every image
            facts = await tools.evaluate(script)
            metrics = await tools.call("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            shot = await tools.call("Page.captureScreenshot", format="png",
                                    captureBeyondViewport=True,
                                    clip={"x": 0, "y": 0, "width": size["width"],
                                          "height": size["height"], "scale": 1})
            await tools.call("Emulation.setEmulatedMedia", media="print")
            print_facts = await tools.evaluate(print_script)
    return facts, base64.b64decode(shot["data"]), print_facts

"""Open a page in real headless Chromium and drive it over the DevTools protocol (stdlib websocket client).

``inspect_page(url)`` loads the page, collects console errors and uncaught exceptions, evaluates a few
expressions and takes a PNG screenshot (of the page, or of one element).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--remote-debugging-port=0", "--hide-scrollbars",
)  # fmt: skip


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: masked text frames out, text frames in."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        assert url.startswith("ws://")
        hostport, path = url[5:].split("/", 1)
        host, port = hostport.split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        )  # fmt: skip
        response = b""
        while b"\r\n\r\n" not in response:
            response += self.sock.recv(4096)
        head, self.buffer = response.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(f"websocket upgrade refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("websocket closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        header = bytes([0x81]) + (
            bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
            if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n)
        )  # fmt: skip
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0, 1, 2):
                message += data
                if b0 & 0x80:
                    return message.decode()

    def close(self) -> None:
        self.sock.close()


@dataclass
class PageResult:
    console_errors: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""
    requests: list[str] = field(default_factory=list)
    stderr: str = ""


class DevTools:
    def __init__(self, ws: WebSocket) -> None:
        self.ws, self.next_id, self.events = ws, 0, []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_loaded(self, timeout: float = 30) -> None:
        """Until the navigated page (not the first about:blank) has fired its load event."""
        deadline = time.monotonic() + timeout
        expr = "document.readyState + ' ' + location.href"
        while True:
            state = self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value", "")
            if state.startswith("complete ") and not state.endswith("about:blank"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"page did not load: {state}")
            time.sleep(0.05)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
        elif e.get("method") == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            out.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
        elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def _port(profile: Path, proc: subprocess.Popen, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if marker.is_file() and marker.read_text().strip():
            return int(marker.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.1)
    raise TimeoutError("chromium did not open its DevTools port")


def _stop(proc: subprocess.Popen) -> None:
    """End the browser and its helper processes: the process group it leads (started for it alone)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # helpers of the group may outlive the main process briefly
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def inspect_page(
    url: str, expressions: dict[str, str], *, selector: str | None = None, width: int = 1280
) -> PageResult:
    """Load ``url``; return console errors, the values of ``expressions`` and a PNG screenshot."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    result = PageResult()
    with tempfile.TemporaryDirectory(prefix="edgekit-chromium-", ignore_cleanup_errors=True) as tmp:
        profile = Path(tmp)
        errlog = open(profile.parent / f"{profile.name}.stderr", "w+")
        proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=errlog, start_new_session=True)  # fmt: skip
        try:
            port = _port(profile, proc)
            req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
            target = json.loads(urllib.request.urlopen(req, timeout=30).read())
            ws = WebSocket(target["webSocketDebuggerUrl"])
            dt = DevTools(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                dt.call(f"{domain}.enable")
            dt.call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1, mobile=False)
            dt.call("Page.navigate", url=url)
            dt.wait_loaded()
            for name, expr in expressions.items():
                result.values[name] = dt.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get(
                    "value"
                )
            params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
            if selector:
                rect = dt.call("Runtime.evaluate", returnByValue=True, expression=(
                    f"(()=>{{const r=document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                    "return {x:r.x+window.scrollX,y:r.y+window.scrollY,width:r.width,height:r.height,scale:1}})()"
                ))["result"]["value"]  # fmt: skip
                params["clip"] = rect
            result.screenshot = base64.b64decode(dt.call("Page.captureScreenshot", **params)["data"])
            time.sleep(0.2)  # let late console messages arrive
            dt.call("Runtime.evaluate", expression="1")
            result.console_errors = _errors(dt.events)
            result.requests = [
                e["params"]["request"]["url"] for e in dt.events if e.get("method") == "Network.requestWillBeSent"
            ]
            ws.close()
        finally:
            _stop(proc)
            errlog.seek(0)
            result.stderr = errlog.read()
            errlog.close()
            Path(errlog.name).unlink(missing_ok=True)
    return result

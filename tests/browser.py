"""A real headless Chromium for tests: what a web page on one loopback origin can or cannot do
against one of our servers on another loopback origin (CORS, simple requests, Origin checks).

    from tests.browser import chromium_path, load_page

    pytestmark = pytest.mark.skipif(chromium_path() is None, reason="needs Debian's `chromium` package")

    text = load_page(html)                      # page at http://127.0.0.1:<free port>/
    text = load_page(html, host="localhost")    # page at http://localhost:<free port>/

The page reports its outcome by creating (or filling) an element with id "result" once its work is
done; load_page waits for that element's text to be non-empty and returns it, or raises
BrowserTimeout after `timeout` seconds. Another condition can be given as a JavaScript expression
(`result_js`) that evaluates to a non-empty string when done and to null/"" before.

Chromium is driven over the DevTools protocol (websocket-client), with a fresh profile in a temp
folder, no proxy and a host resolver that resolves nothing but loopback names, so it can reach
nothing but loopback. Its process group is always killed and its temp folder removed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import websocket  # websocket-client

RESULT_JS = "(document.getElementById('result') || {}).textContent || null"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-proxy-server",
    # Only loopback names resolve: nothing else can be reached even by accident.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


class BrowserError(RuntimeError):
    """Chromium did not start or the DevTools protocol failed; the message ends with its log."""


class BrowserTimeout(BrowserError):
    """The page reported no result in time."""


def chromium_path() -> str | None:
    """The Chromium binary ($CHROMIUM, else `chromium` or `chromium-browser` on PATH), or None."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@contextlib.contextmanager
def serve_html(html: str, host: str = "127.0.0.1"):
    """Serve `html` for GET of any path but /favicon.ico on 127.0.0.1, a free port, in a thread;
    yield the page's URL with `host` as its host name (e.g. "localhost" for a different origin)."""
    body = html.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/favicon.ico":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def load_page(
    html: str, *, host: str = "127.0.0.1", timeout: float = 20.0, result_js: str = RESULT_JS
) -> str:
    """Serve `html` on a loopback origin (see serve_html), open it in headless Chromium and return
    the text it reports (see the module's docstring). Raises BrowserTimeout after `timeout` s."""
    with serve_html(html, host) as url:
        return load_url(url, timeout=timeout, result_js=result_js)


def load_url(url: str, *, timeout: float = 20.0, result_js: str = RESULT_JS) -> str:
    """Open `url` (a loopback one) in a fresh headless Chromium and return what `result_js` gives
    once non-empty. Raises BrowserTimeout after `timeout` s, BrowserError if Chromium fails."""
    binary = chromium_path()
    if binary is None:
        raise BrowserError("no chromium installed (Debian: apt-get install -y chromium)")
    deadline = time.monotonic() + timeout
    tmp = Path(tempfile.mkdtemp(prefix="test-chromium-"))
    profile = tmp / "profile"
    log_path = tmp / "chromium.log"
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: zygote, renderers and all die with it
            )
        try:
            ws_url = _devtools_url(proc, profile / "DevToolsActivePort", deadline)
            return _run_page(ws_url, url, result_js, deadline, timeout)
        except BrowserError as e:
            raise type(e)(f"{e}\n--- chromium log (tail) ---\n{_tail(log_path)}") from None
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def _devtools_url(proc: subprocess.Popen, port_file: Path, deadline: float) -> str:
    """Chromium writes "<port>\\n<browser path>" to DevToolsActivePort once it listens."""
    while True:
        if proc.poll() is not None:
            raise BrowserError(f"chromium exited with status {proc.returncode} before DevTools listened")
        with contextlib.suppress(OSError):
            lines = port_file.read_text().splitlines()
            if len(lines) >= 2 and lines[0].strip().isdigit():
                return f"ws://127.0.0.1:{lines[0].strip()}{lines[1].strip()}"
        if time.monotonic() > deadline:
            raise BrowserTimeout("chromium's DevTools did not start in time")
        time.sleep(0.05)


def _run_page(ws_url: str, url: str, result_js: str, deadline: float, timeout: float) -> str:
    try:
        # No Origin header: Chromium refuses DevTools websockets from origins not allowed by flag.
        ws = websocket.create_connection(
            ws_url, timeout=max(0.1, deadline - time.monotonic()), suppress_origin=True
        )
    except (OSError, websocket.WebSocketException) as e:
        raise BrowserError(f"cannot connect to chromium's DevTools at {ws_url}: {e!r}") from None
    ids = itertools.count(1)

    def call(method: str, params: dict | None = None, session: str | None = None) -> dict:
        msg_id = next(ids)
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            ws.send(json.dumps(msg))
            while True:
                ws.settimeout(max(0.1, deadline - time.monotonic()))
                reply = json.loads(ws.recv())
                if reply.get("id") == msg_id:
                    break
        except websocket.WebSocketTimeoutException:
            raise BrowserTimeout(f"no page result within {timeout}s (DevTools {method} hung)") from None
        except (OSError, ValueError, websocket.WebSocketException) as e:
            raise BrowserError(f"DevTools {method} failed: {e!r}") from None
        if "error" in reply:
            raise BrowserError(f"DevTools {method}: {reply['error']}")
        return reply["result"]

    try:
        target = call("Target.createTarget", {"url": url})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        last = None
        while True:
            result = call("Runtime.evaluate", {"expression": result_js, "returnByValue": True}, session)
            if "exceptionDetails" in result:
                details = result["exceptionDetails"]
                last = details.get("exception", {}).get("description") or details
            else:
                value = result["result"].get("value")
                if value not in (None, ""):
                    return str(value)
            if time.monotonic() > deadline:
                state = call("Runtime.evaluate", {"expression": "location.href + ' ' + document.readyState",
                                                  "returnByValue": True}, session)
                page = state.get("result", {}).get("value")
                raise BrowserTimeout(f"no page result within {timeout}s (page: {page}; last error: {last})")
            time.sleep(0.05)
    finally:
        with contextlib.suppress(Exception):
            ws.close()


def _tail(path: Path, limit: int = 3000) -> str:
    with contextlib.suppress(OSError):
        return path.read_bytes()[-limit:].decode(errors="replace")
    return ""

"""In front of Gradio's own routes: the login route's throttle and the upload route's quota.

Two routes of Gradio's server run none of our handlers: `POST /login` checks a password, and
`POST /gradio_api/upload` writes any file anyone sends into Gradio's file cache (before any
session exists: the route carries none). `Gate` is an ASGI middleware given to Gradio's app
(`launch(app_kwargs=...)`, app.py) that applies our rules there:

- login: a name or address that `LoginThrottle` (users.py) has locked out is answered 429 with
  the seconds to wait (and Retry-After) without checking the password; the route's answer
  (200 or 400) is counted as a success or a failure.
- upload: an upload counts against its uploader, the login when one is logged in, else the
  client's address, whose uploads still in the cache may hold at most `Limits.session_bytes`;
  all uploads together at most `Limits.cache_bytes`. An upload must say its size
  (Content-Length), is counted as at least `MIN_FILE` bytes (so tiny files cannot pile up),
  and stops counting once Gradio's cache clean-up has removed it (`UploadLedger.age_s`:
  the app cleans its cache on that schedule). A refused upload is never written.

Nothing here reads a session or decides who owns a file (`sessions.py`).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from typing import Callable

from adapters.limits import Limits, env_name
from playground.users import LoginThrottle

LOGIN_PATHS = ("/login", "/login/")
UPLOAD_PATHS = ("/gradio_api/upload", "/gradio_api/upload/")
MAX_FORM = 64 * 1024  # a login form is a name and a password
MIN_FILE = 64 * 1024
MB = 1 << 20


class UploadLedger:
    """Bytes each uploader holds in Gradio's file cache (uploads younger than `age_s`)."""

    def __init__(self, limits: Limits, age_s: float, clock: Callable[[], float] = time.monotonic):
        self.quota, self.cap, self.age_s, self.clock = limits.session_bytes, limits.cache_bytes, age_s, clock
        self._by_key: dict[str, deque[tuple[float, int]]] = {}
        self._all: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def refusal(self, key: str, size: int) -> str | None:
        """Why an upload of `size` bytes from `key` is refused; None when it fits."""
        size = max(size, MIN_FILE)
        with self._lock:
            self._expire()
            held = sum(n for _, n in self._by_key.get(key, ()))
            total = sum(n for _, n in self._all)
        if held + size > self.quota:
            return (f"uploads from this client hold {held / MB:.0f} MB; {size / MB:.1f} MB more would pass the quota "
                    f"of {self.quota / MB:.0f} MB ({env_name('session_bytes')}): they are removed "
                    f"{self.age_s / 60:.0f} min after upload")
        if total + size > self.cap:
            return (f"the server's upload space is full ({total / MB:.0f} MB of {self.cap / MB:.0f} MB, "
                    f"{env_name('cache_bytes')}): try again in a few minutes")
        return None

    def add(self, key: str, size: int) -> None:
        entry = (self.clock(), max(size, MIN_FILE))
        with self._lock:
            self._by_key.setdefault(key, deque()).append(entry)
            self._all.append(entry)

    def _expire(self) -> None:
        cutoff = self.clock() - self.age_s
        while self._all and self._all[0][0] < cutoff:
            self._all.popleft()
        for key in list(self._by_key):
            line = self._by_key[key]
            while line and line[0][0] < cutoff:
                line.popleft()
            if not line:
                del self._by_key[key]


class Gate:
    """ASGI middleware: see the module doc."""

    def __init__(self, app, throttle: LoginThrottle, ledger: UploadLedger):
        self.app, self.throttle, self.ledger = app, throttle, ledger

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            path = _route(scope)
            if path in LOGIN_PATHS:
                return await self._login(scope, receive, send)
            if path in UPLOAD_PATHS:
                return await self._upload(scope, receive, send)
        return await self.app(scope, receive, send)

    async def _login(self, scope, receive, send):
        body = await _read_body(receive, MAX_FORM)
        if body is None:
            return await _answer(send, 413, {"detail": "a login form is at most 64 KB"})
        user, address = await _form_user(scope, body), _address(scope)
        wait = self.throttle.wait(user, address)
        if wait > 0:
            seconds = math.ceil(wait)
            return await _answer(send, 429, {"detail": f"too many wrong passwords: try again in {seconds} s"},
                                 [(b"retry-after", str(seconds).encode())])
        status = await _pass_on(self.app, scope, _replay(body), send)
        if status == 200:
            self.throttle.succeeded(user, address)
        elif status in (400, 401):
            self.throttle.failed(user, address)

    async def _upload(self, scope, receive, send):
        length = _header(scope, b"content-length")
        if length is None or not length.isdigit():
            return await _answer(send, 411, {"detail": "an upload must say its size (Content-Length)"})
        key = _uploader(scope)
        refusal = self.ledger.refusal(key, int(length))
        if refusal:
            return await _answer(send, 413, {"detail": refusal})
        status = await _pass_on(self.app, scope, receive, send)
        if status == 200:
            self.ledger.add(key, int(length))


async def _pass_on(app, scope, receive, send) -> int | None:
    """Call the app, returning the status it answered with."""
    seen: dict[str, int] = {}

    async def watch(message):
        if message["type"] == "http.response.start":
            seen["status"] = message["status"]
        await send(message)

    await app(scope, receive, watch)
    return seen.get("status")


async def _read_body(receive, limit: int) -> bytes | None:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _form_user(scope, body: bytes) -> str:
    """The form's user name as Gradio's login route reads it (stripped), '' when there is none."""
    from starlette.requests import Request

    try:
        form = await Request(scope, _replay(body)).form()
        name = form.get("username")
    except Exception:  # a malformed form: Gradio's route refuses it; it still counts as a try
        return ""
    return name.strip() if isinstance(name, str) else ""


def _route(scope) -> str:
    """The request's path within the app (behind a proxy the path may start with its root path)."""
    path, root = scope["path"], scope.get("root_path") or ""
    return path[len(root):] or "/" if root and path.startswith(root) else path


def _address(scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return None


def _uploader(scope) -> str:
    """The login whose cookie the request carries (Gradio's own token table), else the address."""
    app = scope.get("app")
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    cookies = _header(scope, b"cookie") or ""
    if tokens and cookie_id:
        for part in cookies.split(";"):
            name, _, value = part.strip().partition("=")
            if name in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}") and value in tokens:
                return f"user:{tokens[value]}"
    return f"address:{_address(scope)}"


async def _answer(send, status: int, content: dict, headers: list | None = None) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})

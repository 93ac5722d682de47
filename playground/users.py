"""Who may log in to the web app, and how often they may try: `--auth USER:PASS`, or a users file
(`--auth @FILE`, `--users FILE`: adapters/files/userfile.py reads it), whether Hugging Face OAuth is on
(a Space with `hf_oauth: true`), and the slowing of password guessing.

`LoginThrottle` is the policy: after `Limits.login_failures` wrong passwords in a row for one user
name, or from one client address, further tries for that name (or from that address) are
refused without checking the password for `Limits.login_lockout_s` seconds; each further
lockout in a row doubles the window (at most an hour). A right password after a window clears
the user's count. Tries refused during a window do not count or extend it. Each failure and
lockout is logged. The tables keep at most `MAX_TRACKED` names and addresses (the oldest go),
so random names cannot fill memory. It is handed the clock, so a test needs no sleeping; the
app applies it at the login route (gate.py). What a login owns (its folder) is decided in
`sessions.py`; this file only says who gets in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping

from adapters.errors import LoraEqError
from adapters.files.userfile import Users, parse_user_line, read_users_file
from adapters.limits import Limits

__all__ = ["LoginThrottle", "Users", "oauth_enabled", "parse_auth", "read_users_file"]

log = logging.getLogger("loraeq.logins")
MAX_TRACKED = 10_000
MAX_LOCKOUT_S = 3600.0


def parse_auth(auth: str | None, users_file: str | None = None) -> Users | None:
    """The logins `--auth` (USER:PASS or @FILE) and `--users FILE` allow; None when neither is given."""
    if auth and users_file:
        raise LoraEqError("give either --auth or --users, not both")
    if users_file:
        return read_users_file(users_file)
    if not auth:
        return None
    if auth.startswith("@"):
        return read_users_file(auth[1:])
    if ":" not in auth.strip(":"):
        raise LoraEqError("--auth expects USER:PASS, or @FILE for a users file")
    user, secret = parse_user_line(auth, "--auth")
    if secret[0] != "plain":
        raise LoraEqError("--auth expects USER:PASS (put hashed passwords in a users file)")
    return Users({user: secret})


def oauth_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Hugging Face OAuth is on: a Space (SPACE_ID) whose metadata has `hf_oauth: true` (OAUTH_CLIENT_ID)."""
    env = os.environ if env is None else env
    return bool(env.get("SPACE_ID") and env.get("OAUTH_CLIENT_ID"))


@dataclass
class _Record:
    failures: int = 0  # wrong passwords since the last success
    lockouts: int = 0  # windows in a row
    until: float = 0.0  # locked until this time


class LoginThrottle:
    """Counts wrong passwords per user name and per client address (see the module doc)."""

    def __init__(self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic):
        limits = limits or Limits()
        self.failures, self.lockout_s, self.clock = limits.login_failures, limits.login_lockout_s, clock
        self._records: OrderedDict[tuple[str, str], _Record] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, user: str, address: str) -> float:
        """Seconds until this user name and this address may try again (0: now)."""
        now = self.clock()
        with self._lock:
            return max([0.0, *(r.until - now for r in self._mine(user, address))])

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key, record in zip(self._keys(user, address), self._mine(user, address, create=True)):
                record.failures += 1
                if record.failures >= self.failures:
                    window = min(self.lockout_s * 2 ** record.lockouts, MAX_LOCKOUT_S)
                    record.until, record.lockouts = now + window, record.lockouts + 1
                    log.warning("login: %d wrong passwords for %s %r: locked for %g s", record.failures, key[0],
                                key[1], window)
                else:
                    log.warning("login: wrong password for %s %r (%d of %d before a lockout)", key[0], key[1],
                                record.failures, self.failures)

    def succeeded(self, user: str, address: str) -> None:
        with self._lock:
            self._records.pop(("user", user), None)

    def _keys(self, user: str, address: str) -> list[tuple[str, str]]:
        return [("user", str(user)[:200]), ("address", str(address))]

    def _mine(self, user: str, address: str, create: bool = False) -> list[_Record]:
        out = []
        for key in self._keys(user, address):
            record = self._records.get(key)
            if record is None and create:
                record = self._records[key] = _Record()
                while len(self._records) > MAX_TRACKED:
                    self._records.popitem(last=False)
            if record is not None:
                self._records.move_to_end(key)
                out.append(record)
        return out

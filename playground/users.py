"""Who may log in to the web app: `--auth USER:PASS`, or a users file (`--auth @FILE`, `--users FILE`),
and whether Hugging Face OAuth is on (a Space with `hf_oauth: true`).

A users file holds one user a line, `user:password` or `user:sha256:HEX` (the SHA-256 of the
password, so the file need not hold it); blank lines and lines starting with `#` are skipped.
A bad line is refused at start with its line number. Passwords are compared in constant time.
What a login owns (its folder) is decided in `sessions.py`; this file only says who gets in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from adapters.errors import LoraEqError

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[^\s:]{1,64}$")


@dataclass(frozen=True)
class Users:
    """Logins and their passwords (plain, or the hex SHA-256 of one)."""

    entries: dict[str, tuple[str, str]]  # user -> ("plain" | "sha256", secret)

    def check(self, user: str, password: str) -> bool:
        """Gradio's `auth` callable: True when `password` is this user's."""
        kind, secret = self.entries.get(user, ("plain", None)) if isinstance(user, str) else ("plain", None)
        if secret is None or not isinstance(password, str):
            return False
        given = hashlib.sha256(password.encode()).hexdigest() if kind == "sha256" else password
        return hmac.compare_digest(given.encode(), secret.encode())

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)


def parse_user_line(line: str, where: str) -> tuple[str, tuple[str, str]]:
    """One `user:password` or `user:sha256:HEX` line; a LoraEqError naming `where` otherwise."""
    user, sep, rest = line.partition(":")
    if not sep or not rest:
        raise LoraEqError(f"{where}: expected user:password or user:sha256:HEX")
    if not _NAME.match(user):
        raise LoraEqError(f"{where}: user name {user[:40]!r} must be 1-64 characters without spaces or ':'")
    if rest.startswith("sha256:"):
        digest = rest[len("sha256:"):]
        if not _HEX64.match(digest):
            raise LoraEqError(f"{where}: sha256: must be followed by 64 hex digits (the SHA-256 of the password)")
        return user, ("sha256", digest.lower())
    return user, ("plain", rest)


def read_users_file(path: str | Path) -> Users:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LoraEqError(f"users file {path}: cannot be read ({e})") from None
    entries: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, secret = parse_user_line(line, f"users file {path.name} line {number}")
        if user in entries:
            raise LoraEqError(f"users file {path.name} line {number}: user {user!r} is already listed")
        entries[user] = secret
    if not entries:
        raise LoraEqError(f"users file {path.name}: no users in it")
    return Users(entries)


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

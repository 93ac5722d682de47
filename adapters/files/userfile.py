"""The web app's users file: one login a line, its password kept as a salted, slow hash.

    ann:scrypt:16384:8:1:SALT_HEX:HASH_HEX   # written by `loraeq users add ann`
    bob:sha256:HEX                           # older: the SHA-256 of the password (unsalted)
    eve:password                             # older: the password itself

A new line holds scrypt (hashlib, the standard library) of the password with a random 16-byte
salt, n=2^14, r=8, p=1 (about 16 MB and tens of milliseconds per check, so a stolen file is slow
to guess from). Plain and unsalted SHA-256 lines still load, each with a warning naming its line.
Blank lines and lines starting with `#` are skipped; a bad line is refused with its number, and
a file of more than `Limits.rows` lines is refused. Passwords are compared in constant time,
and a name not in the file costs as much to check as one that is. Who may log in from where,
and how often, is the web app's (playground/users.py).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from adapters.errors import LoraEqError
from adapters.limits import Limits, check_rows

log = logging.getLogger("loraeq.users")

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NAME = re.compile(r"^[^\s:]{1,64}$")
_SCRYPT = re.compile(r"^scrypt:(\d{1,8}):(\d{1,3}):(\d{1,3}):([0-9a-f]{16,128}):([0-9a-f]{32,128})$")
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_MAX_N = 2**20  # a line asking for more would take a gigabyte per check


def hash_password(password: str, salt: bytes | None = None) -> str:
    """`scrypt:N:r:p:SALT:HASH` for `password` (a fresh random salt unless one is given)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, 32)
    return f"scrypt:{SCRYPT_N}:{SCRYPT_R}:{SCRYPT_P}:{salt.hex()}:{digest.hex()}"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogatepass"), salt=salt, n=n, r=r, p=p, dklen=size,
                          maxmem=256 * n * r + (1 << 20))


_DUMMY = ("scrypt", hash_password("", b"\0" * 16))  # checked for names not in the file


@dataclass(frozen=True)
class Users:
    """Logins and their passwords (a scrypt hash; older files: plain, or the hex SHA-256)."""

    entries: dict[str, tuple[str, str]]  # user -> ("scrypt" | "sha256" | "plain", secret)

    def check(self, user: str, password: str) -> bool:
        """Gradio's `auth` callable: True when `password` is this user's."""
        known = isinstance(user, str) and user in self.entries
        kind, secret = self.entries[user] if known else _DUMMY
        if not isinstance(password, str):
            return False
        return matches(kind, secret, password) and known

    @property
    def names(self) -> list[str]:
        return sorted(self.entries)


def matches(kind: str, secret: str, password: str) -> bool:
    """Whether `password` is the one `secret` (of `kind`) was made from, compared in constant time."""
    if kind == "scrypt":
        n, r, p, salt, digest = _SCRYPT.match(secret).groups()
        given = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p), len(digest) // 2).hex()
        return hmac.compare_digest(given, digest)
    given = hashlib.sha256(password.encode()).hexdigest() if kind == "sha256" else password
    return hmac.compare_digest(given.encode(), secret.encode())


def parse_user_line(line: str, where: str) -> tuple[str, tuple[str, str]]:
    """One `user:scrypt:...`, `user:sha256:HEX` or `user:password` line; a LoraEqError naming `where`."""
    user, sep, rest = line.partition(":")
    if not sep or not rest:
        raise LoraEqError(f"{where}: expected user:password, user:sha256:HEX or user:scrypt:...")
    if not _NAME.match(user):
        raise LoraEqError(f"{where}: user name {user[:40]!r} must be 1-64 characters without spaces or ':'")
    if rest.startswith("scrypt:"):
        match = _SCRYPT.match(rest)
        if not match or not 2 <= int(match.group(1)) <= _MAX_N or int(match.group(1)) & (int(match.group(1)) - 1):
            raise LoraEqError(f"{where}: scrypt: must be followed by N:r:p:SALT:HASH as `loraeq users add` writes "
                              "them (N a power of two up to 2^20)")
        return user, ("scrypt", rest)
    if rest.startswith("sha256:"):
        digest = rest[len("sha256:"):]
        if not _HEX64.match(digest):
            raise LoraEqError(f"{where}: sha256: must be followed by 64 hex digits (the SHA-256 of the password)")
        return user, ("sha256", digest.lower())
    return user, ("plain", rest)


def read_users_file(path: str | Path, limits: Limits | None = None) -> Users:
    path = Path(path)
    limits = limits or Limits.from_env()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LoraEqError(f"users file {path}: cannot be read ({e})") from None
    lines = text.splitlines()
    check_rows(len(lines), limits.rows, f"users file {path.name}")
    entries: dict[str, tuple[str, str]] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"users file {path.name} line {number}"
        user, secret = parse_user_line(line, where)
        if user in entries:
            raise LoraEqError(f"{where}: user {user!r} is already listed")
        if secret[0] != "scrypt":
            log.warning("%s: user %r has %s password; replace the line with `loraeq users add %s --file %s`",
                        where, user, "a plain" if secret[0] == "plain" else "an unsalted SHA-256", user, path.name)
        entries[user] = secret
    if not entries:
        raise LoraEqError(f"users file {path.name}: no users in it")
    return Users(entries)


def add_user(path: str | Path, user: str, password: str) -> bool:
    """Write `user`'s line (a scrypt hash of `password`) into the users file, replacing the user's
    earlier line if there is one (True then); a new file is made readable by its owner only."""
    path = Path(path)
    parse_user_line(f"{user}:x", f"user {user[:40]!r}")  # the name alone
    if not password:
        raise LoraEqError("the password must not be empty")
    line = f"{user}:{hash_password(password)}"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    mine = [i for i, raw in enumerate(lines) if raw.strip().partition(":")[0] == user and not raw.startswith("#")]
    if mine:
        lines[mine[0]] = line
        lines = [raw for i, raw in enumerate(lines) if i not in mine[1:]]
    else:
        lines.append(line)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, path.stat().st_mode & 0o777 if path.exists() else 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return bool(mine)

"""Who a browser session is, and which files are its own.

A session id is issued by the server (128 random bits), never chosen by a client. The browser
keeps it across reloads as a token signed with a server secret (HMAC-SHA256), so a page can
restore only a session it was given. A session's files live in its own folder under the runs
area: `ROOT/<session id>/` for an anonymous session, `ROOT/users/<login>/` once the server has
seen a login (--auth or Hugging Face OAuth; taken from the request, never from what a page
sends), so a logged-in user finds their runs from any browser. Its runs are named by the server
(`run-<time>-<random>`, never reused) and a client names a run only by that name, which is resolved
inside the session's folder and refused if it leads anywhere else. The session's work (its data,
grid, variants, the run it follows) is kept in its folder, so a reload picks it up again. This
module does not hand files to a browser (`shared.Downloads` does) or decide limits
(`adapters/limits.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from adapters.cache import read_json, write_json_atomic
from adapters.errors import LoraEqError
from adapters.infer.conversation import Conversation
from evals.arena import BattleRound

WORK_FILE = "session.json"  # the session's work that a reload restores (never served)
SESSION_ID = re.compile(r"^[a-f0-9]{32}$")
RUN_NAME = re.compile(r"^run-\d{8}-\d{6}-[a-f0-9]{6}$")
SECRET_FILE = ".session-secret"
USERS = "users"  # ROOT/users/<login>/: logged-in users' folders (never removed by retention)
_PLAIN_LOGIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Session:
    """One browser session's own work (a `gr.State` value: kept on the server)."""

    id: str | None = None  # issued on first use: the initial State value is one copy shared by all
    user: str | None = None  # the login the server saw on this page's requests; None: anonymous
    model: str | None = None
    precision: str = "auto"
    data: dict | None = None  # {"path", "format", "mapping", "max_length"} of the validated file
    data_rows: int = 0  # its valid rows, counted when it was validated
    equalizer: dict | None = None
    mix: dict = field(default_factory=dict)  # {"weights": ..., "quotas": ...} from the Data tab
    variants: list[dict] = field(default_factory=list)
    run: str | None = None  # the name of the run this session follows
    adapters: dict[str, str] = field(default_factory=dict)  # name -> adapter folder the server accepted
    decode_precision: str = "auto"  # what a 4-bit base decodes with in Compare (adapters.infer.decode_precision.DECODINGS)
    chat: Conversation | None = None  # the Compare tab's conversation: shared user turns, each column's replies
    battle: BattleRound | None = None  # the blind battle in progress (or just decided)
    battle_rng: random.Random | None = None  # draws battle pairs; made on first use (never shared between sessions)
    classified: dict | None = None  # the last text the Classify tab labelled, for votes on its columns

    def __hash__(self) -> int:
        """A hash of who the session is and of the work a reload restores. Gradio hashes a State's
        value before and after each event to fire its `change`; handlers change the session in
        place, so a hash of the object's id (the default here) would never fire it, and the work
        and the browser's token would never be kept."""
        return hash(json.dumps([self.id, self.user, *(getattr(self, k) for k in KEPT)], sort_keys=True, default=str))


# What a reload brings back (`SessionArea.save_work`), with the type each must have: the forms' work.
# The chat and the battle are not kept: they hold a conversation in progress, not settings.
KEPT = {"model": (str, type(None)), "precision": (str,), "data": (dict, type(None)), "data_rows": (int,),
        "equalizer": (dict, type(None)), "mix": (dict,), "variants": (list,), "run": (str, type(None)),
        "adapters": (dict,), "decode_precision": (str,)}


class SessionArea:
    """The runs folder seen per session: folders, signed tokens, run names, upload quota."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secret = _secret(self.root / SECRET_FILE)

    # ---- identity -------------------------------------------------------------------------------

    def ensure_id(self, session: Session) -> str:
        if session.id is None:
            session.id = secrets.token_hex(16)
        if not SESSION_ID.match(session.id):  # only this module sets ids: a bad one is a bug
            raise LoraEqError("this session is not valid: reload the page")
        return session.id

    def token(self, session: Session) -> str:
        """What the browser keeps to come back to this session after a reload."""
        sid = self.ensure_id(session)
        return f"{sid}.{session.run or ''}.{self._sign(sid, session.run or '')}"

    def restore(self, session: Session, token) -> bool:
        """Take over the session a token names, only if this server signed it; False otherwise."""
        if not isinstance(token, str) or len(token) > 200 or token.count(".") != 2:
            return False
        sid, run, signature = token.split(".")
        if not SESSION_ID.match(sid) or (run and not RUN_NAME.match(run)):
            return False
        if not hmac.compare_digest(signature, self._sign(sid, run)):
            return False
        session.id = sid
        session.run = run if run and (self.folder(session, create=False) / run).is_dir() else None
        return True

    def _sign(self, sid: str, run: str) -> str:
        return hmac.new(self._secret, f"{sid}:{run}".encode(), hashlib.sha256).hexdigest()

    # ---- the work a reload restores -------------------------------------------------------------

    def save_work(self, session: Session) -> None:
        """Keep the session's work (validated data, grid, variants, the run it follows, ...) in its
        folder, so that a reload of the page picks it up again (`load_work`)."""
        write_json_atomic(self.folder(session) / WORK_FILE, {k: getattr(session, k) for k in KEPT})

    def load_work(self, session: Session) -> None:
        """The session's kept work, where it is well formed; a value that is not (an older or damaged
        file) keeps its default. Paths and run names in it are checked again where they are used."""
        saved = read_json(self.folder(session, create=False) / WORK_FILE)
        followed = session.run  # the run this browser's signed token names wins over the kept one
        for key, types in KEPT.items():
            if key in saved and isinstance(saved[key], types):
                setattr(session, key, saved[key])
        session.run = followed or session.run
        if session.run and not (RUN_NAME.match(session.run) and (self.folder(session) / session.run).is_dir()):
            session.run = None

    # ---- files ----------------------------------------------------------------------------------

    def folder(self, session: Session, create: bool = True) -> Path:
        """The session's own folder: its user's when logged in, else its session id's."""
        sid = self.ensure_id(session)
        path = self.root / USERS / user_folder_name(session.user) if session.user else self.root / sid
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    def uploads(self, session: Session) -> Path:
        path = self.folder(session) / "uploads"
        path.mkdir(exist_ok=True)
        return path

    def inside(self, session: Session, path: str | Path) -> Path:
        """`path` resolved, if it lies inside the session's folder; a LoraEqError otherwise."""
        own = self.folder(session).resolve()
        resolved = Path(path).resolve()
        if resolved != own and own not in resolved.parents:
            raise LoraEqError("that file is not part of this session")
        return resolved

    def run_path(self, session: Session, name: str | None = None) -> Path | None:
        """The folder of the session's run `name` (default: the one it follows); None when it has none."""
        name = session.run if name is None else name
        if not name:
            return None
        if not isinstance(name, str) or not RUN_NAME.match(name):
            raise LoraEqError(f"{str(name)[:80]!r}: not a run name")
        path = self.inside(session, self.folder(session) / name)
        if not path.is_dir():
            raise LoraEqError(f"this session has no run {name}")
        return path

    def new_run(self, session: Session) -> tuple[str, Path]:
        """A fresh run name and its (reserved, empty) folder: never one that existed before."""
        while True:
            name = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            path = self.folder(session) / name
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return name, path

    def runs(self, session: Session) -> list[str]:
        """The session's run names, oldest first."""
        return sorted(p.name for p in self.folder(session).iterdir() if p.is_dir() and RUN_NAME.match(p.name))

    def delete_run(self, session: Session, name: str) -> None:
        """Remove one of the session's own runs (resolved inside its folder, as `run_path` does)."""
        path = self.run_path(session, name)
        shutil.rmtree(path)
        if session.run == name:
            session.run = None

    def owner(self, session: Session) -> str:
        """Who a job belongs to: the login (so one user's browsers share one training at a time),
        else the session id (also the anonymous folder's name, which retention checks)."""
        return f"user:{session.user}" if session.user else self.ensure_id(session)

    def voter(self, session: Session) -> str:
        """Who a vote is from: the login, or "anonymous:" and a short hash of the session id
        (votes can be downloaded; the id itself stays private)."""
        if session.user:
            return session.user
        return "anonymous:" + hashlib.sha256(self.ensure_id(session).encode()).hexdigest()[:10]

    def uploaded_bytes(self, session: Session) -> int:
        return sum(p.stat().st_size for p in self.uploads(session).iterdir() if p.is_file())


def login_name(username: str | None, oauth_username: str | None = None) -> str | None:
    """The login a request carries: the Hugging Face OAuth profile's name, else the --auth
    username Gradio checked; None when anonymous."""
    name = oauth_username or username
    if name is None:
        return None
    if not isinstance(name, str) or not name.strip() or len(name) > 200:
        raise LoraEqError("this login name cannot be used: log in again")
    return name


def user_folder_name(login: str) -> str:
    """A login as a folder name: itself when it is a plain name (letters, digits, _ . -), else
    a readable part and a hash of the whole, so two logins never share a folder."""
    if _PLAIN_LOGIN.match(login) and login not in (".", ".."):
        return login
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", login)[:40].strip(".") or "user"
    return f"{readable}+{hashlib.sha256(login.encode()).hexdigest()[:12]}"  # "+" is never in a plain name


def _secret(path: Path) -> bytes:
    """The server's signing key, made once and kept (mode 0600) so tokens outlive a restart."""
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return data

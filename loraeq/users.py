"""`loraeq users add NAME --file FILE`: a login for the web app's users file, its password hashed.

The password is read without echo (getpass), twice; `--password-stdin` reads one line from
standard input instead, for scripts. The line written holds a salted scrypt hash
(adapters/files/userfile.py), never the password; a user already in the file gets a new line in place
of the old one. Serve the file with `python app.py --users FILE`.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from adapters.errors import LoraEqError


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("the same again: ") != first:
        raise LoraEqError("the two passwords differ: nothing was written")
    return first


def _add(args: argparse.Namespace) -> dict:
    from adapters.files.userfile import add_user

    replaced = add_user(args.file, args.name, _password(args))
    return {"file": args.file, "user": args.name, "replaced": replaced, "hash": "scrypt"}


def _render(data: dict, args) -> str:
    verb = "replaced in" if data["replaced"] else "added to"
    return f"user {data['user']} {verb} {data['file']} (password kept as a salted scrypt hash)"


def register(sub) -> None:
    p = sub.add_parser("users", help="manage the web app's users file (loraeq users add NAME)")
    actions = p.add_subparsers(dest="action", required=True, parser_class=type(p), metavar="ACTION",
                               help="add: add a user, or give one a new password")
    add = actions.add_parser("add", help="add a user (or give one a new password), the password read without echo")
    add.add_argument("name", help="the login name (no spaces or ':')")
    add.add_argument("--file", default="users.txt", help="the users file (default users.txt; made if missing)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.set_defaults(handler=_add, render=_render)

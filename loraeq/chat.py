"""`loraeq chat`: talk to the base and its adapters in the terminal, all columns answering each turn.

Reads one message per line from stdin (a terminal or a pipe, so a script or a test can drive it)
and prints every column's answer, side by side or one after another. Each column keeps its own
history (chat.py). Commands: `/system TEXT` (empty: none), `/reset`, `/regen`, `/quit`, `/help`.
A bad message (too long for the model, say) is reported on stderr and the chat goes on; bad
flags or adapters stop it before it starts (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import textwrap
from itertools import zip_longest

from adapters.errors import LoraEqError

from .common import add_sampling_flags

HELP = "commands: /system TEXT (empty: none), /reset, /regen, /quit, /help"
GAP = " | "


def side_by_side(labels: list[str], texts: list[str], width: int) -> str:
    """Columns of wrapped text next to each other within `width` characters."""
    inner = max(12, (width - len(GAP) * (len(labels) - 1)) // len(labels))
    wrapped = [[label[:inner], "-" * min(inner, max(len(label), 3))] + _wrap(text, inner)
               for label, text in zip(labels, texts)]
    rows = zip_longest(*wrapped, fillvalue="")
    return "\n".join(GAP.join(cell.ljust(inner) for cell in row).rstrip() for row in rows)


def one_after_another(labels: list[str], texts: list[str]) -> str:
    return "\n\n".join(f"== {label}\n{text}" for label, text in zip(labels, texts))


def _wrap(text: str, width: int) -> list[str]:
    lines = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width) or [""]
    return lines


def render_turn(labels: list[str], texts: list[str], layout: str, width: int) -> str:
    if layout == "side" or (layout == "auto" and width // len(labels) >= 28):
        return side_by_side(labels, texts, width)
    return one_after_another(labels, texts)


def run_turn(chat, deltas, layout: str, out) -> None:
    texts = {label: "" for label in chat.labels}
    for delta in deltas:
        texts[delta.label] += delta.text
    width = shutil.get_terminal_size((120, 24)).columns
    print(render_turn(chat.labels, [texts[label] for label in chat.labels], layout, width) + "\n", file=out, flush=True)


def handle(chat, line: str, layout: str, out) -> bool:
    """One input line: a command or a message. False when the chat should end."""
    command, _, rest = line.strip().partition(" ")
    if command == "/quit":
        return False
    if command == "/system":
        chat.set_system(rest)
        print(f"(system prompt {'set' if chat.system else 'cleared'}; the conversation goes on)", file=out)
    elif command == "/reset":
        chat.reset()
        print("(conversation reset)", file=out)
    elif command == "/regen":
        run_turn(chat, chat.regen(), layout, out)
    elif command == "/help":
        print(HELP, file=out)
    elif command.startswith("/"):
        raise LoraEqError(f"unknown command {command!r}: {HELP}")
    elif line.strip():
        run_turn(chat, chat.send(line.strip()), layout, out)
    return True


def _chat(args: argparse.Namespace) -> dict:
    from adapters.infer.chat import Chat
    from adapters.infer.decoding import Sampling

    from .common import name_list
    from .compare import open_engine

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                        seed=args.seed)
    wanted = name_list(args.variants, "--variants")
    turns = 0
    with contextlib.ExitStack() as stack:
        engine = open_engine(args, stack, variants=wanted)
        stack.callback(engine.close)
        chat = Chat(engine, engine.columns(), sampling, system=args.system)
        interactive = sys.stdin.isatty()
        for w in (w for ws in engine.warnings.values() for w in ws):
            print(f"warning: {w}", file=sys.stderr)
        print(f"{len(chat.labels)} columns: {', '.join(chat.labels)}; {engine.decode_precision.describe()}. {HELP}",
              file=sys.stderr)
        while True:
            if interactive:
                print("> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line:
                break
            try:
                if not handle(chat, line, args.layout, sys.stdout):
                    break
                turns += 1
            except LoraEqError as e:
                print(f"loraeq: error: {e}", file=sys.stderr, flush=True)
    return {"inputs": turns, "columns": chat.labels}


def register(sub) -> None:
    from .compare import add_engine_flags

    p = sub.add_parser("chat", help="chat in the terminal with the base and every variant",
                       description="Chat in the terminal with the base and its variants / adapters side by side.")
    add_engine_flags(p)
    p.add_argument("--system", default=None, help="a system prompt (change it with /system)")
    p.add_argument("--layout", default="auto", choices=("auto", "side", "stacked"),
                   help="columns side by side or one after another (auto: side by side when they fit)")
    add_sampling_flags(p, "sampling seed; /regen moves to the next one (default 0)")
    p.set_defaults(handler=_chat, render=lambda d, a: f"(chat ended after {d['inputs']} inputs)")

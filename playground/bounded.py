"""Work proportional to an upload's size, out of the server's way: in a child process, within a
time and a memory bound.

Reading and validating a data file (with tokenization), parsing an eval set or a sweep takes
time and memory in proportion to the file. Done in a request thread it would hold the server's
interpreter and heap while everyone else waits; a hostile file could take minutes and
gigabytes. `bounded(fn, *args)` runs `fn` in a child forked from a small fork server (started
once, with the readers imported, so a call costs milliseconds), under the server's limits (the
child reads them from its environment, as a worker does), watches its resident memory and its
time, and kills it past `Limits.parse_bytes` or `Limits.parse_seconds`. The result (or the
exception) comes back pickled. The child is the first the kernel takes if memory runs out.

This module decides nothing about files; it only runs a function at arm's length.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import time
from typing import Callable

from adapters.errors import LoraEqError
from adapters.limits import Limits, env_name
from playground.jobs import resident_bytes, stop_group

POLL_SECONDS = 0.02
GB = 1 << 30
# Imported once in the fork server, so that each child starts with the readers in memory.
PRELOAD = ["__main__", "adapters.data", "adapters.train.dataspec", "evals.evalset", "adapters.shape.variants",
           "transformers.tokenization_utils_fast"]


@functools.cache
def _context():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def bounded(fn: Callable, *args, limits: Limits, what: str) -> object:
    """`fn(*args)` in a child process within `limits.parse_seconds` and `limits.parse_bytes`;
    its exception is raised here. `what` names the work in a refusal ("reading data.csv")."""
    context = _context()
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(sender, fn, args, limits.to_env()), daemon=True)
    child.start()
    sender.close()
    try:
        kind, value = _wait(child, receiver, limits, what)
    finally:
        if child.is_alive():
            stop_group(child.pid)
        child.join()
        receiver.close()
    if kind == "error":
        raise value
    return value


def _wait(child, receiver, limits: Limits, what: str) -> tuple[str, object]:
    started = time.monotonic()
    while True:
        if receiver.poll(POLL_SECONDS):
            try:
                return receiver.recv()
            except EOFError:
                break
        if not child.is_alive() and not receiver.poll(0):
            break
        if resident_bytes(child.pid) > limits.parse_bytes:
            raise LoraEqError(f"{what} needed more than {limits.parse_bytes / GB:.1f} GB of memory, over the "
                              f"limit ({env_name('parse_bytes')}): use a smaller file")
        if time.monotonic() - started > limits.parse_seconds:
            raise LoraEqError(f"{what} took longer than {limits.parse_seconds:g} s, over the limit "
                              f"({env_name('parse_seconds')}): use a smaller file")
    raise LoraEqError(f"{what} stopped before it finished (the machine may be out of memory): try a smaller file")


def _child(sender, fn: Callable, args: tuple, environ: dict[str, str]) -> None:
    os.environ.update(environ)  # this throwaway process runs under the server's limits
    try:
        with open(f"/proc/{os.getpid()}/oom_score_adj", "w", encoding="ascii") as f:
            f.write("1000")
    except OSError:
        pass
    try:
        outcome = ("ok", fn(*args))
    except Exception as e:  # sent back whole when it pickles, else as one line
        outcome = ("error", e if _pickles(e) else LoraEqError(f"{type(e).__name__}: {e}"))
    try:
        sender.send(outcome)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        sender.send(("error", LoraEqError(f"the result could not be handed back ({type(e).__name__})")))
    finally:
        sender.close()


def _pickles(value: object) -> bool:
    try:
        pickle.loads(pickle.dumps(value))
        return True
    except Exception:
        return False

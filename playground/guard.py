"""Every event handler answers with one clear line: errors become `gr.Error`, never Gradio's
generic "error" and never a traceback, and a message never shows a server path or a session id.

`handler` wraps a tab's function (plain or streaming); `public_message` is the one place that
decides what of an exception's text a browser may see. Unexpected exceptions are logged here in
full for the operator. `shield` puts Gradio's own errors through the same filter: a check that
fails before any handler runs (a file input naming a server path, a value not among the
choices) says why in one line, without the path.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
import re

import gradio as gr
from gradio.exceptions import InvalidPathError

from adapters.errors import LoraEqError

log = logging.getLogger("loraeq.app")

MAX_MESSAGE = 300
# An absolute path (or one under a temp/session folder) becomes its last part; ids are hidden.
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s/'\"`:,;()\[\]]+){2,}/?")
_TOKEN = re.compile(r"\b[a-f0-9]{16,64}\b")
_EXPECTED = (LoraEqError, ValueError, OSError, KeyError, IndexError, TypeError, RuntimeError, MemoryError)


def public_message(error: BaseException | str) -> str:
    """One line of an error, without server paths or session ids, at most MAX_MESSAGE characters."""
    text = error if isinstance(error, str) else _text(error)
    text = " ".join(text.split())
    text = _PATH.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
    text = _TOKEN.sub("…", text)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return text or "something went wrong"


def _text(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}" + (f": {error.filename}" if error.filename else "")
    if isinstance(error, KeyError) and error.args:
        return f"no such entry: {error.args[0]!r}"
    message = str(error)
    if isinstance(error, LoraEqError):
        return message
    if isinstance(error, MemoryError):
        return "not enough memory for this request"
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _refusal(error: Exception) -> gr.Error:
    if not isinstance(error, _EXPECTED):
        log.exception("unexpected error in a handler")
    return gr.Error(html.escape(public_message(error), quote=False), print_exception=False)


def handler(fn, *bound):
    """`fn` with its first arguments bound to `bound` (the shared objects) and every exception
    turned into a one-line `gr.Error`, streaming functions too. Gradio sees the remaining
    parameters with their annotations (gr.Progress, gr.SelectData keep working)."""
    if inspect.isgeneratorfunction(fn):

        def wrapper(*args, **kwargs):
            try:
                yield from fn(*bound, *args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:
                raise _refusal(e) from None

    else:

        def wrapper(*args, **kwargs):
            try:
                return fn(*bound, *args, **kwargs)
            except gr.Error:
                raise
            except Exception as e:
                raise _refusal(e) from None

    functools.update_wrapper(wrapper, fn)
    signature = inspect.signature(fn)
    remaining = list(signature.parameters.values())[len(bound):]
    wrapper.__signature__ = signature.replace(parameters=remaining)
    names = {p.name for p in remaining} | {"return"}
    wrapper.__annotations__ = {k: v for k, v in getattr(fn, "__annotations__", {}).items() if k in names}
    return wrapper


def shield(demo):
    """Every error of `demo`'s events, Gradio's own included, through `public_message`; returns `demo`.
    Gradio builds its message from the exception (with the whole path of a file it refused), so
    the app's `process_api` re-raises anything that is not already one of our `gr.Error`s as one."""
    process_api = demo.process_api

    @functools.wraps(process_api)
    async def filtered(*args, **kwargs):
        try:
            return await process_api(*args, **kwargs)
        except gr.Error as e:
            raise gr.Error(html.escape(public_message(html.unescape(str(e.message))), quote=False),
                           duration=e.duration, visible=e.visible, title=e.title, print_exception=False) from None
        except InvalidPathError:
            raise gr.Error("that file was not uploaded to this app", print_exception=False) from None
        except Exception as e:
            raise _refusal(e) from None

    demo.process_api = filtered
    return demo

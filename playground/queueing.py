"""How many requests of each kind the app runs at once, and how many may wait.

Gradio queues every event. A shared server must not answer eight questions at once on two CPU
cores, nor load two models at once: events are put in groups (`GROUPS`, by api name), each
group runs at most its limit at once, and the whole queue holds at most `size` waiting events;
past that a client is told the queue is full (Gradio answers 503, "Queue is full"; the page
says "This application is currently busy. Please try again."). Training and the proof are not
here: they wait in the job line (`jobs.py`, one job at a time, users served in turn).
This module holds the numbers and applies them; it does no work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from adapters.errors import LoraEqError

ENV = {
    "size": "LORAEQ_QUEUE_SIZE",
    "default": "LORAEQ_CONCURRENCY",
    "generation": "LORAEQ_GENERATION_CONCURRENCY",
}
# api name -> group. Generation (answers side by side, chats) shares one limit; the data-
# suggested equalizer, a model load and a merged export each take a whole model's worth of work.
GROUPS = {
    "ask": "generation",
    "chat": "generation",
    "suggest": "heavy",
    "load_model": "heavy",
    "set_decode_precision": "heavy",
    "export_merged": "heavy",
}


@dataclass(frozen=True)
class QueueSettings:
    size: int = 64  # events waiting, all kinds together
    default: int = 4  # at once, per event without a group
    generation: int = 1  # answers generated at once (CPU: one at a time uses every core)
    heavy: int = 1  # suggestion, model loads, merged exports at once

    def __post_init__(self) -> None:
        for name in ("size", "default", "generation", "heavy"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise LoraEqError(f"queue setting {name}={value!r}: must be a whole number >= 1")

    @classmethod
    def from_env(cls, environ: dict | None = None) -> QueueSettings:
        environ = os.environ if environ is None else environ
        values = {}
        for name, variable in ENV.items():
            raw = environ.get(variable)
            if raw:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise LoraEqError(f"{variable}={raw!r}: must be a whole number") from None
        return cls(**values)

    def limit(self, group: str) -> int:
        return getattr(self, group)


def apply(demo, settings: QueueSettings):
    """Give each grouped event its group's id and limit, and set the queue's size; returns `demo`.
    Done on the built app, so the tabs need not know the policy."""
    for fn in demo.fns.values():
        group = GROUPS.get(fn.api_name or "")
        if group is not None:
            fn.concurrency_id = group
            fn.concurrency_limit = settings.limit(group)
    return demo.queue(default_concurrency_limit=settings.default, max_size=settings.size)

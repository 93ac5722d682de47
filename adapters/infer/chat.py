"""A multi-turn chat with several columns at once: each column keeps its own history.

`Chat` holds what a conversation with the base and its adapters needs between turns: the
columns, one history per column (each column hears its own earlier answers, as a user talking
to that model alone would), the system prompt and the sampling settings. `send` answers a
message in every column (streaming, through the engine), `regen` answers the last message again
(a new sampling seed, so a sampled answer changes; a greedy one does not), `reset` forgets the
conversation. It does not read a terminal or render anything (cli/chat.py does).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator

from adapters.errors import LoraEqError

from .decoding import Sampling
from .engine import Answer, Column, CompareEngine, Delta


@dataclass
class Chat:
    engine: CompareEngine
    columns: list[Column]
    sampling: Sampling = field(default_factory=Sampling)
    system: str | None = None
    histories: dict[str, list[dict]] = field(default_factory=dict)
    last: str | None = None  # the last user message, for `regen`

    def __post_init__(self) -> None:
        if not self.columns:
            raise LoraEqError("a chat needs at least one column")
        self.histories = {c.label: list(self.histories.get(c.label, [])) for c in self.columns}

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.columns]

    def send(self, message: str) -> Iterator[Delta]:
        """Answer `message` in every column, yielding deltas; the histories grow once it is done."""
        stream = self.engine.stream(message, self.columns, history=self.histories, system=self.system,
                                    sampling=self.sampling)
        yield from stream
        self._record(message, stream.answers)

    def regen(self) -> Iterator[Delta]:
        """The last message answered again in every column, with the next sampling seed."""
        if self.last is None:
            raise LoraEqError("nothing to regenerate yet: send a message first")
        kept = {label: list(history) for label, history in self.histories.items()}
        for history in self.histories.values():
            del history[-2:]
        self.sampling = replace(self.sampling, seed=self.sampling.seed + 1)
        try:
            yield from self.send(self.last)
        except BaseException:  # failed or abandoned: the conversation stays as it was
            self.histories = kept
            raise

    def reset(self) -> None:
        self.histories = {label: [] for label in self.labels}
        self.last = None

    def set_system(self, text: str | None) -> None:
        self.system = text.strip() if text and text.strip() else None

    def _record(self, message: str, answers: list[Answer]) -> None:
        for a in answers:
            self.histories[a.label] += [{"role": "user", "content": message},
                                        {"role": "assistant", "content": a.text}]
        self.last = message

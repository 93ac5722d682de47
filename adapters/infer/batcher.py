"""Requests that arrive together, answered together: one mixed batch of the side-by-side engine.

A server (`loraeq serve`) hands every request for the base or a variant to `Batcher.submit`: a
conversation, the column (base or variant), its sampling. One thread runs the engine: it waits for
a first request, then `window_s` more for others, and decodes every waiting request with the
same sampling settings in one batch, each row through its own adapter (adapter_rows.py). Requests
that come while a batch decodes wait for the next one. A request's deltas go to its own queue as
they are decoded, so a server can stream them; a request whose reader has gone is dropped from
the next batch. At most `max_rows` rows go into one batch and at most `max_waiting` requests wait:
`submit` refuses more (`Busy`). Greedy answers are the ones the engine gives a request alone (a
row never depends on the other rows of its batch); a sampled answer depends on its own seed only.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from dataclasses import dataclass, field

from adapters.base.tokenize import encode_prompt
from adapters.errors import LoraEqError

from .decoding import Sampling
from .engine import AnswerStream, Column

WINDOW_S = 0.02  # how long a first request waits for others to join its batch


class Busy(LoraEqError):
    """Too many requests are waiting."""


@dataclass
class Request:
    variant: str
    messages: list[dict]
    sampling: Sampling
    seed: int | None = None
    id: int = 0
    deltas: queue.Queue = field(default_factory=queue.Queue)  # text pieces, then a final Answer or an Exception
    cancelled: bool = False
    prompt_tokens: int = 0  # counted by the batcher's thread (the tokenizer is not shared between threads)

    def key(self) -> tuple:
        s = self.sampling
        return (s.max_new_tokens, s.temperature, s.top_p)


class Batcher:
    def __init__(self, engine, *, window_s: float = WINDOW_S, max_rows: int = 16, max_waiting: int = 64):
        self.engine, self.window_s, self.max_rows, self.max_waiting = engine, window_s, max_rows, max_waiting
        self._waiting: list[Request] = []
        self._ready = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self.batches: list[int] = []  # rows per decoded batch (for tests and benchmarks)
        self._thread = threading.Thread(target=self._loop, name="loraeq-batcher", daemon=True)
        self._thread.start()

    def submit(self, variant: str, messages: list[dict], sampling: Sampling, seed: int | None = None) -> Request:
        request = Request(variant, messages, sampling, seed, next(self._ids))
        Column(variant, seed=seed, name=f"request {request.id}")  # a bad variant or seed is refused here
        with self._ready:
            if self._closed:
                raise LoraEqError("the server is shutting down")
            if len(self._waiting) >= self.max_waiting:
                raise Busy(f"{len(self._waiting)} requests are waiting already (the limit): try again shortly")
            self._waiting.append(request)
            self._ready.notify()
        return request

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join(timeout=5)

    def _take(self) -> list[Request] | None:
        with self._ready:
            while not self._waiting and not self._closed:
                self._ready.wait()
            if self._closed:
                return None
        time.sleep(self.window_s)  # others arriving now join this batch
        with self._ready:
            live = [r for r in self._waiting if not r.cancelled]
            if not live:
                self._waiting = []
                return []
            key = live[0].key()
            batch = [r for r in live if r.key() == key][: self.max_rows]
            taken = {id(r) for r in batch}
            self._waiting = [r for r in live if id(r) not in taken]
            return batch

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[Request]) -> None:
        columns = [Column(r.variant, seed=r.seed, name=f"request {r.id}") for r in batch]
        for r in batch:
            r.prompt_tokens = len(encode_prompt(self.engine.tokenizer, r.messages))
        stream = AnswerStream(self.engine, columns, [r.messages for r in batch], batch[0].sampling)
        self.batches.append(len(batch))
        try:
            for delta in stream:
                if delta.text:
                    batch[delta.column].deltas.put(delta.text)
            for request, answer in zip(batch, stream.answers):
                request.deltas.put(answer)
        except Exception as e:  # every request of the batch hears why; the server goes on
            for request in batch:
                request.deltas.put(e if isinstance(e, LoraEqError) else LoraEqError(f"{type(e).__name__}: {e}"))

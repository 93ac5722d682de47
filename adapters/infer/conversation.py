"""A multi-turn conversation held side by side: the user's turns are shared, each column keeps its own replies.

`Conversation` is the state of the chat arena: the columns (labels), a system prompt and the turns,
each turn one user message and every column's reply to it. A column's history is the user's
messages with *its own* replies, so a variant answers the next turn from what it said itself, not
from what the base said. Regenerate and undo work on the last turn. `conversation_key` names a
column's conversation so far for a vote (a single turn is keyed by its message alone, as a vote
from `loraeq compare` is, so both are one key). `trim_to_context` drops the oldest turns of a
conversation until it fits the model's context, and says how many it dropped. `respond` streams
one turn of every column through the engine (one batched call) into the conversation.

Nothing here scores or stores: evals/ scores the replies and keeps the votes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterator

from adapters.errors import LoraEqError


@dataclass
class Reply:
    """One column's reply to one turn, with what the UI shows under it."""

    text: str = ""
    done: bool = False  # False while streaming, or when the user stopped it
    tokens: int = 0
    seconds: float = 0.0
    seed: int | None = None
    live_eq: dict | None = None  # the live grid of a scaled column
    dropped_turns: int = 0  # oldest turns left out to fit the model's context
    similarity_base: float | None = None
    similarity_reference: float | None = None
    settings: dict | None = None  # answer_settings of the reply: what a vote on it is keyed by
    verdict: str | None = None  # the user's vote on it, once cast


@dataclass
class Turn:
    user: str
    replies: dict[str, Reply] = field(default_factory=dict)  # column label -> its reply


@dataclass
class Conversation:
    """Shared user turns, per-column replies (see the module doc)."""

    labels: list[str]
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.labels or len(set(self.labels)) != len(self.labels):
            raise LoraEqError(f"conversation columns {self.labels!r}: need at least one, each named once")

    def _check(self, label: str) -> None:
        if label not in self.labels:
            raise LoraEqError(f"no column {label!r} in this conversation (columns: {', '.join(self.labels)})")

    def history(self, label: str, upto: int | None = None) -> list[dict]:
        """Column `label`'s messages of the turns before `upto` (default: every turn so far)."""
        self._check(label)
        turns = self.turns[: len(self.turns) if upto is None else upto]
        messages = []
        for turn in turns:
            messages.append({"role": "user", "content": turn.user})
            messages.append({"role": "assistant", "content": turn.replies.get(label, Reply()).text})
        return messages

    def histories(self) -> dict[str, list[dict]]:
        """Every column's history before the last turn (what the last turn is answered from)."""
        return {label: self.history(label, len(self.turns) - 1) for label in self.labels}

    def ask(self, message: str) -> Turn:
        """Start a turn: the user's message, no replies yet."""
        if not isinstance(message, str) or not message.strip():
            raise LoraEqError("the message is empty")
        turn = Turn(message, {label: Reply() for label in self.labels})
        self.turns.append(turn)
        return turn

    @property
    def last(self) -> Turn:
        if not self.turns:
            raise LoraEqError("no turn yet: send a message first")
        return self.turns[-1]

    def regenerate(self) -> str:
        """Forget the last turn's replies (the message stays, to be answered again); returns it."""
        turn = self.last
        turn.replies = {label: Reply() for label in self.labels}
        return turn.user

    def undo(self) -> str:
        """Take back the last turn, message and replies; returns its message (to edit and send again)."""
        return self.turns.pop().user if self.turns else ""

    def key(self, label: str) -> str:
        """The vote key of column `label`'s conversation so far (see `conversation_key`)."""
        return conversation_key(self.history(label, len(self.turns) - 1), self.last.user)

    def messages(self, label: str) -> list[dict]:
        """Column `label`'s whole chat as a chatbot shows it (user and assistant messages)."""
        return self.history(label)


def conversation_key(history: list[dict], message: str) -> str:
    """What a vote on the answer to `message` after `history` is keyed by: the message alone for a
    first turn (as `loraeq vote --prompt` keys it), else the whole conversation as canonical JSON.
    The system prompt is not in it: it is part of the answer's settings."""
    if not history:
        return message
    turns = [{"role": m["role"], "content": m["content"]} for m in history]
    turns.append({"role": "user", "content": message})
    return json.dumps(turns, ensure_ascii=False, separators=(",", ":"))


def trim_to_context(messages: list[dict], length: Callable[[list[dict]], int], limit: int,
                    reserve: int = 0) -> tuple[list[dict], int]:
    """Drop the oldest turns (a user message and the replies after it) of `messages` until
    `length(messages) + reserve <= limit` (`reserve`: the new tokens to leave room for); the system
    prompt and the last user message always stay. Returns (the messages kept, turns dropped). A
    LoraEqError when even the last message alone does not fit (nothing is left to drop)."""
    system = [m for m in messages[:1] if m["role"] == "system"]
    rest = messages[len(system):]
    starts = [i for i, m in enumerate(rest) if m["role"] == "user"]
    if not starts or starts[-1] != len(rest) - 1:
        raise LoraEqError("a conversation to answer ends with the user's message")
    needed = 0
    for dropped, start in enumerate(starts):
        kept = system + rest[start:]
        needed = length(kept) + reserve
        if needed <= limit:
            return kept, dropped
    raise LoraEqError(f"prompt + max_new_tokens = {needed} tokens: the model reads at most {limit}")


def respond(engine, conversation: Conversation, columns: list, sampling) -> Iterator[Turn]:
    """Answer the conversation's last turn in every column (`engine`: a CompareEngine, `columns`
    its Columns, labelled as the conversation's columns) in one batched stream, each column from
    its own history. Yields the turn after each new piece of text; when the stream ends, every
    reply is done and carries its tokens, seconds, seed and the turns dropped to fit the context.
    A stream closed early (the user stopped it) leaves the replies as far as they got, not done; a
    refused turn (a LoraEqError before any text) is taken out of the conversation."""
    if [c.label for c in columns] != conversation.labels:
        raise LoraEqError("the columns asked differ from the conversation's columns: start a new conversation")
    turn = conversation.last
    try:
        stream = engine.stream(turn.user, columns, history=conversation.histories(), system=conversation.system,
                               sampling=sampling)
        for delta in stream:
            turn.replies[delta.label].text += delta.text
            yield turn
    except LoraEqError:
        if not any(r.text for r in turn.replies.values()):
            conversation.turns.pop()  # nothing was answered: the message is not part of the conversation
        raise
    for answer in stream.answers:
        reply = turn.replies[answer.label]
        reply.text, reply.done, reply.tokens, reply.seconds = answer.text, True, answer.tokens, answer.seconds
        reply.seed, reply.live_eq, reply.dropped_turns = answer.seed, answer.live_eq, answer.dropped_turns
    yield turn

"""Chat speed: the 4th turn of a conversation vs a single-turn ask of the same prompt length.

    python benchmarks/chat_speed.py [--precision fp32] [--tokens 48] [--rounds 3] [--json]

On the embedded SmolLM2-135M with four adapters (equalizer presets, random non-zero B factors, as
compare_speed.py makes them), base + 4 variants answer a 4-turn conversation greedily in one
batched call per turn, each column from its own history (adapters/infer/conversation.py `respond`). The 4th turn
is timed against one single-turn ask whose one message is cut to the same prompt length in tokens
(the mean over the columns of the 4th turn's prompt), with the same columns and settings. The
figure is seconds per generated token (all columns' tokens together); `ratio` = multi-turn /
single-turn, the median over --rounds alternating rounds. 1.0 means history costs nothing beyond
its prompt length (the engine re-reads the history every turn: no KV cache is kept between turns).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TURNS = [
    "My dog is called Biscuit and she loves long walks by the sea.",
    "Suggest three games I could play with her on the beach.",
    "Which of those would tire her out the most, and why?",
    "Remind me: what is my dog called, and what does she love?",
]
FILLER = ("The lighthouse keeper climbed the spiral stairs every evening, counting the steps, "
          "listening to the wind and the sea, and writing the weather in his old blue notebook. ") * 40


def per_token(engine, message: str, columns, history, sampling) -> tuple[float, int]:
    started = time.perf_counter()
    answers = engine.answer(message, columns, history=history, sampling=sampling)
    seconds = time.perf_counter() - started
    tokens = sum(a.tokens for a in answers)
    return seconds / max(tokens, 1), tokens


def single_turn_message(tokenizer, length: int) -> str:
    """A single user message whose chat prompt is `length` tokens long (or the closest below)."""
    from adapters.base.tokenize import encode_prompt

    ids = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
    overhead = len(encode_prompt(tokenizer, [{"role": "user", "content": ""}]))
    return tokenizer.decode(ids[: max(length - overhead, 1)])


def main(argv=None) -> dict:
    from compare_speed import random_adapters

    from adapters.base.loading import load_model
    from adapters.base.tokenize import encode_prompt
    from adapters.infer.conversation import Conversation, respond
    from adapters.infer.decoding import Sampling
    from adapters.infer.engine import CompareEngine

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sampling = Sampling(max_new_tokens=args.tokens)
    with tempfile.TemporaryDirectory() as tmp:
        folders = random_adapters(load_model(None, args.precision), Path(tmp))
        engine = CompareEngine(load_model(None, args.precision), folders)
        columns = engine.columns()
        conv = Conversation([c.label for c in columns])
        for text in TURNS[:-1]:
            conv.ask(text)
            for _ in respond(engine, conv, columns, sampling):
                pass
        conv.ask(TURNS[-1])
        histories = conv.histories()
        lengths = [len(encode_prompt(engine.tokenizer, h + [{"role": "user", "content": TURNS[-1]}]))
                   for h in histories.values()]
        single = single_turn_message(engine.tokenizer, round(statistics.mean(lengths)))
        single_length = len(encode_prompt(engine.tokenizer, [{"role": "user", "content": single}]))
        rounds = []
        for _ in range(args.rounds):
            multi, multi_tokens = per_token(engine, TURNS[-1], columns, histories, sampling)
            alone, alone_tokens = per_token(engine, single, columns, None, sampling)
            rounds.append({"multi_turn_s_per_token": multi, "single_turn_s_per_token": alone,
                           "multi_tokens": multi_tokens, "single_tokens": alone_tokens})
        engine.close()
    result = {
        "columns": len(columns), "precision": args.precision, "max_new_tokens": args.tokens,
        "prompt_tokens_turn4": lengths, "prompt_tokens_single": single_length,
        "rounds": rounds,
        "ratio": statistics.median(r["multi_turn_s_per_token"] / r["single_turn_s_per_token"] for r in rounds),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for r in rounds:
            print(f"turn 4: {r['multi_turn_s_per_token'] * 1000:.1f} ms/token ({r['multi_tokens']} tokens)   "
                  f"single turn: {r['single_turn_s_per_token'] * 1000:.1f} ms/token ({r['single_tokens']} tokens)")
        print(f"prompt tokens: turn 4 {lengths}, single turn {single_length}")
        print(f"ratio (turn 4 / single turn, median of {args.rounds}): {result['ratio']:.2f}")
    return result


if __name__ == "__main__":
    main()

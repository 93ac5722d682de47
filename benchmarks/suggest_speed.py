"""Speed of the data-suggested equalizer on the embedded model: 32 Dolly-style chats, 4 bands.

    python benchmarks/suggest_speed.py [--precision fp32] [--data FILE.jsonl] [--exact] [--json]

Data: `--data`, else the repo's `datasets/dolly-15k-sample.jsonl` when present (rows with
instruction / context / response, or chat `messages`), else a built-in set of Dolly-like pairs.
The model is loaded first and not timed. Prints the seconds (target: <= 60 s on 2 CPU cores),
examples, tokens and the suggested grid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_S = 60.0

# Dolly-like pairs (open QA, closed QA with a context, brainstorming, summarization, classification).
BUILT_IN = [
    ("Why do leaves change color in the fall?",
     "In autumn the days get shorter and cooler, so trees stop making chlorophyll, the green pigment they use "
     "for photosynthesis. As the chlorophyll breaks down, yellow and orange carotenoids that were there all "
     "along become visible, and some trees also produce red anthocyanins from sugars trapped in the leaves."),
    ("When did the Eiffel Tower open?\n\nThe Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars "
     "in Paris. It was designed by the engineering company of Gustave Eiffel and built from 1887 to 1889 as the "
     "centerpiece of the 1889 World's Fair, where it opened to the public on 31 March 1889.",
     "The Eiffel Tower opened on 31 March 1889, as the centerpiece of that year's World's Fair in Paris."),
    ("Give me five ideas for a rainy weekend at home.",
     "1. Bake bread or a batch of cookies.\n2. Start a jigsaw puzzle with the whole family.\n3. Watch a film "
     "trilogy back to back.\n4. Reorganize a bookshelf and pick a forgotten novel to read.\n5. Try a new recipe "
     "with whatever is left in the pantry."),
    ("Which of these are mammals: dolphin, shark, bat, penguin, whale?",
     "Dolphins, bats and whales are mammals. Sharks are fish and penguins are birds."),
    ("Summarize the plot of Romeo and Juliet in two sentences.",
     "Two young lovers from feuding families in Verona marry in secret despite their families' hatred. A chain "
     "of misunderstandings leads both to take their own lives, which finally reconciles the two houses."),
    ("What is the difference between weather and climate?",
     "Weather is the state of the atmosphere at a given place and time: today's rain, wind or heat. Climate is "
     "the average pattern of weather in a region over many years, usually thirty or more."),
    ("Who wrote the novel 1984?", "George Orwell wrote 1984. It was published in 1949."),
    ("How do I make a good cup of pour-over coffee?",
     "Use freshly ground beans at a medium-fine grind, about 15 grams for 250 ml of water. Heat the water to "
     "around 94 degrees Celsius, wet the filter, and pour a little water first to let the grounds bloom for 30 "
     "seconds. Then pour slowly in circles until you reach the full amount; the whole brew should take about "
     "three minutes."),
]


def _chat(row: dict) -> list[dict] | None:
    if isinstance(row.get("messages"), list):
        return row["messages"]
    if "instruction" in row and "response" in row:
        user = row["instruction"] + (f"\n\n{row['context']}" if row.get("context") else "")
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}]
    return None


def conversations(data: Path | None, n: int) -> tuple[list[list[dict]], str]:
    """n conversations and where they came from."""
    path = data or ROOT / "datasets" / "dolly-15k-sample.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        chats = [c for c in map(_chat, rows) if c][:n]
        if chats:
            return chats, str(path)
    if data is not None:
        raise SystemExit(f"{data}: no instruction/response or messages rows")
    pairs = [BUILT_IN[i % len(BUILT_IN)] for i in range(n)]
    chats = [[{"role": "user", "content": u}, {"role": "assistant", "content": a}] for u, a in pairs]
    return chats, f"built-in ({len(BUILT_IN)} Dolly-like pairs, cycled)"


def measure(precision: str, data: Path | None, examples: int, exact: bool = False) -> dict:
    import torch

    from adapters.base.loading import load_model
    from adapters.shape.suggest import autocast_dtype, suggest_equalizer

    chats, source = conversations(data, examples)
    base = load_model(None, precision)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    s = suggest_equalizer(base, chats, bands=4, max_examples=examples, exact=exact)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "target_s": TARGET_S,
        "within_target": seconds <= TARGET_S,
        "precision": base.precision,
        "data": source,
        "conversations": len(chats),
        "examples": s.examples,
        "skipped": s.skipped,
        "tokens": s.tokens,
        "trained_tokens": s.trained_tokens,
        "loss": round(s.loss, 4),
        "threads": torch.get_num_threads(),
        "autocast": str(autocast_dtype(base.model, exact)).replace("torch.", ""),
        # Other processes on a 2-core box change CPU timings several-fold: read seconds with the load.
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "roles": s.equalizer.roles,
        "strengths": s.equalizer.strengths,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "nf4"])
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--examples", type=int, default=32)
    p.add_argument("--exact", action="store_true", help="no bf16 autocast: compute in the model's dtype")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = measure(args.precision, args.data, args.examples, args.exact)
    if args.json:
        print(json.dumps(result))
        return
    verdict = "ok" if result["within_target"] else "OVER TARGET"
    print(f"suggest_equalizer: {result['seconds']} s for {result['examples']} examples "
          f"({result['skipped']} more had no answer token within 256) "
          f"({result['tokens']} tokens, {result['trained_tokens']} trained) on {result['threads']} threads, "
          f"{result['precision']}: {verdict} (target <= {TARGET_S:.0f} s)")
    print(f"data: {result['data']}; base loss {result['loss']}; autocast {result['autocast']}; "
          f"1-min load average {result['load_before']} before, {result['load_after']} after")
    print("band  " + "  ".join(f"{r:>9}" for r in result["roles"]))
    for b, row in enumerate(result["strengths"]):
        print(f"{b:>4}  " + "  ".join(f"{v:>9.3f}" for v in row))


if __name__ == "__main__":
    main()

"""Reading speed of the data stage: N chat rows of JSONL, read, normalized and validated.

    python benchmarks/data_read.py [--rows 100000] [--tokens] [--json]

Writes N seeded chat rows (1-3 exchanges, some with a system turn, mixed English / Korean / CJK /
emoji text, 8 categories) into a temporary folder, then times `load_dataset` with full validation
(shapes, roles, turn order, metadata, duplicates). The target: 100,000 rows in <= 10 s on 2 cores.
`--tokens` also times token counting with the embedded model's tokenizer and chat template
(optional in the product, so not part of the target).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = "autumn leaves river lantern harvest 가을 단풍 하늘 秋天 落叶 🍁 🍂 cider amber crisp morning tea".split()
CATEGORIES = ["cooking", "travel", "work", "sleep", "money", "health", "reading", "pets"]


def make_rows(n: int, seed: int = 0) -> list[str]:
    """`n` distinct chat rows as JSONL lines."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    lines = []
    for i in range(n):
        messages = [{"role": "system", "content": "You answer warmly."}] if i % 5 == 0 else []
        for _ in range(rng.randint(1, 3)):
            messages.append({"role": "user", "content": f"#{i} {text(rng.randint(5, 20))}"})
            messages.append({"role": "assistant", "content": text(rng.randint(20, 60))})
        row = {"messages": messages, "category": CATEGORIES[i % len(CATEGORIES)], "id": f"r{i}"}
        lines.append(json.dumps(row, ensure_ascii=False))
    return lines


def measure(rows: int, tokens: bool) -> dict:
    from adapters.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="loraeq-bench-") as tmp:
        path = Path(tmp) / "chat.jsonl"
        path.write_text("\n".join(make_rows(rows)) + "\n", encoding="utf-8")
        started = time.perf_counter()
        ds = load_dataset(path)
        seconds = time.perf_counter() - started
        assert ds.rows_valid == rows, (ds.rows_valid, ds.errors[:3])
        out = {
            "rows": rows,
            "megabytes": round(path.stat().st_size / 2**20, 1),
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds),
            "cpus": os.cpu_count(),
        }
        if tokens:
            from adapters.base.loading import load_tokenizer

            tok = load_tokenizer()
            started = time.perf_counter()
            ds = load_dataset(path, max_length=2048, tokenizer=tok)
            out["seconds_with_tokens"] = round(time.perf_counter() - started, 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--tokens", action="store_true", help="also time token counting with the real tokenizer")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    result = measure(args.rows, args.tokens)
    if args.json:
        print(json.dumps(result))
        return
    print(f"read + validated {result['rows']:,} chat rows ({result['megabytes']} MiB) in {result['seconds']:.2f} s: "
          f"{result['rows_per_s']:,} rows/s on {result['cpus']} CPUs (target <= 10 s for 100,000)")
    if "seconds_with_tokens" in result:
        print(f"with token counts (SmolLM2 chat template, max_length 2048): {result['seconds_with_tokens']:.2f} s")


if __name__ == "__main__":
    main()

"""Serve speed: 4 clients at once, each on its own variant, against the same 4 requests one after
another, on one `loraeq serve` endpoint (the real embedded model, the `openai` SDK as the client).

    python benchmarks/serve_speed.py [--tokens 64] [--precision auto] [--json]

Setup (not timed): the embedded SmolLM2-135M-Instruct with four LoRA adapters shaped by the
uniform, attention, mlp and late presets (`compare_speed.random_adapters`: rank 8, random non-zero
B, four models that answer differently), served in this process on 127.0.0.1 by uvicorn. Timed: 4 chat completions of
`--tokens` new tokens (greedy, a prompt that asks for a long answer), first one after another,
then all 4 at once from 4 threads; then the same at once again, streamed, for the time to each
client's first token. Target: at once >= 3x the tokens per second of one after another, with the
same text for every request.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
TARGET = 3.0
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm. Use many sentences."


def serve(engine):
    import uvicorn

    from loraeq.serve import build_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    app = build_app(engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return server, port, app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import openai

    from adapters.base.loading import load_model
    from adapters.infer.engine import CompareEngine
    from compare_speed import random_adapters

    base = load_model(None, args.precision)
    with tempfile.TemporaryDirectory() as tmp:
        engine = CompareEngine(base, random_adapters(base, Path(tmp), std=0.02))
    server, port, app = serve(engine)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    models = engine.variants
    messages = [{"role": "user", "content": PROMPT}]

    def ask(model: str):
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=args.tokens, temperature=0)
        return reply.choices[0].message.content, reply.usage.completion_tokens

    def first_token(model: str) -> float:
        started = time.perf_counter()
        first = None
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=args.tokens,
                                                    temperature=0, stream=True):
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - started
        return first

    ask(models[0])  # warm up (first-call costs are not the server's speed)
    started = time.perf_counter()
    one_by_one = [ask(m) for m in models]
    sequential_s = time.perf_counter() - started
    with ThreadPoolExecutor(len(models)) as pool:
        started = time.perf_counter()
        together = list(pool.map(ask, models))
        concurrent_s = time.perf_counter() - started
        firsts = list(pool.map(first_token, models))
    tokens = sum(n for _, n in one_by_one)
    seq_tps, con_tps = tokens / sequential_s, sum(n for _, n in together) / concurrent_s
    out = {"requests": len(models), "new_tokens": args.tokens, "tokens": tokens,
           "sequential_s": round(sequential_s, 2), "concurrent_s": round(concurrent_s, 2),
           "sequential_tokens_per_s": round(seq_tps, 1), "concurrent_tokens_per_s": round(con_tps, 1),
           "speedup": round(con_tps / seq_tps, 2), "target": TARGET,
           "identical": [t for t, _ in together] == [t for t, _ in one_by_one],
           "time_to_first_token_s": [round(f, 3) if f is not None else None for f in firsts],
           "batch_rows": app.state.batcher.batches[-9:]}
    out["meets_target"] = out["speedup"] >= TARGET and out["identical"]
    server.should_exit = True
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{len(models)} requests x {args.tokens} tokens: one after another {seq_tps:.0f} tokens/s, at once "
              f"{con_tps:.0f} tokens/s = {out['speedup']}x (target {TARGET}x); identical text: {out['identical']}; "
              f"first token at once: {out['time_to_first_token_s']} s")
    return 0 if out["meets_target"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""promptfoo itself (installed from npm into a local folder, `scripts/promptfoo.sh`) runs its own
`eval` against `loraeq serve` on a run with two variants, through its `openai:chat:<variant>`
providers: its pass counts are `loraeq evalset`'s on the same config at temperature 0."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loraeq.main import main

ROOT = Path(__file__).resolve().parents[1]
PROMPTFOO = ROOT / ".promptfoo" / "node_modules" / ".bin" / "promptfoo"

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")

QUESTIONS = ["w1 w2 ?", "w3 w4 ?", "w5 w6 ?", "paris w7 ?", "w8 ?", "w9 w10 w11 ?"]


def cli(*argv: str) -> dict:
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    with redirect_stdout(out):
        assert main([*argv, "--json"]) == 0
    return json.loads(out.getvalue())


def _data(path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"w{i % 12} w{(i * 5) % 12} ?"},
                          {"role": "assistant", "content": f"paris w{20 + i % 4}"}]} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(path: Path, port: int, variants: list[str]) -> Path:
    providers = [{"id": f"openai:chat:{v}", "label": v,
                  "config": {"apiBaseUrl": f"http://127.0.0.1:{port}/v1", "apiKey": "k", "temperature": 0,
                             "max_tokens": 12}} for v in variants]
    tests = [{"vars": {"q": q}, "assert": [{"type": "icontains", "value": word}]}
             for q in QUESTIONS for word in ("paris", "w2")]
    path.write_text(json.dumps({"description": "served variants", "prompts": ["{{q}}"], "providers": providers,
                                "tests": tests}))
    return path


@pytest.fixture(scope="module")
def promptfoo():
    if not PROMPTFOO.exists():
        done = subprocess.run(["bash", str(ROOT / "scripts" / "promptfoo.sh")], cwd=ROOT, capture_output=True, text=True,
                              timeout=900)
        if done.returncode != 0:
            pytest.fail(f"installing promptfoo failed: {done.stderr[-2000:]}")
    return PROMPTFOO


def test_promptfoo_eval_against_the_server_agrees_with_loraeq_evalset(promptfoo, tmp_path, tiny_model_dir):
    run = tmp_path / "run"
    cli("train", "--data", str(_data(tmp_path / "d.jsonl")), "--out", str(run), "--model", str(tiny_model_dir),
        "--precision", "fp32", "--preset", "uniform", "--preset", "attention", "--max-steps", "6", "--lr", "0.01",
        "--heldout", "0.2")
    variants = ["uniform", "attention"]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = subprocess.Popen([sys.executable, "-m", "loraeq", "serve", str(run), "--port", str(port),
                               "--api-key", "k"], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                time.sleep(0.3)
        config = _config(tmp_path / "promptfooconfig.yaml", port, variants)  # JSON is YAML too
        env = {**os.environ, "PROMPTFOO_DISABLE_TELEMETRY": "1", "PROMPTFOO_DISABLE_UPDATE": "1",
               "PROMPTFOO_CONFIG_DIR": str(tmp_path / "pf"), "OPENAI_API_KEY": "k"}
        result = tmp_path / "results.json"
        done = subprocess.run([str(promptfoo), "eval", "-c", str(config), "-o", str(result), "--no-cache",
                               "--no-table", "--no-progress-bar", "-j", "4"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.exists(), done.stdout[-2000:] + done.stderr[-2000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = json.loads(result.read_text())["results"]["results"]
    theirs = {v: sum(1 for r in rows if r["provider"].get("label") == v and r["success"]) for v in variants}
    assert len(rows) == len(QUESTIONS) * 2 * len(variants)
    assert all(isinstance(r["response"].get("output"), str) and not r["response"].get("error") for r in rows)
    ours = {c["name"]: c["passed"] for c in cli("evalset", str(run), "--set", str(config), "--max-new-tokens", "12")[
        "columns"] if c["name"] in variants}
    assert theirs == ours and 0 < sum(ours.values()) < len(QUESTIONS) * 2 * len(variants)

"""`loraeq serve` (loraeq/serve.py, adapters/infer/batcher.py) on a tiny seeded model with two
variants, through the real `openai` SDK: models, chat and text completions, streaming, requests
for different variants answered in one batch with the answers each gets alone, and one-line
errors in OpenAI's shape (404 naming the models, 401, 400 naming the field, 429)."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from adapters.base.loading import load_model
from adapters.base.tokenize import encode_prompt
from adapters.infer.decoding import Sampling
from adapters.infer.engine import CompareEngine
from adapters.limits import Limits
from loraeq.serve import build_app, cut_at_stop

openai = pytest.importorskip("openai")


def _adapters(base, root) -> dict:
    from peft import LoraConfig, get_peft_model

    folders = {}
    for i, (name, targets) in enumerate([("attn", ["q_proj", "v_proj"]), ("mlp", ["up_proj", "down_proj"])]):
        torch.manual_seed(i)
        model = get_peft_model(base.model, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.5)
        model.save_pretrained(root / name)
        model.unload()
        folders[name] = root / name
    return folders


@pytest.fixture
def server(tmp_path, tiny_model_dir):
    import uvicorn

    base = load_model(str(tiny_model_dir), "fp32")
    engine = CompareEngine(base, _adapters(base, tmp_path))
    app = build_app(engine, api_key="sekrit", limits=Limits(new_tokens=64), window_s=0.3)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sekrit", max_retries=0)
    yield client, engine, app, port
    srv.should_exit = True
    thread.join(timeout=10)


MESSAGES = [{"role": "system", "content": "w1 w2"}, {"role": "user", "content": "w3 w4 w5 ?"}]


def test_the_sdk_lists_every_model_and_gets_the_engines_own_answers(server):
    client, engine, app, _ = server
    assert [m.id for m in client.models.list()] == ["base", "attn", "mlp"]
    alone = {}
    for model in ("base", "attn", "mlp"):
        reply = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=8, temperature=0)
        alone[model] = reply.choices[0].message.content
        column = "base" if model == "base" else model
        assert alone[model] == engine.answer(MESSAGES[-1]["content"], [column], system=MESSAGES[0]["content"],
                                             sampling=Sampling(max_new_tokens=8))[0].text
        assert reply.usage.completion_tokens <= 8 and reply.choices[0].finish_reason in ("stop", "length")
        assert reply.usage.prompt_tokens == len(encode_prompt(engine.tokenizer, MESSAGES))
    assert len(set(alone.values())) == 3  # three models, three answers
    pieces = [c.choices[0].delta.content or "" for c in
              client.chat.completions.create(model="attn", messages=MESSAGES, max_tokens=8, stream=True)]
    assert "".join(pieces) == alone["attn"] and len([p for p in pieces if p]) >= 2
    text = client.completions.create(model="mlp", prompt="w3 w4 w5 ?", max_tokens=8).choices[0].text
    assert text == engine.answer("w3 w4 w5 ?", ["mlp"], sampling=Sampling(max_new_tokens=8))[0].text


def test_requests_for_different_variants_share_one_batch(server):
    client, engine, app, _ = server
    models = ["base", "attn", "mlp", "attn"]
    alone = [client.chat.completions.create(model=m, messages=MESSAGES, max_tokens=12).choices[0].message.content
             for m in models]
    before = len(app.state.batcher.batches)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda m: client.chat.completions.create(
            model=m, messages=MESSAGES, max_tokens=12).choices[0].message.content, models))
    assert together == alone
    assert max(app.state.batcher.batches[before:]) >= 3  # they arrived within the window: one mixed batch


def test_bad_requests_get_one_line_in_openais_shape(server):
    client, engine, app, port = server
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=MESSAGES)
    assert "'nope' does not exist here; the models are: base, attn, mlp" in str(e.value)
    wrong = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    for kwargs, field in [({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
                          ({"messages": MESSAGES, "max_tokens": 10_000}, "max_tokens"),
                          ({"messages": MESSAGES, "temperature": "hot"}, "temperature"),
                          ({"messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, "stop")]:
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="base", **kwargs)
        assert e.value.body["param"] == field and "\n" not in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:  # longer than the model reads: the request's fault
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": "w1 " * 120}],
                                       max_tokens=32)
    assert "the model reads at most 128" in e.value.body["message"]
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=b"{not json",
                                 headers={"Authorization": "Bearer sekrit"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400 and b"not JSON" in e.value.read()


def test_a_stop_string_ends_the_answer_where_it_starts():
    assert cut_at_stop("w1 w2 w3", ["w2"]) == ("w1 ", True)
    assert cut_at_stop("w1 w2 w3", ["x"]) == ("w1 w2 w3", False)
    assert cut_at_stop("abcabc", ["c", "b"]) == ("a", True)


def test_a_full_queue_refuses_more_requests(tiny_model_dir, tmp_path):
    from adapters.infer.batcher import Batcher, Busy

    base = load_model(str(tiny_model_dir), "fp32")
    engine = CompareEngine(base, {})
    batcher = Batcher(engine, window_s=5.0, max_waiting=2)
    try:
        batcher.submit("base", MESSAGES, Sampling(max_new_tokens=2))
        batcher.submit("base", MESSAGES, Sampling(max_new_tokens=2))
        with pytest.raises(Busy, match="2 requests are waiting"):
            batcher.submit("base", MESSAGES, Sampling(max_new_tokens=2))
    finally:
        batcher.close()

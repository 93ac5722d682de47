"""`loraeq serve`: the base and every variant of a run behind an OpenAI-compatible endpoint.

`GET /v1/models` lists `base` and the variants; `POST /v1/chat/completions` and `POST
/v1/completions` answer with the model named in the body (`model`: `base` or a variant), plain
or streamed as server-sent events. Requests that arrive together are decoded in one mixed batch
(`adapters.infer.batcher`). The limits are the app's (`Limits`: new tokens, message size, body
size, waiting requests), a bad request gets one line in OpenAI's error shape, and a key is
checked when one is set (`--api-key` or LORAEQ_API_KEY). It listens on 127.0.0.1 unless told
otherwise. A completion's prompt is taken as one user turn (the chat template is applied).
(No `from __future__ import annotations` here: FastAPI reads the handlers' annotations.)
"""

import argparse
import contextlib
import hmac
import json
import os
import sys
import time
import uuid

from adapters.errors import LoraEqError

API_KEY_ENV = "LORAEQ_API_KEY"
ROLES = ("system", "user", "assistant")
MAX_STOPS = 4  # OpenAI's own limit on `stop`
MAX_BODY_BYTES = 4 * 1024 * 1024


class BadRequest(LoraEqError):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param, self.status, self.code = param, status, code


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error", code: str | None = None):
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _number(body: dict, name: str, default, low: float, high: float, whole: bool = False):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not isinstance(value, int)):
        raise BadRequest(f"{name}: {value!r} is not a {'whole ' if whole else ''}number", name)
    if not low <= value <= high:
        raise BadRequest(f"{name}: {value!r} is outside {low:g} to {high:g}", name)
    return value


def parse_messages(body: dict, limits) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list of {role, content} is required", "messages")
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise BadRequest(f"{where}: must be an object with role and content", where)
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise BadRequest(f"{where}.role: {role!r} is not one of {', '.join(ROLES)}", f"{where}.role")
        if isinstance(content, list):  # content parts: the text ones
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            if len(parts) != len(content) or not all(isinstance(p, str) for p in parts):
                raise BadRequest(f"{where}.content: only text parts are supported", f"{where}.content")
            content = "".join(parts)
        if not isinstance(content, str):
            raise BadRequest(f"{where}.content: must be text", f"{where}.content")
        if len(content) > limits.prompt_chars:
            raise BadRequest(f"{where}.content: {len(content)} characters, over the limit of {limits.prompt_chars}",
                             f"{where}.content")
        out.append({"role": role, "content": content})
    if out[-1]["role"] == "assistant":
        raise BadRequest("messages: the last message must be the user's (or a system prompt)", "messages")
    return out


def parse_request(body, limits, kind: str) -> tuple[str, list[dict], object, int | None, list[str], bool]:
    """(model, messages, sampling, seed, stop strings, stream) of a request body, checked."""
    from adapters.infer.decoding import Sampling

    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model: name base or a variant (GET /v1/models lists them)", "model")
    if kind == "chat":
        messages = parse_messages(body, limits)
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt: one text is required", "prompt")
        if len(prompt) > limits.prompt_chars:
            raise BadRequest(f"prompt: {len(prompt)} characters, over the limit of {limits.prompt_chars}", "prompt")
        messages = [{"role": "user", "content": prompt}]
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, key, min(256, limits.new_tokens), 1, limits.new_tokens, whole=True)
    temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
    top_p = _number(body, "top_p", 1.0, 1e-9, 1.0)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"seed: {seed!r} is not a whole number", "seed")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOPS or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest(f"stop: a text or a list of at most {MAX_STOPS} texts", "stop")
    n = body.get("n", 1)
    if n != 1:
        raise BadRequest("n: only 1 answer per request", "n")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequest("stream: must be true or false", "stream")
    return model, messages, Sampling(max_new_tokens=max_tokens, temperature=float(temperature), top_p=float(top_p)), \
        seed, stop, stream


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text up to the first stop string, and whether one was found."""
    cuts = [text.find(s) for s in stops if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def build_app(engine, *, api_key: str | None = None, limits=None, window_s: float | None = None):
    """The FastAPI app serving `engine` (a CompareEngine); its `state.batcher` decodes the requests."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    from adapters.infer.batcher import WINDOW_S, Batcher, Busy
    from adapters.limits import Limits
    from adapters.train.runfolder import BASE_COLUMN

    limits = limits or Limits.from_env()
    batcher = Batcher(engine, window_s=WINDOW_S if window_s is None else window_s, max_rows=limits.columns * 2)
    names = {"base": BASE_COLUMN, **{v: v for v in engine.variants}}
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()

    app = FastAPI(title="LoRA EQ", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.batcher = batcher
    created = int(time.time())

    def failure(e: Exception):
        if isinstance(e, BadRequest):
            return JSONResponse(error_body(str(e), e.param, code=e.code), status_code=e.status)
        if isinstance(e, Busy):
            return JSONResponse(error_body(str(e), kind="rate_limit_error"), status_code=429)
        if isinstance(e, LoraEqError):  # the engine's named refusals are about the request (a prompt too long)
            return JSONResponse(error_body(str(e)), status_code=400)
        return JSONResponse(error_body(str(e), kind="server_error"), status_code=500)

    def check_key(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise BadRequest("invalid API key: send Authorization: Bearer KEY", status=401, code="invalid_api_key")

    async def body_of(request: Request):
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise BadRequest(f"the body is {len(raw)} bytes, over the limit of {MAX_BODY_BYTES}", status=413)
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"the body is not JSON ({e})") from None

    @app.get("/v1/models")
    async def models(request: Request):
        try:
            check_key(request)
        except BadRequest as e:
            return failure(e)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "loraeq"}
                                           for n in names]}

    async def complete(request: Request, kind: str):
        try:
            check_key(request)
            model, messages, sampling, seed, stops, stream = parse_request(await body_of(request), limits, kind)
            if model not in names:
                raise BadRequest(f"model {model!r} does not exist here; the models are: {', '.join(names)}", "model",
                                 status=404, code="model_not_found")
            pending = batcher.submit(names[model], messages, sampling, seed)
        except (LoraEqError, ValueError) as e:
            return failure(e if isinstance(e, LoraEqError) else BadRequest(str(e)))
        ident = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        if stream:
            return StreamingResponse(_events(pending, ident, model, kind, stops, created),
                                     media_type="text/event-stream")
        answer = await _wait(pending)
        if isinstance(answer, Exception):
            return failure(answer)
        text, stopped = cut_at_stop(answer.text, stops)
        reason = "stop" if stopped or answer.finish_reason == "stop" else "length"
        usage = {"prompt_tokens": pending.prompt_tokens, "completion_tokens": answer.tokens,
                 "total_tokens": pending.prompt_tokens + answer.tokens}
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason,
                      "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": reason, "logprobs": None}
        return {"id": ident, "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()), "model": model, "choices": [choice], "usage": usage}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await complete(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await complete(request, "text")

    return app


async def _next(pending):
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, pending.deltas.get)


async def _wait(pending):
    while True:
        item = await _next(pending)
        if not isinstance(item, str):
            return item


async def _events(pending, ident: str, model: str, kind: str, stops: list[str], created: int):
    """Server-sent events in OpenAI's chunk shape; the text is held back where a stop string may start."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

    def chunk(text: str | None, reason: str | None, first: bool = False) -> str:
        if kind == "chat":
            delta = ({"role": "assistant", "content": ""} if first else {}) | ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return "data: " + json.dumps({"id": ident, "object": obj, "created": created, "model": model,
                                      "choices": [choice]}) + "\n\n"

    if kind == "chat":
        yield chunk(None, None, first=True)
    said, held = "", ""
    hold = max((len(s) for s in stops), default=1) - 1
    try:
        while True:
            item = await _next(pending)
            if isinstance(item, Exception):
                yield "data: " + json.dumps(error_body(str(item), kind="server_error")) + "\n\n"
                break
            if isinstance(item, str):
                held += item
                text, stopped = cut_at_stop(said + held, stops)
                if stopped:
                    yield chunk(text[len(said):], None) if len(text) > len(said) else ""
                    yield chunk(None, "stop")
                    pending.cancelled = True
                    await _wait(pending)
                    break
                ready = held[: len(held) - hold] if hold else held
                if ready:
                    said, held = said + ready, held[len(ready):]
                    yield chunk(ready, None)
                continue
            if held:
                yield chunk(held, None)
            yield chunk(None, "stop" if item.finish_reason == "stop" else "length")
            break
        yield "data: [DONE]\n\n"
    finally:
        pending.cancelled = True


def _serve(args: argparse.Namespace) -> dict:
    import uvicorn

    from .compare import open_engine

    with contextlib.ExitStack() as stack:
        engine = open_engine(args, stack)
        key = args.api_key or os.environ.get(API_KEY_ENV) or None
        app = build_app(engine, api_key=key)
        names = ["base", *engine.variants]
        print(f"serving {', '.join(names)} at http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return {"served": names, "host": args.host, "port": args.port}


def register(sub) -> None:
    from .compare import add_engine_flags

    p = sub.add_parser("serve", help="the base and every variant behind an OpenAI-compatible endpoint")
    add_engine_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help=f"a key clients must send as Bearer (default ${API_KEY_ENV}; none: no key)")
    p.set_defaults(handler=_serve, render=lambda d, a: f"stopped serving {', '.join(d['served'])}")

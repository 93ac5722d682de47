"""Adapters from outside a run: made here with plain `peft` (not LoRA EQ's trainer), with a
non-uniform `rank_pattern` and `alpha_pattern` and random non-zero B factors, then given to the
engine, the CLI (`loraeq compare / chat --adapter`) and the served app (a zip uploaded through
gradio_client). Their greedy answers must equal plain `PeftModel.generate` token for token; every
bad adapter is refused with one line and leaves the rest working.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from adapters.base.tokenize import encode_prompt
from adapters.errors import LoraEqError
from adapters.infer.decoding import Sampling
from adapters.infer.engine import BASE_COLUMN, CompareEngine
from adapters.share.adapter_sources import AdapterSpec, check_adapter, check_name, extract_zip, resolve

MESSAGE = "w1 w2 ?"
N = 10
GREEDY = Sampling(max_new_tokens=N)
ROOT = Path(__file__).resolve().parents[1]

RANK_PATTERN = {"model.layers.0.self_attn.q_proj": 2, "down_proj": 8}
ALPHA_PATTERN = {"v_proj": 32, "model.layers.1.self_attn.q_proj": 3}


def make_adapter(folder: Path, model_type: str = "llama", targets=("q_proj", "v_proj", "down_proj"), seed: int = 1,
                 std: float = 0.3, safe: bool = True, **model_overrides) -> Path:
    """A LoRA adapter made with plain peft on the tiny seeded model (the one write_tiny_model saves),
    with random non-zero B so that it changes the answers."""
    from conftest import tiny_causal_lm
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=4, lora_alpha=8, target_modules=list(targets), lora_dropout=0.0,
                        rank_pattern=RANK_PATTERN if model_type == "llama" else {},
                        alpha_pattern=ALPHA_PATTERN if model_type == "llama" else {})
    torch.manual_seed(seed)
    model = get_peft_model(tiny_causal_lm(model_type, **model_overrides), config)
    generator = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    model.save_pretrained(folder, safe_serialization=safe)
    return folder


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from conftest import write_tiny_model

    root = tmp_path_factory.mktemp("outside")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAEQ_CACHE", str(root / "cache"))
        yield {
            "root": root,
            "model": write_tiny_model(root / "tiny-llama"),
            "adapter": make_adapter(root / "plain-adapter"),
        }


def _plain_generate(model_dir: Path, adapter: Path | None, precision: str = "fp32") -> list[int]:
    """Greedy tokens of plain transformers + PeftModel on a fresh base (no LoRA EQ engine)."""
    from peft import PeftModel

    from adapters.base.loading import load_model
    from adapters.infer.engine import stop_token_ids

    base = load_model(str(model_dir), precision)
    stops = stop_token_ids(base.tokenizer, base.model)
    model = PeftModel.from_pretrained(base.model, adapter) if adapter else base.model
    ids = torch.tensor([encode_prompt(base.tokenizer, [{"role": "user", "content": MESSAGE}])])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=N, do_sample=False,
                         eos_token_id=sorted(stops), pad_token_id=base.tokenizer.pad_token_id)
    tokens = out[0, ids.shape[1]:].tolist()
    return tokens[:-1] if tokens and tokens[-1] in stops else tokens


@pytest.fixture(scope="module")
def plain_tokens(files):
    return {BASE_COLUMN: _plain_generate(files["model"], None), "plain": _plain_generate(files["model"], files["adapter"])}


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from loraeq.main import main

    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ---- the adapter's patterns are PEFT's ----------------------------------------------------------------


def test_the_adapter_really_has_non_uniform_ranks_and_alphas(files):
    config = json.loads((files["adapter"] / "adapter_config.json").read_text())
    assert config["rank_pattern"] == RANK_PATTERN and config["alpha_pattern"] == ALPHA_PATTERN
    engine = CompareEngine.from_model(str(files["model"]), {"plain": files["adapter"]}, precision="fp32")
    try:
        layers = {n: m for n, m in engine.model.named_modules() if hasattr(m, "lora_A") and "v0" in m.lora_A}
        ranks = {n.removeprefix("base_model.model.model."): m.lora_A["v0"].weight.shape[0] for n, m in layers.items()}
        scalings = {n.removeprefix("base_model.model.model."): m.scaling["v0"] for n, m in layers.items()}
    finally:
        engine.close()
    assert ranks["layers.0.self_attn.q_proj"] == 2 and ranks["layers.1.self_attn.q_proj"] == 4
    assert ranks["layers.0.mlp.down_proj"] == 8 and ranks["layers.0.self_attn.v_proj"] == 4
    assert scalings["layers.0.self_attn.v_proj"] == 32 / 4 and scalings["layers.1.self_attn.q_proj"] == 3 / 4
    assert scalings["layers.0.self_attn.q_proj"] == 8 / 2 and scalings["layers.0.mlp.down_proj"] == 8 / 8


@pytest.mark.parametrize("backend", ["fused", "peft"])
def test_engine_greedy_equals_plain_peft_generate_in_either_backend(files, plain_tokens, backend):
    engine = CompareEngine.from_model(str(files["model"]), {"plain": files["adapter"]}, precision="fp32",
                                      backend=backend)
    try:
        answers = {a.label: a.token_ids for a in engine.answer(MESSAGE, sampling=GREEDY)}
        assert engine.outside == ["plain"] and engine.warnings == {"plain": []}
    finally:
        engine.close()
    assert answers == plain_tokens
    assert answers["plain"] != answers[BASE_COLUMN]  # not vacuous: the adapter changes the answer


def test_cli_compare_with_the_adapter_as_a_folder_and_no_run(files, plain_tokens, capsys):
    from adapters.base.loading import load_model

    code, out, err = _cli(["compare", "--model", str(files["model"]), "--precision", "fp32",
                           "--adapter", f"plain={files['adapter']}", "--prompt", MESSAGE,
                           "--max-new-tokens", str(N), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert [c["variant"] for c in data["columns"]] == [BASE_COLUMN, "plain"]
    assert data["run_dir"] is None and data["adapters"] == {"plain": str(files["adapter"])}
    tokenizer = load_model(str(files["model"]), "fp32").tokenizer
    for c in data["columns"]:
        expected = tokenizer.decode(plain_tokens[c["variant"]], skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)
        assert c["text"] == expected


def test_the_adapter_loads_and_answers_on_the_nf4_base(files):
    from peft import PeftModel

    from adapters.base.loading import load_model

    engine = CompareEngine.from_model(str(files["model"]), {"plain": files["adapter"]}, precision="nf4")
    try:
        assert engine.base.precision == "nf4"
        kinds = {type(m).__name__ for m in engine.model.modules() if hasattr(m, "lora_A")}
        assert kinds == {"Linear4bit"}
        answers = {a.label: a.token_ids for a in engine.answer(MESSAGE, sampling=GREEDY)}
    finally:
        engine.close()
    assert answers["plain"] and answers["plain"] != answers[BASE_COLUMN]
    # The same tokens as plain PEFT on a fresh NF4 base.
    fresh = load_model(str(files["model"]), "nf4")
    peft_model = PeftModel.from_pretrained(fresh.model, files["adapter"])
    ids = torch.tensor([encode_prompt(fresh.tokenizer, [{"role": "user", "content": MESSAGE}])])
    out = peft_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(answers["plain"]),
                              do_sample=False, eos_token_id=None, pad_token_id=fresh.tokenizer.pad_token_id)
    assert out[0, ids.shape[1]:].tolist() == answers["plain"]


# ---- names and sources --------------------------------------------------------------------------------


def test_names_are_short_safe_not_base_and_unique():
    assert AdapterSpec.parse("tone=org/adapter") == AdapterSpec("tone", "org/adapter")
    assert check_name("my-adapter.v2") == "my-adapter.v2"
    for bad in ("", "base", "BASE", "../x", "a/b", "x" * 41, "-x", "x@eq", ".."):
        with pytest.raises(LoraEqError):
            check_name(bad)
    with pytest.raises(LoraEqError, match="already used"):
        check_name("a", taken=["a"])
    with pytest.raises(LoraEqError, match="NAME=SOURCE"):
        AdapterSpec.parse("no-equals-sign")


def test_folders_are_taken_only_under_allowed_roots(files, tmp_path):
    adapter = files["adapter"]
    assert resolve(str(adapter), tmp_path / "w", roots=None) == adapter.resolve()
    assert resolve(str(adapter), tmp_path / "w", roots=(adapter.parent.resolve(),)) == adapter.resolve()
    with pytest.raises(LoraEqError, match="not under a folder"):
        resolve(str(adapter), tmp_path / "w", roots=())
    with pytest.raises(LoraEqError, match="not under a folder"):
        resolve(str(adapter / ".." / ".." ), tmp_path / "w", roots=(adapter.resolve(),))
    link = tmp_path / "allowed" / "link"
    link.parent.mkdir()
    link.symlink_to(adapter)
    with pytest.raises(LoraEqError, match="not under a folder"):  # a link out of the root is followed, then refused
        resolve(str(link), tmp_path / "w", roots=(link.parent.resolve(),))


def test_a_run_variant_source_is_a_finished_variant_inside_the_runs_area(files, tmp_path):
    runs = tmp_path / "runs"
    (runs / "run-a").mkdir(parents=True)
    with pytest.raises(LoraEqError):
        resolve("run:run-a/nothing", tmp_path / "w", runs=runs)
    with pytest.raises(LoraEqError, match="RUN/VARIANT"):
        resolve("run:../run-a", tmp_path / "w", runs=runs)


# ---- refusals -------------------------------------------------------------------------------------------


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _adapter_members(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def bad(files):
    """One adapter per refusal case."""
    root = files["root"] / "bad"
    root.mkdir()
    broken = shutil.copytree(files["adapter"], root / "broken")
    (broken / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')
    with_link = root / "with-link.zip"
    with zipfile.ZipFile(with_link, "w") as z:
        for name, data in _adapter_members(files["adapter"]).items():
            z.writestr(name, data)
        info = zipfile.ZipInfo("evil-link")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    return {
        "gpt2": make_adapter(root / "gpt2", "gpt2", targets=("c_attn",)),
        "wider": make_adapter(root / "wider", hidden_size=128, intermediate_size=256),
        "broken": broken,
        "pickle": make_adapter(root / "pickle", safe=False),
        "dotdot": _zip(root / "dotdot.zip", {**_adapter_members(files["adapter"]), "../escaped.txt": b"x"}),
        "absolute": _zip(root / "absolute.zip", {**_adapter_members(files["adapter"]), "/tmp/abs.txt": b"x"}),
        "link": with_link,
        "ok_zip": _zip(root / "ok.zip", _adapter_members(files["adapter"], "plain-adapter/")),
    }


REFUSALS = {  # case -> what the one-line reason says
    "gpt2": "target module 'c_attn' does not exist in the base",
    "wider": "has shape",
    "broken": "adapter_config.json is broken",
    "pickle": "pickled adapter_model.bin",
    "dotdot": "would land outside",
    "absolute": "would land outside",
    "link": "is a link",
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_cli_refuses_a_bad_adapter_with_exit_2_and_one_line(files, bad, case, capsys):
    code, out, err = _cli(["compare", "--model", str(files["model"]), "--precision", "fp32",
                           "--adapter", f"good={files['adapter']}", "--adapter", f"bad={bad[case]}",
                           "--prompt", MESSAGE, "--max-new-tokens", "2"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("loraeq: error: adapter 'bad'") and REFUSALS[case] in err, err
    assert not (bad["dotdot"].parent.parent / "escaped.txt").exists()


def test_an_oversize_zip_is_refused_and_the_limit_comes_from_the_environment(files, bad, capsys, monkeypatch):
    monkeypatch.setenv("LORAEQ_LIMIT_ADAPTER_BYTES", "2000")
    code, out, err = _cli(["compare", "--model", str(files["model"]), "--adapter", f"big={bad['ok_zip']}",
                           "--prompt", MESSAGE], capsys)
    assert code == 2 and "over the adapter limit of 2,000" in err and err.count("\n") == 1


def test_a_small_zip_that_unpacks_over_the_limit_is_refused_before_writing(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("adapter_config.json", "{}")
        z.writestr("pad.bin", b"\0" * 50_000)
    assert path.stat().st_size < 10_000  # the file itself is within the limit
    with pytest.raises(LoraEqError, match="50,002 bytes unpacked, over the adapter limit of 10,000"):
        extract_zip(path, tmp_path / "out", 10_000)
    assert not (tmp_path / "out").exists()


def test_pickle_only_is_accepted_when_explicitly_allowed(files, bad):
    from adapters.base.loading import load_model

    base = load_model(str(files["model"]), "fp32")
    with pytest.raises(LoraEqError, match="pickled"):
        check_adapter(bad["pickle"], base)
    assert check_adapter(bad["pickle"], base, allow_pickle=True) == []


def test_a_different_base_name_with_fitting_shapes_is_a_warning(files, tmp_path):
    from adapters.base.loading import load_model

    folder = shutil.copytree(files["adapter"], tmp_path / "named")
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "someone/else"}))
    warnings = check_adapter(folder, load_model(str(files["model"]), "fp32"))
    assert len(warnings) == 1 and "someone/else" in warnings[0]


def test_a_hub_id_offline_loads_from_a_local_hub_cache_and_a_missing_one_is_a_clear_error(files, tmp_path,
                                                                                          monkeypatch, capsys):
    hub = tmp_path / "hub"
    commit = "a" * 40
    snapshot = hub / "models--someone--tiny-adapter" / "snapshots" / commit
    shutil.copytree(files["adapter"], snapshot)
    (hub / "models--someone--tiny-adapter" / "refs").mkdir()
    (hub / "models--someone--tiny-adapter" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    assert resolve("someone/tiny-adapter", tmp_path / "w") == snapshot
    code, out, err = _cli(["compare", "--model", str(files["model"]), "--precision", "fp32",
                           "--adapter", "hub=hub:someone/tiny-adapter", "--prompt", MESSAGE, "--max-new-tokens", "4",
                           "--json"], capsys)
    assert code == 0, err
    assert [c["variant"] for c in json.loads(out)["columns"]] == [BASE_COLUMN, "hub"]
    code, out, err = _cli(["compare", "--model", str(files["model"]), "--adapter", "x=someone/not-cached",
                           "--prompt", MESSAGE], capsys)
    assert code == 2 and "offline" in err and err.count("\n") == 1


# ---- loraeq chat -----------------------------------------------------------------------------------------


def test_chat_keeps_a_history_per_column_and_obeys_its_commands(files, plain_tokens):
    script = "\n".join([MESSAGE, "/regen", "w3 ?", "/system w5 w6", "/reset", "/bogus", MESSAGE, "/quit",
                        "never read"]) + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "loraeq", "chat", "--model", str(files["model"]), "--precision", "fp32",
         "--adapter", f"plain={files['adapter']}", "--max-new-tokens", str(N), "--layout", "stacked"],
        input=script, capture_output=True, text=True, cwd=ROOT, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    turns = [t for t in proc.stdout.split("== base\n")[1:]]
    assert len(turns) == 4  # first message, its regen, the follow-up, the message after /reset
    first = turns[0].split("== plain\n")
    assert turns[1] == turns[0]  # greedy: the regenerated answer is the same
    assert turns[3] != turns[0]  # the same message after /reset, now under the system prompt
    assert "unknown command '/bogus'" in proc.stderr and "(conversation reset)" in proc.stdout
    assert "(system prompt set" in proc.stdout
    assert "chat ended after 6 inputs" in proc.stdout  # the bad command is not counted, nothing after /quit read
    assert first[1].strip() != first[0].strip()


def test_chat_histories_grow_per_column_and_reset(files):
    from adapters.infer.chat import Chat

    engine = CompareEngine.from_model(str(files["model"]), {"plain": files["adapter"]}, precision="fp32")
    try:
        chat = Chat(engine, engine.columns(), GREEDY)
        list(chat.send(MESSAGE))
        assert [m["role"] for m in chat.histories["plain"]] == ["user", "assistant"]
        assert chat.histories["plain"][1]["content"] != chat.histories[BASE_COLUMN][1]["content"]
        second = {}
        for d in chat.send("w3 ?"):
            second[d.label] = second.get(d.label, "") + d.text
        # Each column heard its own first answer: the second turn equals asking with that column's history.
        alone = engine.answer("w3 ?", ["plain"], history=chat.histories["plain"][:2], sampling=GREEDY)[0]
        assert second["plain"] == alone.text and len(chat.histories[BASE_COLUMN]) == 4
        before = {k: list(v) for k, v in chat.histories.items()}
        stream = chat.regen()
        next(stream)
        stream.close()  # abandoned halfway: the conversation is as it was
        assert chat.histories == before
        regenerated = "".join(d.text for d in chat.regen() if d.label == "plain")
        assert regenerated == second["plain"] and chat.histories == before  # greedy: the same answer again
        chat.reset()
        assert chat.histories == {BASE_COLUMN: [], "plain": []}
        with pytest.raises(LoraEqError, match="nothing to regenerate"):
            list(chat.regen())
    finally:
        engine.close()


# ---- the served app ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(files):
    import socket

    from adapters.limits import Limits
    from playground.app import build_app, launch_settings, make_shared

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    shared = make_shared(str(files["model"]), "fp32", str(files["root"] / "runs"),
                         limits=Limits.from_env(adapter_bytes=100_000))
    demo = build_app(shared)
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_settings(shared))
    yield shared, f"http://127.0.0.1:{port}/"
    demo.close()


def _zip_folder(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    return _zip(out, {**_adapter_members(folder, "adapter/"), **(extra or {})})


def _ask(client, columns=("plain",)) -> dict[str, str]:
    grid = client.predict(api_name="/load_variants")[2]
    client.predict(api_name="/clear")  # a fresh conversation: a first turn, not a follow-up
    out = client.predict(MESSAGE, "", list(columns), 0.0, 1.0, N, 0, None, grid, "", api_name="/ask")
    bots = out[:8]  # chatbot updates: the shown ones carry their label and messages; the last is the reply
    return {b["label"]: _message_text(b["value"][-1]) for b in bots if b.get("visible")}


def _message_text(message: dict) -> str:
    content = message["content"]
    return "".join(part["text"] for part in content) if isinstance(content, list) else content


def _app_error(call) -> str:
    try:
        call()
    except Exception as e:  # gradio_client raises AppError for a gr.Error
        return str(e)
    raise AssertionError("the call was accepted")


def test_app_takes_an_uploaded_zip_answers_like_plain_peft_and_refuses_bad_adapters(files, bad, plain_tokens,
                                                                                     served, tmp_path):
    from gradio_client import Client, handle_file

    from adapters.base.loading import load_model

    shared, url = served
    client = Client(url, verbose=False)
    token = client.predict({"token": None}, api_name="/restore")["token"]
    folder = shared.runs_dir / token.split(".")[0]
    assert "give exactly one source" in _app_error(lambda: client.predict("plain", None, None, "", "",
                                                                          api_name="/add_adapter"))
    upload = handle_file(str(_zip_folder(files["adapter"], tmp_path / "plain.zip")))
    client.predict("plain", None, upload, "", "", api_name="/add_adapter")
    assert (folder / "adapters" / "plain" / "adapter_model.safetensors").is_file()

    tokenizer = load_model(str(files["model"]), "fp32").tokenizer
    expected = {k: tokenizer.decode(v, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                for k, v in {BASE_COLUMN: plain_tokens[BASE_COLUMN], "plain": plain_tokens["plain"]}.items()}
    assert _ask(client) == expected

    cases = {case: (bad[case] if str(bad[case]).endswith(".zip") else _zip_folder(bad[case], tmp_path / f"{case}.zip"))
             for case in REFUSALS}
    padding = {"pad.bin": os.urandom(150_000)}  # random: does not compress
    cases["oversize"] = _zip_folder(files["adapter"], tmp_path / "big.zip", padding)
    reasons = {**REFUSALS, "oversize": "over the adapter limit"}
    for case, path in cases.items():
        message = _app_error(lambda: client.predict("bad", None, handle_file(str(path)), "", "",
                                                    api_name="/add_adapter"))
        assert reasons[case] in message and "\n" not in message and str(folder) not in message, (case, message)
    assert sorted(p.name for p in (folder / "adapters").iterdir()) == ["plain"]  # nothing left behind
    assert _ask(client) == expected  # the session's adapter still answers as before

    client.predict("plain", api_name="/remove_adapter")
    assert not (folder / "adapters" / "plain").exists()
    chosen = client.predict(api_name="/load_variants")[0]  # the base alone again, saying how variants join
    assert chosen["value"] == [] and chosen["choices"] == [] and "No variant yet" in chosen["info"]


def test_server_folders_only_under_the_operators_roots_and_names_checked(files, served, monkeypatch):
    from playground import adapter_picker
    from playground.sessions import Session

    shared, _ = served
    state = Session()
    with pytest.raises(LoraEqError, match="allows no adapter folders"):
        adapter_picker.add_adapter(shared, "f", None, None, str(files["adapter"]), "", state)
    monkeypatch.setenv("LORAEQ_ADAPTER_ROOTS", str(files["adapter"].parent / "bad"))
    with pytest.raises(LoraEqError, match="not under a folder"):
        adapter_picker.add_adapter(shared, "f", None, None, str(files["adapter"]), "", state)
    monkeypatch.setenv("LORAEQ_ADAPTER_ROOTS", str(files["adapter"].parent))
    adapter_picker.add_adapter(shared, "f", None, None, str(files["adapter"]), "", state)
    assert list(state.adapters) == ["f"] and Path(state.adapters["f"]).parent == shared.area.folder(state) / "adapters"
    small = dataclasses.replace(shared, limits=dataclasses.replace(shared.limits, session_bytes=1000))
    with pytest.raises(LoraEqError, match="over the limit of 1,000"):
        adapter_picker.add_adapter(small, "g", None, None, str(files["adapter"]), "", state)
    assert list(state.adapters) == ["f"] and not (shared.area.folder(state) / "adapters" / "g").exists()
    for bad_name in ("base", "f", "../x"):
        with pytest.raises(LoraEqError, match="adapter name"):
            adapter_picker.add_adapter(shared, bad_name, None, None, str(files["adapter"]), "", state)
    with pytest.raises(LoraEqError, match="not a run name"):
        adapter_picker.add_adapter(shared, "v", "../../etc/x", None, None, "", state)


# ---- next to a run: votes, leaderboard, eval sets, export -------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(files):
    """A run of the tiny model with one finished variant ('mine', 2 steps)."""
    from adapters.data import load_dataset, split_heldout
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.runs import create_run, data_info, run_queue

    data = files["root"] / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"w{i} ?"},
                                                     {"role": "assistant", "content": f"w{i + 1} w{i + 2}"}]}) + "\n"
                            for i in range(20)))
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.2, seed=0)
    run = files["root"] / "runs-cli" / "run-one"
    create_run(run, variants=[Variant("mine", "uniform", Hyper(max_steps=2, learning_rate=1e-2, batch_size=4))],
               split=split, data_info=data_info(dataset, split, str(data)), model=str(files["model"]),
               precision="fp32", bands=2)
    assert [r["status"] for r in run_queue(run)] == ["done"]
    return run


def test_an_outside_adapter_next_to_a_run_answers_gets_votes_and_runs_an_eval_set(files, tiny_run, plain_tokens,
                                                                                   capsys, tmp_path):
    code, out, err = _cli(["compare", str(tiny_run), "--adapter", f"plain={files['adapter']}",
                           "--adapter", "again=run-one/mine", "--prompt", MESSAGE, "--max-new-tokens", str(N),
                           "--json"], capsys)
    assert code == 0, err
    columns = {c["variant"]: c for c in json.loads(out)["columns"]}
    assert list(columns) == [BASE_COLUMN, "mine", "plain", "again"]
    assert columns["again"]["text"] == columns["mine"]["text"]  # the run's variant taken as a source
    code, out, _ = _cli(["compare", "--model", str(files["model"]), "--precision", "fp32", "--adapter",
                         f"plain={files['adapter']}", "--prompt", MESSAGE, "--max-new-tokens", str(N), "--json"],
                        capsys)
    assert columns["plain"]["text"] == json.loads(out)["columns"][1]["text"]  # the run's base is the same model

    code, _, err = _cli(["vote", str(tiny_run), "--prompt", MESSAGE, "--variant", "plain", "--verdict", "pass"], capsys)
    assert code == 2 and "no finished variant 'plain'" in err  # an unknown column still is refused
    assert _cli(["vote", str(tiny_run), "--prompt", MESSAGE, "--variant", "plain", "--verdict", "pass",
                 "--adapter", f"plain={files['adapter']}"], capsys)[0] == 0
    code, out, _ = _cli(["leaderboard", str(tiny_run), "--json"], capsys)
    board = json.loads(out)["leaderboard"]
    assert [(r["variant"], r["votes"], r["passes"]) for r in board] == [("plain", 1, 1)]
    assert board[0]["fingerprint"].startswith("outside-")

    evalset = tmp_path / "set.jsonl"
    evalset.write_text("".join(json.dumps({"prompt": p, "assert": [{"type": "not-contains", "value": "zzz"}]}) + "\n"
                               for p in ("w1 ?", "w2 w3 ?")))
    code, out, err = _cli(["evalset", str(tiny_run), "--set", str(evalset), "--columns", "plain",
                           "--adapter", f"plain={files['adapter']}", "--max-new-tokens", "4", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert [c["name"] for c in summary["columns"]] == [BASE_COLUMN, "plain"] and summary["cells"] == 4

    code, _, err = _cli(["compare", str(tiny_run), "--adapter", f"mine={files['adapter']}", "--prompt", MESSAGE],
                        capsys)
    assert code == 2 and "already a variant of this run" in err


def test_an_outside_adapter_exports_as_a_zip_and_merged(files, plain_tokens, capsys, tmp_path):
    from transformers import AutoModelForCausalLM

    code, out, err = _cli(["export", str(files["adapter"]), "--adapter", "--out", str(tmp_path / "a.zip"), "--json"],
                          capsys)
    assert code == 0, err
    with zipfile.ZipFile(tmp_path / "a.zip") as z:
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(z.namelist())
        card = z.read("README.md").decode()
    assert "not trained by it" in card and "rank_pattern" in card
    code, _, err = _cli(["export", str(files["adapter"]), "--merged", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "name the base" in err
    code, _, err = _cli(["export", str(files["adapter"]), "--merged", "--base", str(files["model"]),
                         "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    from adapters.base.loading import load_model

    tokenizer = load_model(str(files["model"]), "fp32").tokenizer
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    ids = torch.tensor([encode_prompt(tokenizer, [{"role": "user", "content": MESSAGE}])])
    tokens = merged.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=len(plain_tokens["plain"]), do_sample=False, eos_token_id=None,
                             pad_token_id=tokenizer.pad_token_id)[0, ids.shape[1]:]
    assert tokens.tolist() == plain_tokens["plain"]


def test_the_app_offers_added_adapters_to_eval_sets_and_export(files, served, monkeypatch):
    from playground import adapter_picker, tab_evalsets, tab_export
    from playground.sessions import Session

    shared, _ = served
    state = Session()
    monkeypatch.setenv("LORAEQ_ADAPTER_ROOTS", str(files["adapter"].parent))
    adapter_picker.add_adapter(shared, "plain", None, None, str(files["adapter"]), "", state)
    assert tab_export.finished_variants(shared, state) == ["plain"]
    path, card = tab_export.export_zip(shared, "plain", False, state)
    assert Path(path).is_file() and "not trained by it" in card
    with pytest.raises(LoraEqError, match="not a finished variant"):
        tab_export.export_zip(shared, "../plain", False, state)
    argv = tab_evalsets.job_argv(Path("RUN"), "set.jsonl", ["plain"], 8, False, None, state.adapters)
    assert argv[argv.index("--adapter") + 1] == f"plain={state.adapters['plain']}"
    assert "--adapter" not in tab_evalsets.job_argv(Path("RUN"), "s", ["mine"], 8, False, None, state.adapters)


def test_columns_side_by_side_fit_the_width_and_wrap():
    from loraeq.chat import render_turn

    text = render_turn(["base", "tone"], ["one two three four five six seven eight", "short"], "side", 40)
    lines = text.splitlines()
    assert lines[0].startswith("base") and " | tone" in lines[0]
    assert all(len(line) <= 40 for line in lines) and len(lines) > 3  # the long answer wrapped
    assert "one two" in text and "eight" in text and "short" in text
    stacked = render_turn(["base", "tone"], ["a", "b"], "auto", 40)  # too narrow for two: one after another
    assert stacked == "== base\na\n\n== tone\nb"


def test_in_a_session_with_a_run_an_added_adapter_answers_takes_votes_and_is_offered_everywhere(files, tiny_run,
                                                                                                 served, monkeypatch):
    from playground import adapter_picker, tab_compare, tab_evalsets, tab_export
    from playground.sessions import Session

    shared, _ = served
    state = Session()
    state.run = "run-20260101-000000-abcdef"
    shutil.copytree(tiny_run, shared.area.folder(state) / state.run)
    monkeypatch.setenv("LORAEQ_ADAPTER_ROOTS", str(files["adapter"].parent))
    with pytest.raises(LoraEqError, match="already used"):
        adapter_picker.add_adapter(shared, "mine", None, None, str(files["adapter"]), "", state)
    adapter_picker.add_adapter(shared, "plain", None, None, str(files["adapter"]), "", state)
    adapter_picker.add_adapter(shared, "again", f"{state.run}/mine", None, None, "", state)
    assert adapter_picker.variant_choices(shared, state) == [f"{state.run}/mine"]

    chosen = tab_compare.load_variants(shared, state)[0]
    assert [c[0] for c in chosen.choices] == ["mine", "plain", "again"]
    *_, last = tab_compare.ask(shared, MESSAGE, "", ["mine", "plain", "again"], 0.0, 1.0, N, 0, None, None, "",
                               state)
    texts = {label: reply.text for label, reply in state.chat.last.replies.items()}
    assert texts["again"] == texts["mine"] != texts["plain"]
    board, _ = tab_compare.vote(shared, 2, "pass", "", state)
    assert list(board["variant"]) == ["plain"] and board["fingerprint"][0].startswith("outside-")

    assert [c[0] for c in tab_evalsets.choices(shared, state)[0].choices] == ["mine", "plain", "again"]
    assert tab_export.finished_variants(shared, state) == ["mine", "plain", "again"]
    adapter_picker.remove_adapter(shared, "again", state)
    assert list(state.adapters) == ["plain"]

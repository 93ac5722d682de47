"""The side-by-side engine: batched mixed-adapter answers, streaming, seeds, live equalizer, scores, CLI.

Unit tests train two variants of a tiny seeded Llama (a few steps, high learning rate, so they
answer differently from the base) and check every batched answer against the same column asked
alone and against plain PEFT `set_adapter` + `generate`. Integration tests do the same on the
real SmolLM2-135M in fp32 and NF4 with adapters whose B factors are random (non-zero).
"""

from __future__ import annotations

import json
import threading

import pytest
import torch
from conftest import fast_path, write_chats

from adapters.base.loading import load_model
from adapters.base.tokenize import encode_prompt
from adapters.errors import LoraEqError
from adapters.fastpath import FUSED_ROUTER
from adapters.infer.decoding import Sampling, pick
from adapters.infer.engine import BASE_COLUMN, Column, CompareEngine, run_variants
from adapters.shape.equalizer import Equalizer

GREEDY = Sampling(max_new_tokens=10)
MESSAGE = "w1 w2 ?"


def _write_data(path, n=48):
    return write_chats(path, ((f"w{i % 30} w{(i * 7) % 30} ?", " ".join(f"w{(i % 4) * 10 + k}" for k in range(8)), {})
                              for i in range(n)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run of a tiny Llama with two finished variants: uniform (rank 8 everywhere) and early
    (rank 8 in layer 0, rank 1 in layer 1, so a batch mixes ranks)."""
    from conftest import write_tiny_model

    from adapters.data import load_dataset, split_heldout
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.runs import create_run, data_info, run_queue

    root = tmp_path_factory.mktemp("engine")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAEQ_CACHE", str(root / "cache"))
        model_dir = write_tiny_model(root / "tiny-llama")
        data = _write_data(root / "data.jsonl")
        dataset = load_dataset(data)
        split = split_heldout(dataset, fraction=0.2, seed=0)
        hyper = Hyper(max_steps=8, learning_rate=1e-2, batch_size=4)
        run = root / "run"
        create_run(run, variants=[Variant("uniform", "uniform", hyper), Variant("early", "early", hyper)], split=split,
                   data_info=data_info(dataset, split, str(data)), model=str(model_dir), precision="fp32", bands=2)
        assert [r["status"] for r in run_queue(run)] == ["done", "done"]
        yield run


@pytest.fixture(scope="module")
def engine(tiny_run):
    eng = CompareEngine.from_run(tiny_run)
    yield eng
    eng.close()


def _plain_peft_greedy(base, folders: dict, conversations: dict, stop_ids, n) -> dict[str, list[int]]:
    """The classic way: one PeftModel with every adapter, then per column `set_adapter` (or
    `disable_adapter` for the base) and `generate` with batch size 1. `base` must be fresh."""
    from peft import PeftModel

    model = None
    for name, folder in folders.items():
        if model is None:
            model = PeftModel.from_pretrained(base.model, folder, adapter_name=name)
        else:
            model.load_adapter(folder, adapter_name=name)
    out = {}
    for label, conversation in conversations.items():
        ids = torch.tensor([encode_prompt(base.tokenizer, conversation)])
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                      eos_token_id=sorted(stop_ids), pad_token_id=base.tokenizer.pad_token_id)
        if label == BASE_COLUMN:
            with model.disable_adapter():
                tokens = model.generate(**kwargs)[0, ids.shape[1]:].tolist()
        else:
            model.set_adapter(label)
            tokens = model.generate(**kwargs)[0, ids.shape[1]:].tolist()
        out[label] = tokens[:-1] if tokens and tokens[-1] in stop_ids else tokens
    model.unload()
    return out


def _ids(answers) -> dict[str, list[int]]:
    return {a.label: a.token_ids for a in answers}


# ---- batched == alone == plain PEFT generate ------------------------------------------------------


def test_batched_greedy_is_token_identical_to_each_column_alone_and_to_plain_generate(engine, tiny_run):
    # Different histories per column: the prompts have different lengths, so the batch is left-padded.
    history = {"uniform": [{"role": "user", "content": "w3 ?"}, {"role": "assistant", "content": "w4 w5"}]}
    batched = engine.answer(MESSAGE, history=history, sampling=GREEDY)
    assert [a.label for a in batched] == [BASE_COLUMN, "uniform", "early"]
    alone = [engine.answer(MESSAGE, [a.label], history=history, sampling=GREEDY)[0] for a in batched]
    assert _ids(batched) == _ids(alone)

    base = load_model(str(json.loads((tiny_run / "run.json").read_text())["model"]), "fp32")
    conversations = {a.label: history.get(a.label, []) + [{"role": "user", "content": MESSAGE}] for a in batched}
    plain = _plain_peft_greedy(base, run_variants(tiny_run), conversations, engine.stop_ids, GREEDY.max_new_tokens)
    assert _ids(batched) == plain
    # Not vacuous: the trained variants answer differently from the base and from each other.
    ids = _ids(batched)
    assert ids["uniform"] != ids[BASE_COLUMN] and ids["early"] != ids[BASE_COLUMN] and ids["uniform"] != ids["early"]


def test_left_padding_keeps_absolute_positions_on_a_gpt2_with_conv1d_lora(tmp_path):
    # GPT-2 adds learned absolute position embeddings (Llama's rotary ones hide a shifted position)
    # and its LoRA sits on Conv1D weights (fan_in_fan_out).
    from conftest import tiny_causal_lm, tiny_tokenizer

    folder = tmp_path / "tiny-gpt2"
    tiny_causal_lm("gpt2").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    base = load_model(str(folder), "fp32")
    adapters = _random_adapters(base, tmp_path, ["uniform", "mlp"], std=0.3)
    gpt2 = CompareEngine(base, adapters)
    try:
        history = {
            "uniform": [{"role": "user", "content": "w3 w4 w5 ?"}, {"role": "assistant", "content": "w6 w7 w8 w9"}],
            "mlp": [{"role": "user", "content": "w9 ?"}],
        }
        batched = _ids(gpt2.answer(MESSAGE, history=history, sampling=GREEDY))
        alone = {c: _ids(gpt2.answer(MESSAGE, [c], history=history, sampling=GREEDY))[c] for c in batched}
        assert batched == alone
        conversations = {c: history.get(c, []) + [{"role": "user", "content": MESSAGE}] for c in batched}
        fresh = load_model(str(folder), "fp32")
        plain = _plain_peft_greedy(fresh, adapters, conversations, gpt2.stop_ids, GREEDY.max_new_tokens)
        assert batched == plain
        assert len({tuple(v) for v in batched.values()}) == 3
    finally:
        gpt2.close()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "nf4"])
@fast_path(FUSED_ROUTER)
def test_fused_update_is_bit_identical_to_peft_one_adapter_forward(precision, tmp_path):
    """Layer by layer, each row of a fused batch equals PEFT's own `set_adapter` forward of that row,
    including the bf16 / NF4 casts (PEFT's own mixed batches do not manage that in bf16). A rank
    padded with zeros (early: rank 1 in layer 1 next to rank 8) is only required to be close."""
    from conftest import tiny_causal_lm, tiny_tokenizer
    from peft import PeftModel

    from adapters.infer.adapter_rows import gather_rows
    from adapters.shape.live_eq import lora_layers

    folder = tmp_path / "tiny"
    tiny_causal_lm("llama", hidden_size=128, intermediate_size=256).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    base = load_model(str(folder), precision)
    adapters = _random_adapters(base, tmp_path, ["uniform", "attention", "early"])
    model = PeftModel.from_pretrained(base.model, adapters["uniform"], adapter_name="uniform")
    model.load_adapter(adapters["attention"], adapter_name="attention")
    model.load_adapter(adapters["early"], adapter_name="early")
    model.eval()
    dtype = next(p.dtype for n, p in model.named_parameters() if "norm" in n)
    generator = torch.Generator().manual_seed(0)
    rows = ["uniform", "attention", "early", "__base__"]
    checked = padded = single = folded = 0
    with torch.no_grad():
        for name, layer in lora_layers(model):
            x = torch.randn((len(rows), 8, layer.in_features), generator=generator).to(dtype)
            # The base layer's result per row, as a batch of one: on some CPUs a matmul's sums run in
            # another order for another batch shape, which is torch's doing; the update is checked here.
            layer.enable_adapters(False)
            row_base = torch.cat([layer(x[j: j + 1]) for j in range(len(rows))])
            layer.enable_adapters(True)
            stacked = gather_rows(layer, rows, [None] * len(rows))
            folded += stacked.folded  # alpha / r = 2 multiplied into B: still every bit the same
            fused = stacked.add_update(x, row_base)
            assert fused.dtype == dtype and torch.equal(fused[3:], row_base[3:])
            for i, adapter in enumerate(rows[:3]):
                model.set_adapter(adapter)
                alone = layer(x[i: i + 1])
                if adapter in layer.lora_A and layer.r[adapter] < max(layer.r[a] for a in rows[:3] if a in layer.r):
                    torch.testing.assert_close(fused[i: i + 1], alone)
                    padded += 1
                else:
                    assert torch.equal(fused[i: i + 1], alone), (name, adapter)
                    checked += 1
            layer.enable_adapters(False)
            pair_base = layer(x[:2])
            layer.enable_adapters(True)
            for adapter in [a for a in rows[:3] if a in layer.lora_A]:
                # Every row the same adapter: PEFT's own two linear maps over the whole batch.
                same = gather_rows(layer, [adapter] * 2, [None, None])
                model.set_adapter(adapter)
                assert same.single is not None and torch.equal(same.add_update(x[:2], pair_base), layer(x[:2]))
                single += 1
    assert (checked, padded) == (3 * 14 - 7, 7)  # early's 7 rank-1 layers are the padded ones
    assert folded > 0
    assert single == sum(len(layer.lora_A) for _, layer in lora_layers(model)) > 14
    model.unload()


@fast_path(FUSED_ROUTER)
def test_peft_adapter_names_backend_gives_the_same_tokens_and_resets_its_scaled_copies(engine, tiny_run):
    peft_engine = CompareEngine.from_run(tiny_run, backend="peft")
    try:
        assert peft_engine.backend == "peft" and engine.backend == "fused"
        unit = engine.unit_grid("uniform")
        columns = [BASE_COLUMN, "uniform", "early", Column("uniform", live_eq=Equalizer.uniform(unit.roles, unit.bands, 0.5)),
                   Column("uniform", live_eq=unit.with_cell(0, unit.roles[0], 2.0), name="uniform@q0")]
        before = _scalings(peft_engine)
        peft_ids = _ids(peft_engine.answer(MESSAGE, columns, sampling=GREEDY))
        assert peft_ids == _ids(engine.answer(MESSAGE, columns, sampling=GREEDY))
        assert len(peft_engine._variants["uniform"].views) == 2  # one private copy per scaled column
        after = _scalings(peft_engine)
        assert {k: v for k, v in after.items() if k in before} == before
        trained = {k[0]: v for k, v in after.items() if k[1] == peft_engine._variants["uniform"].key}
        for copy in peft_engine._variants["uniform"].views:  # the copies are back at the trained scaling
            assert {k[0]: v for k, v in after.items() if k[1] == copy} == trained
    finally:
        peft_engine.close()


def test_rows_that_stop_leave_the_batch_and_the_others_go_on_unchanged(engine):
    full = _ids(engine.answer(MESSAGE, sampling=GREEDY))
    stop = full[BASE_COLUMN][2]  # the base's third token becomes an end-of-turn token
    saved = set(engine.stop_ids)
    engine.stop_ids = saved | {stop}
    try:
        batched = engine.answer(MESSAGE, sampling=GREEDY)
        alone = [engine.answer(MESSAGE, [a.label], sampling=GREEDY)[0] for a in batched]
    finally:
        engine.stop_ids = saved
    by_label = {a.label: a for a in batched}
    assert by_label[BASE_COLUMN].finish_reason == "stop" and by_label[BASE_COLUMN].token_ids == full[BASE_COLUMN][:2]
    assert stop not in sum((a.token_ids for a in batched), [])  # the stop token is not part of any answer
    assert max(a.tokens for a in batched) > 2  # some row kept going after the base left the batch
    assert _ids(batched) == _ids(alone)


def test_max_new_tokens_ends_an_answer_with_reason_length(engine):
    answers = engine.answer(MESSAGE, [BASE_COLUMN], sampling=Sampling(max_new_tokens=3))
    assert answers[0].finish_reason == "length" and answers[0].tokens == 3


# ---- sampling: one seed per column -----------------------------------------------------------------


def test_sampling_is_reproducible_per_column_and_does_not_depend_on_the_other_columns(engine):
    sampling = Sampling(max_new_tokens=10, temperature=1.5, top_p=0.95, seed=7)
    first = engine.answer(MESSAGE, sampling=sampling)
    again = engine.answer(MESSAGE, sampling=sampling)
    assert _ids(first) == _ids(again)
    alone = engine.answer(MESSAGE, ["early"], sampling=sampling)[0]
    assert alone.token_ids == _ids(first)["early"] and alone.seed == first[2].seed
    assert len({a.seed for a in first}) == 3  # each column its own seed
    other = engine.answer(MESSAGE, sampling=Sampling(max_new_tokens=10, temperature=1.5, top_p=0.95, seed=8))
    assert _ids(other) != _ids(first)
    greedy = _ids(engine.answer(MESSAGE, sampling=GREEDY))
    assert _ids(first) != greedy  # sampling really sampled


def test_an_explicit_column_seed_is_used(engine):
    sampling = Sampling(max_new_tokens=8, temperature=1.5, seed=0)
    columns = [Column("uniform", seed=5, name="one"), Column("uniform", seed=5, name="two"),
               Column("uniform", seed=6, name="three")]
    one, two, three = engine.answer(MESSAGE, columns, sampling=sampling)
    assert one.seed == two.seed == 5 and three.seed == 6
    assert one.token_ids == two.token_ids != three.token_ids


def test_top_p_keeps_only_the_nucleus():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    nucleus = Sampling(temperature=1.0, top_p=0.6)
    assert {pick(logits, nucleus, torch.Generator().manual_seed(s)) for s in range(50)} == {0}
    wide = Sampling(temperature=1.0, top_p=1.0)
    assert {pick(logits, wide, torch.Generator().manual_seed(s)) for s in range(200)} == {0, 1, 2}
    two = Sampling(temperature=1.0, top_p=0.8)
    assert {pick(logits, two, torch.Generator().manual_seed(s)) for s in range(200)} == {0, 1}


# ---- streaming -------------------------------------------------------------------------------------


def test_stream_yields_each_columns_text_as_it_comes_and_adds_up_to_the_answers(engine):
    stream = engine.stream(MESSAGE, sampling=GREEDY)
    with pytest.raises(LoraEqError, match="read to its end"):
        stream.answers
    deltas = list(stream)
    texts = {c.label: "" for c in stream.columns}
    order = []
    for d in deltas:
        texts[d.label] += d.text
        order.append(d.label)
    assert texts == {a.label: a.text for a in stream.answers}
    assert all(a.text for a in stream.answers)
    assert [d.label for d in deltas if d.done] and sorted(d.label for d in deltas if d.done) == sorted(texts)
    # Interleaved: every column has text before the first column finished.
    first_done = next(i for i, d in enumerate(deltas) if d.done)
    assert set(order[: first_done + 1]) == set(texts)


def test_an_abandoned_stream_releases_the_engine(engine):
    stream = iter(engine.stream(MESSAGE, sampling=GREEDY))
    next(stream)
    stream.close()  # what a web server does when the client goes away
    assert engine.answer(MESSAGE, [BASE_COLUMN], sampling=Sampling(max_new_tokens=2))[0].tokens == 2


def test_two_threads_share_one_engine(engine):
    expected = {m: _ids(engine.answer(m, sampling=GREEDY)) for m in ("w1 w2 ?", "w7 ?")}
    results, errors = {}, []

    def ask(message):
        try:
            results[message] = _ids(engine.answer(message, sampling=GREEDY))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(m,)) for m in expected]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and results == expected


# ---- live equalizer ----------------------------------------------------------------------------------


def _scalings(engine) -> dict:
    from adapters.shape.live_eq import lora_layers

    return {(name, key): value for name, m in lora_layers(engine.model) for key, value in m.scaling.items()}


def test_live_eq_all_zero_is_exactly_the_base_and_all_one_the_adapter(engine):
    unit = engine.unit_grid("early")
    assert unit.roles and all(v == 1.0 for row in unit.strengths for v in row)
    zero = Equalizer.uniform(unit.roles, unit.bands, 0.0)
    triple = Equalizer.uniform(unit.roles, unit.bands, 3.0)
    columns = [BASE_COLUMN, "early", "uniform", Column("early", live_eq=zero, name="early@0"),
               Column("early", live_eq=unit, name="early@1"), Column("uniform", live_eq=triple, name="uniform@3")]
    ids = _ids(engine.answer(MESSAGE, columns, sampling=GREEDY))
    assert ids["early@0"] == ids[BASE_COLUMN] != ids["early"]
    assert ids["early@1"] == ids["early"]
    assert ids["uniform@3"] != ids["uniform"]  # the multiplier really reaches the layers
    alone = engine.answer(MESSAGE, ["early", "uniform"], sampling=GREEDY)
    assert _ids(alone) == {"early": ids["early"], "uniform": ids["uniform"]}  # scaled copies leave them untouched


def test_adapter_scales_change_only_the_cells_layers_never_compound_and_reset_exactly(engine):
    from adapters.shape.live_eq import LiveEqWriter, LiveEqCells, lora_layers

    before = _scalings(engine)
    unit = engine.unit_grid("uniform")
    grid = unit.with_cell(1, unit.roles[0], 0.25)
    engine.answer(MESSAGE, [Column("uniform", live_eq=grid)], sampling=Sampling(max_new_tokens=2))
    assert _scalings(engine) == before  # the fused path scales its rows, never the model

    scales = LiveEqWriter(LiveEqCells(engine.model, engine.tmap))
    key = engine._variants["uniform"].key
    try:
        assert scales.apply(key, grid) == len([1 for _, m in lora_layers(engine.model) if key in m.scaling]) > 0
        scales.apply(key, grid)  # applying twice does not compound
        changed = 0
        for name, module in lora_layers(engine.model):
            if key not in module.scaling:
                continue
            trained = before[(name, key)]
            in_cell = name.startswith("model.layers.1.") and name.endswith(unit.roles[0])
            assert module.scaling[key] == (trained * 0.25 if in_cell else trained), name
            changed += in_cell
        assert changed == 1
    finally:
        scales.reset(key)
    assert _scalings(engine) == before
    with pytest.raises(LoraEqError, match="not loaded"):
        scales.apply("nope", grid)


def test_scale_grids_are_checked(engine):
    unit = engine.unit_grid("uniform")
    with pytest.raises(LoraEqError, match="covers 1 layers"):
        engine.answer(MESSAGE, [Column("uniform", live_eq=Equalizer.uniform(unit.roles, [[0]], 1.0))])
    with pytest.raises(LoraEqError, match="no such roles"):
        engine.answer(MESSAGE, [Column("uniform", live_eq=Equalizer.uniform(["nope"], unit.bands, 1.0))])
    with pytest.raises(LoraEqError, match="no adapter to scale"):
        Column(BASE_COLUMN, live_eq=unit)


# ---- loading, errors, close ------------------------------------------------------------------------


def test_bad_requests_name_the_bad_value(engine, tiny_run):
    with pytest.raises(LoraEqError, match="'missing'"):
        CompareEngine.from_run(tiny_run, variants=["missing"])
    with pytest.raises(LoraEqError, match="'nope'"):
        engine.answer(MESSAGE, ["nope"])
    with pytest.raises(LoraEqError, match="each column needs its own label"):
        engine.answer(MESSAGE, ["uniform", "uniform"])
    with pytest.raises(LoraEqError, match="top_p=0"):
        Sampling(top_p=0)
    with pytest.raises(LoraEqError, match="temperature=-1"):
        Sampling(temperature=-1)
    with pytest.raises(LoraEqError, match="max_new_tokens=0"):
        Sampling(max_new_tokens=0)
    with pytest.raises(LoraEqError, match="message is empty"):
        engine.answer("  ")
    with pytest.raises(LoraEqError, match="not a LoRA EQ run"):
        CompareEngine.from_run(tiny_run / "data")
    with pytest.raises(LoraEqError, match="reads at most 128"):
        engine.answer(MESSAGE, sampling=Sampling(max_new_tokens=200))
    assert engine.answer(MESSAGE, [BASE_COLUMN], sampling=Sampling(max_new_tokens=2))[0].tokens == 2  # still usable


def test_only_the_chosen_variants_are_loaded_and_close_gives_the_base_back(tiny_run):
    from peft.tuners.lora import LoraLayer

    alone = CompareEngine.from_run(tiny_run, variants=[])  # the base by itself works too
    assert alone.variants == [] and alone.answer(MESSAGE, sampling=GREEDY)[0].tokens > 0
    alone.close()
    eng = CompareEngine.from_run(tiny_run, variants=["early"])
    assert eng.variants == ["early"] and [c.label for c in eng.columns()] == [BASE_COLUMN, "early"]
    untouched = load_model(str(eng.base.folder), "fp32").model.state_dict()
    eng.close()
    assert not any(isinstance(m, LoraLayer) for m in eng.base.model.modules())
    restored = eng.base.model.state_dict()
    assert restored.keys() == untouched.keys() and all(torch.equal(restored[k], untouched[k]) for k in restored)


def test_the_kv_cache_goes_by_the_keyword_the_models_forward_takes():
    from adapters.infer.adapter_rows import cache_keyword

    class Renamed(torch.nn.Module):  # transformers releases that renamed it
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return None

    class Before(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    assert cache_keyword(Renamed()) == "cache" and cache_keyword(Before()) == "past_key_values"


# ---- scores and the CLI -----------------------------------------------------------------------------


def test_compare_scores_every_column_with_the_real_embedder(engine):
    from evals.scores import compare

    base_text = engine.answer(MESSAGE, [BASE_COLUMN], sampling=GREEDY)[0].text
    unit = engine.unit_grid("uniform")
    zero = Column("uniform", live_eq=Equalizer.uniform(unit.roles, unit.bands, 0.0))
    result = compare(engine, MESSAGE, reference=base_text, columns=[BASE_COLUMN, "uniform", zero], sampling=GREEDY)
    cols = {c.variant: c for c in result.columns}
    assert cols[BASE_COLUMN].similarity_base is None and cols[BASE_COLUMN].similarity_reference == pytest.approx(1.0, abs=1e-5)
    assert cols["uniform@eq"].text == base_text and cols["uniform@eq"].similarity_base == pytest.approx(1.0, abs=1e-5)
    assert cols["uniform"].similarity_base < 0.999 and -1 <= cols["uniform"].similarity_reference < 0.999
    assert cols["uniform@eq"].settings["live_eq"]["strengths"][0][0] == 0.0
    assert all(c.tokens > 0 and c.seconds > 0 for c in result.columns)


@fast_path(FUSED_ROUTER)
def test_cli_compare_vote_and_leaderboard(tiny_run, capsys, tmp_path):
    from loraeq.main import main

    code = main(["compare", str(tiny_run), "--prompt", MESSAGE, "--reference", "w1 w2", "--variants", "uniform",
                 "--scale", "uniform=0", "--max-new-tokens", "6", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    columns = out["columns"]
    assert [c["variant"] for c in columns] == [BASE_COLUMN, "uniform", "uniform@eq"]
    for c in columns:
        assert {"variant", "text", "similarity_reference", "similarity_base", "tokens", "seconds"} <= set(c)
    assert columns[2]["text"] == columns[0]["text"] != columns[1]["text"]
    assert out["precision"] == "fp32" and out["backend"] == "fused"

    settings = json.dumps(columns[1]["settings"])
    for verdict in ("pass", "pass", "fail"):
        assert main(["vote", str(tiny_run), "--prompt", MESSAGE, "--variant", "uniform", "--verdict", verdict,
                     "--settings", settings, "--similarity-base", str(columns[1]["similarity_base"]), "--json"]) == 0
    assert main(["vote", str(tiny_run), "--prompt", MESSAGE, "--variant", "base", "--verdict", "fail", "--json"]) == 0
    capsys.readouterr()
    csv_path = tmp_path / "board.csv"
    assert main(["leaderboard", str(tiny_run), "--csv", str(csv_path), "--json"]) == 0
    board = json.loads(capsys.readouterr().out)["leaderboard"]
    assert [(r["variant"], r["votes"], r["passes"]) for r in board] == [("uniform", 3, 2), (BASE_COLUMN, 1, 0)]
    assert csv_path.read_text().splitlines()[0].startswith("variant,fingerprint,votes")
    assert main(["vote", str(tiny_run), "--prompt", MESSAGE, "--variant", "ghost", "--verdict", "pass"]) == 2
    assert "ghost" in capsys.readouterr().err


def test_a_vote_on_one_answer_from_the_web_app_and_from_loraeq_vote_is_one_key_and_one_row(engine, tiny_run, capsys,
                                                                                          tmp_path):
    import shutil

    from evals.votes import VoteStore, answer_settings
    from loraeq.main import main

    run = shutil.copytree(tiny_run, tmp_path / "run", ignore=shutil.ignore_patterns("votes.sqlite*"))
    flags = ["--max-new-tokens", "6", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3"]
    assert main(["compare", str(run), "--prompt", MESSAGE, "--variants", "uniform", "--scale", "uniform=0.5",
                 *flags, "--json"]) == 0
    cli_columns = json.loads(capsys.readouterr().out)["columns"]
    # The Compare tab: the engine's stream, then one answer_settings call per answer.
    sampling = Sampling(max_new_tokens=6, temperature=0.8, top_p=0.9, seed=3)
    unit = engine.unit_grid("uniform")
    stream = engine.stream(MESSAGE, [Column(BASE_COLUMN), Column("uniform"),
                                     Column("uniform", live_eq=Equalizer.uniform(unit.roles, unit.bands, 0.5))],
                           sampling=sampling)
    for _ in stream:
        pass
    store = VoteStore(run)
    for answer, column in zip(stream.answers, cli_columns):
        assert (answer.label, answer.text) == (column["variant"], column["text"])
        store.cast(MESSAGE, answer.label, "fail", voter="ana",
                   settings=answer_settings(sampling, seed=answer.seed, live_eq=answer.live_eq))
        assert main(["vote", str(run), "--prompt", MESSAGE, "--variant", column["variant"], "--verdict", "pass",
                     "--settings", json.dumps(column["settings"]), "--voter", "ana", "--json"]) == 0
    votes = store.votes()
    assert [(v.variant, v.verdict) for v in votes] == [(BASE_COLUMN, "pass"), ("uniform", "pass"), ("uniform@eq", "pass")]
    assert votes[2].settings["live_eq"]["strengths"][0][0] == 0.5 and votes[1].settings["seed"] is not None


# ---- the real model ---------------------------------------------------------------------------------


def _random_adapters(base, root, presets, std=0.05) -> dict:
    """PEFT adapters shaped by equalizer presets, with random non-zero B (A is PEFT's seeded init)."""
    from peft import get_peft_model

    from adapters.base.analysis import tuning_map
    from adapters.base.bands import layer_bands
    from adapters.shape.equalizer import compile_lora_config, preset

    tmap = tuning_map(base.model)
    folders = {}
    for i, name in enumerate(presets):
        eq = preset(name, tmap, layer_bands(tmap.layers, 4))
        torch.manual_seed(i)
        peft_model = get_peft_model(base.model, compile_lora_config(eq, tmap, rank=8, alpha=16, dropout=0.0))
        generator = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.copy_(torch.randn(param.shape, generator=generator) * std)
        peft_model.save_pretrained(root / name)
        peft_model.unload()
        (root / name / "variant.json").write_text(json.dumps({"name": name, "equalizer_grid": eq.to_json()}))
        folders[name] = root / name
    return folders


@pytest.mark.integration
@pytest.mark.parametrize("precision", ["fp32", "nf4"])
@fast_path(FUSED_ROUTER)
def test_real_model_batched_greedy_equals_plain_generate_and_live_eq_bounds(precision, tmp_path):
    base = load_model(None, precision)
    folders = _random_adapters(base, tmp_path, ["uniform", "attention"])
    engine = CompareEngine(base, folders)
    try:
        unit = engine.unit_grid("uniform")
        zero = Equalizer.uniform(unit.roles, unit.bands, 0.0)
        columns = [BASE_COLUMN, "uniform", "attention", Column("uniform", live_eq=zero, name="uniform@0"),
                   Column("uniform", live_eq=unit, name="uniform@1")]
        message = "Write one sentence about autumn."
        sampling = Sampling(max_new_tokens=16)
        answers = _ids(engine.answer(message, columns, sampling=sampling))
        conversation = [{"role": "user", "content": message}]
        plain = _plain_peft_greedy(load_model(None, precision), folders, {k: conversation for k in (BASE_COLUMN, *folders)},
                                   engine.stop_ids, sampling.max_new_tokens)
        assert {k: answers[k] for k in plain} == plain
        assert answers["uniform"] != answers[BASE_COLUMN] and answers["attention"] != answers[BASE_COLUMN]
        assert answers["uniform@0"] == answers[BASE_COLUMN] and answers["uniform@1"] == answers["uniform"]
        assert engine.backend == "fused"
        again = _ids(engine.answer(message, [BASE_COLUMN, "uniform"], sampling=sampling))  # nothing drifted in between
        assert again == {BASE_COLUMN: answers[BASE_COLUMN], "uniform": answers["uniform"]}
    finally:
        engine.close()

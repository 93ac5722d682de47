"""Encoders: tiny seeded BERT, RoBERTa and DeBERTa-v2 models built here; the grid, the SEQ_CLS
config, a 5-step linear probe and LoRA variants with the encoder bit-identical after, predictions
per column, the classification data rules, the proof rules, and clear errors (CLI exit 2)."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest
import torch

from adapters.errors import LoraEqError
from loraeq.main import main

FAMILIES = ("bert", "roberta", "deberta-v2")
WORDS = [f"w{i}" for i in range(100)]


def write_tiny_encoder(folder, model_type: str = "bert", seed: int = 0):
    """A tiny seeded encoder (safetensors, no head) and a BERT word-piece tokenizer, as a user has it."""
    from transformers import AutoConfig, AutoModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    special = dict(pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2, eos_token_id=3)
    extra = special if model_type == "modernbert" else {"type_vocab_size": 2}
    config = AutoConfig.for_model(model_type, vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=64, **extra)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    return folder


def write_rows(path, n: int = 60, labels=("a", "b", "c"), seed: int = 0):
    """Rows whose first word says the label (w1 -> a, w2 -> b, ...), the rest random words."""
    rng = random.Random(seed)
    rows = [{"text": " ".join([f"w{1 + i % len(labels)}"] + [f"w{rng.randint(10, 99)}" for _ in range(5)]),
             "label": labels[i % len(labels)]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.iterdir()):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def start(run_dir, data, model, variants=None, **spec):
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.dataspec import DataSpec, start_run

    hyper = Hyper(max_steps=5, learning_rate=1e-2, batch_size=8)
    variants = variants or [Variant("uniform", "uniform", hyper), Variant("attn", "attention", hyper)]
    spec = DataSpec(str(data), task="classification", heldout=spec.pop("heldout", 0.25), **spec)
    return start_run(run_dir, spec, variants, model=str(model), precision="fp32")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny BERT classification run: probe + 2 LoRA variants, 5 steps each."""
    from adapters.train.classify import run_classification

    root = tmp_path_factory.mktemp("enc-run")
    model = write_tiny_encoder(root / "bert")
    start(root / "run", write_rows(root / "rows.jsonl"), model)
    results = run_classification(root / "run")
    return root / "run", model, results


# ---- models: kind, grid, config ---------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_grid_and_seq_cls_config(family, tmp_path):
    from adapters.base.analysis import tuning_map
    from adapters.base.bands import layer_bands
    from adapters.base.encoder import load_encoder
    from adapters.base.loading import ENCODER_KIND, model_kind
    from adapters.shape.equalizer import preset
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.classify import lora_config

    folder = write_tiny_encoder(tmp_path / family, family)
    assert model_kind(folder) == ENCODER_KIND
    base = load_encoder(str(folder), "fp32", ["x", "y", "z"])
    tmap = tuning_map(base.model)
    q = "query_proj" if family == "deberta-v2" else "query"
    assert tmap.layers == 2 and tmap.layers_path.endswith("encoder.layer")
    assert tmap.roles[:3] == [q, q.replace("query", "key"), q.replace("query", "value")]
    assert tmap.roles[3:] == ["dense", "intermediate.dense", "output.dense"]  # dense: attention.output.dense
    assert tmap.cell(1, "output.dense").name.endswith("encoder.layer.1.output.dense")
    eq = preset("attention", tmap, layer_bands(2, 2))
    assert [r for r, s in zip(eq.roles, eq.strengths[0]) if s] == tmap.roles[:4]  # attention.output.dense too
    _, config = lora_config(base, Variant("v", "attention", Hyper(rank=4)), bands=2)
    head = {"bert": ["classifier"], "roberta": ["classifier"], "deberta-v2": ["pooler", "classifier"]}[family]
    assert config.task_type == "SEQ_CLS" and sorted(config.modules_to_save) == sorted(head)
    assert base.model.config.id2label == {0: "x", 1: "y", 2: "z"}


def test_the_head_is_seeded_and_the_same_for_every_load(tmp_path):
    from adapters.base.encoder import load_encoder
    from adapters.train.classify import head_state

    folder = write_tiny_encoder(tmp_path / "bert")
    a, b = (head_state(load_encoder(str(folder), "fp32", ["x", "y"], seed=3).model) for _ in range(2))
    c = head_state(load_encoder(str(folder), "fp32", ["x", "y"], seed=4).model)
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("family", FAMILIES + ("modernbert",))
def test_five_steps_move_adapter_and_head_never_the_encoder(family, tmp_path):
    from safetensors.torch import load_file

    from adapters.base.encoder import head_modules, load_encoder
    from adapters.data.classes import LabeledRow
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.classify import head_state, train_lora, train_probe

    folder = write_tiny_encoder(tmp_path / family, family)
    files = digest(folder)
    base = load_encoder(str(folder), "fp32", ["a", "b", "c"])
    heads = tuple(head_modules(base.model))
    encoder = {k: v.clone() for k, v in base.model.state_dict().items() if not k.startswith(heads)}
    head = head_state(base.model)
    rng = random.Random(0)
    data = [LabeledRow(f"w{1 + i % 3} w{rng.randint(10, 99)}", "abc"[i % 3]) for i in range(24)]
    hyper = Hyper(max_steps=5, learning_rate=1e-2, batch_size=4, rank=4)
    lora = train_lora(base, Variant("v", "uniform", hyper), data, ["a", "b", "c"], tmp_path / "v")
    assert lora.steps == 5 and (tmp_path / "v" / "adapter_model.safetensors").is_file()
    saved = load_file(str(tmp_path / "v" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in saved.items())  # B starts at 0: it moved
    trained_head = {k: v for k, v in saved.items() if any(f"{h}." in k for h in heads)}
    assert trained_head, "the head is saved with the adapter (modules_to_save)"
    probe = train_probe(base, data, ["a", "b", "c"], hyper, tmp_path / "p")
    assert probe.steps == 5
    probe_head = load_file(str(tmp_path / "p" / "head.safetensors"))
    assert any(not torch.equal(probe_head[k], head[k]) for k in head)  # the probe trained its head
    after = base.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in encoder.items())  # bit-identical encoder
    assert all(torch.equal(after[k], head[k]) for k in head)  # and the seeded head back in place
    assert not any(p.requires_grad for p in base.model.parameters())
    assert digest(folder) == files  # files only read


def test_nf4_encoder_trains_with_a_full_precision_head(tmp_path):
    pytest.importorskip("bitsandbytes")
    from adapters.base.analysis import tuning_map
    from adapters.base.encoder import load_encoder
    from adapters.data.classes import LabeledRow
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.classify import train_lora

    folder = write_tiny_encoder(tmp_path / "bert")
    base = load_encoder(str(folder), "nf4", ["a", "b"], device="cpu")
    assert base.precision == "nf4"
    assert {c.kind for c in tuning_map(base.model).cells} == {"Linear4bit"}
    assert type(base.model.classifier).__name__ == "Linear"
    data = [LabeledRow(f"w{1 + i % 2} w{10 + i}", "ab"[i % 2]) for i in range(16)]
    result = train_lora(base, Variant("v", "uniform", Hyper(max_steps=5, learning_rate=1e-2, batch_size=4, rank=4)),
                        data, ["a", "b"], tmp_path / "v")
    assert result.steps == 5 and result.final_loss is not None and np.isfinite(result.final_loss)


# ---- a run: queue, predictions, proof -----------------------------------------------------------


def test_run_trains_probe_then_variants(trained_run):
    from adapters.train.runfolder import RunFolder
    from adapters.train.runs import run_status

    run_dir, _, results = trained_run
    assert [(r["name"], r["status"], r["steps"]) for r in results] == [("probe", "done", 5), ("uniform", "done", 5),
                                                                       ("attn", "done", 5)]
    run = RunFolder.open(run_dir)
    assert run.task == "classification" and run.labels == ["a", "b", "c"]
    assert run.data["split"]["categories"] == {x: {"train": 15, "heldout": 5} for x in "abc"}  # stratified
    status = run_status(run_dir)
    assert [v["name"] for v in status["variants"]] == ["probe", "uniform", "attn"]
    assert status["variants"][0]["heldout_losses"], "held-out loss is logged during training"
    record = json.loads((run_dir / "uniform" / "variant.json").read_text())
    assert record["kind"] == "lora" and record["labels"] == ["a", "b", "c"] and record["equalizer_grid"]
    config = json.loads((run_dir / "uniform" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"]


def test_classifier_columns_match_their_own_models(trained_run):
    """Each column of the shared classifier gives what its adapter alone gives (no adapter leaks into
    another column, the probe's head under disabled adapters)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from adapters.base.encoder import load_encoder
    from adapters.data.classes import LabeledRow
    from adapters.train.classify import Classifier, load_head, probabilities

    run_dir, model, _ = trained_run
    data = [LabeledRow("w1 w20 w30", "a"), LabeledRow("w3 w40", "c", "w2 w2")]
    shared = Classifier(run_dir).probabilities(data)
    alone = load_encoder(str(model), "fp32", ["a", "b", "c"])
    load_head(alone.model, load_file(str(run_dir / "probe" / "head.safetensors")))
    np.testing.assert_allclose(shared["probe"], probabilities(alone.model, alone.tokenizer, data, "cpu"), atol=1e-6)
    fresh = load_encoder(str(model), "fp32", ["a", "b", "c"])
    only = PeftModel.from_pretrained(fresh.model, str(run_dir / "attn")).eval()
    np.testing.assert_allclose(shared["attn"], probabilities(only, fresh.tokenizer, data, "cpu"), atol=1e-6)
    assert not np.allclose(shared["attn"], shared["probe"])


def test_classify_cli_json_and_unknown_label(trained_run, capsys):
    run_dir, _, _ = trained_run
    assert main(["classify", str(run_dir), "--text", "w2 w50 w60", "--label", "b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in data["columns"]] == ["probe", "uniform", "attn"]
    for c in data["columns"]:
        assert set(c) == {"name", "label", "probabilities", "correct"} and c["label"] in "abc"
        assert sum(c["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert main(["classify", str(run_dir), "--text", "w2", "--label", "zebra"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "'zebra'" in err and "(a, b, c)" in err


def test_classify_set_scores_and_refuses_an_unknown_label_row(trained_run, tmp_path, capsys):
    run_dir, _, _ = trained_run
    rows = write_rows(tmp_path / "set.jsonl", n=12)
    assert main(["classify", str(run_dir), "--set", str(rows), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rows"] == 12 and len(data["columns"]) == 3
    assert all(0 <= c["accuracy_ci"][0] <= c["accuracy"] <= c["accuracy_ci"][1] <= 1 for c in data["columns"])
    with rows.open("a") as f:
        f.write(json.dumps({"text": "w5 w6", "label": "d"}) + "\n")
    assert main(["classify", str(run_dir), "--set", str(rows)]) == 2
    assert "row 13: label 'd' is not one of the run's labels" in capsys.readouterr().err


def test_eval_writes_the_classification_proof(trained_run, capsys):
    run_dir, _, _ = trained_run
    assert main(["eval", str(run_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["task"] == "classification" and data["heldout_rows"] == 15
    assert [v["name"] for v in data["variants"]] == ["uniform", "attn"]
    for v in data["variants"]:
        assert v["verdict"] in ("learned", "worse than base", "no effect", "inconclusive")
        assert v["headline"].startswith("labels held-out rows right") and "linear probe" in v["headline"]
    assert "uniform:" in (run_dir / "report.md").read_text() and (run_dir / "report.html").is_file()


@pytest.mark.parametrize("command", [["compare", "--prompt", "hi"], ["evalset", "--set", "heldout"]])
def test_classification_run_given_to_llm_commands_exits_2(trained_run, command, capsys):
    run_dir, _, _ = trained_run
    assert main([command[0], str(run_dir), *command[1:]]) == 2
    assert "a classification run (an encoder)" in capsys.readouterr().err


def test_decoder_run_given_to_classify_exits_2(tmp_path, capsys):
    from adapters.shape.variants import Variant
    from adapters.train.dataspec import DataSpec, start_run

    start_run(tmp_path / "llm", DataSpec("datasets/fictional-facts.jsonl"), [Variant("u", "uniform")], model=None,
              precision="fp32")
    assert main(["classify", str(tmp_path / "llm"), "--text", "hello"]) == 2
    assert "a causal LM run" in capsys.readouterr().err


def test_train_cli_one_class_exits_2(tmp_path, capsys):
    model = write_tiny_encoder(tmp_path / "bert")
    data = write_rows(tmp_path / "one.jsonl", n=10, labels=("only",))
    code = main(["train", "--task", "classification", "--data", str(data), "--model", str(model), "--preset", "uniform",
                 "--out", str(tmp_path / "run"), "--precision", "fp32", "--max-steps", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "1 class ('only')" in err and not (tmp_path / "run").exists()


def test_analyze_cli_on_an_encoder(tmp_path, cache_home, capsys):
    model = write_tiny_encoder(tmp_path / "roberta", "roberta")
    assert main(["analyze", "--model", str(model), "--precision", "fp32", "--bands", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["layers"] == 2 and len(data["cells"]) == 12 and data["roles"][-1] == "output.dense"
    assert any(o["name"].startswith("classifier") for o in data["other"])


# ---- data --------------------------------------------------------------------------------------


def test_rows_are_validated_with_row_field_and_reason(tmp_path):
    from adapters.data.classes import label_set, load_classification

    path = tmp_path / "rows.jsonl"
    rows = [{"text": "w1", "label": "a"}, {"text": "w2", "label": "a"}, {"text": "   ", "label": "b"},
            {"text": "w3"}, {"text": "w4", "label": "lonely"}, {"text": "w1", "label": "a"},
            {"text": "w1", "label": "b"}, {"text": "w5", "text_pair": "w6", "label": "b"},
            {"text": "w7", "label": "b"}, {"text": "w8", "text_pair": 3, "label": "b"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_classification(path)
    assert ds.rows_in == 10 and ds.rows_valid == 4 and ds.categories() == {"a": 2, "b": 2}
    reasons = {(e.row, e.field): e.reason for e in ds.errors}
    assert reasons[(3, "text")] == "empty"
    assert reasons[(4, "label")] == "missing label"
    assert "label 'lonely' is seen in 1 row(s)" in reasons[(5, "label")]
    assert reasons[(6, None)] == "exact duplicate of row 1"
    assert "the same text as row 1" in reasons[(7, "label")]
    assert "wrong type" in reasons[(10, "text_pair")]
    assert label_set(ds) == ["a", "b"]
    assert [e.meta.get("text_pair") for e in ds.examples] == [None, None, "w6", None]


def test_every_file_type_and_a_column_mapping(tmp_path):
    import pandas as pd

    from adapters.data.classes import load_classification, rows

    frame = pd.DataFrame({"sentence": ["w1 w2", "w3", "w4", "w5"], "category": ["x", "y", "x", "y"]})
    frame.to_csv(tmp_path / "r.csv", index=False)
    frame.to_parquet(tmp_path / "r.parquet")
    (tmp_path / "r.json").write_text(frame.to_json(orient="records"))
    for name in ("r.csv", "r.parquet", "r.json"):
        ds = load_classification(tmp_path / name, {"sentence": "text", "category": "label"})
        assert [(r.text, r.label) for r in rows(ds)] == list(zip(frame.sentence, frame.category)), name


def test_dolly_sample_as_instruction_to_category():
    from adapters.data import build_mixture, split_heldout
    from adapters.data.classes import load_classification

    ds = load_classification("datasets/dolly-15k-sample.jsonl", {"instruction": "text", "category": "label"})
    assert ds.rows_valid == 160 and len(ds.categories()) == 8 and ds.categories()["creative_writing"] == 6
    split = split_heldout(ds, fraction=0.25, seed=0)
    assert all(c["train"] > 0 and c["heldout"] > 0 for c in split.categories().values())
    mix = build_mixture(split.train, quotas={"creative_writing": 100}, size=1000, seed=0)
    assert sum(e.category == "creative_writing" for e in mix.stream) >= 100


# ---- proof rules on synthetic numbers --------------------------------------------------------------


def test_macro_f1_matches_scikit_learn():
    from sklearn.metrics import f1_score

    from evals.classproof import macro_f1

    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        assert macro_f1(y, p, 4) == pytest.approx(f1_score(y, p, average="macro"))


def _probs(pred: np.ndarray, n_labels: int = 2) -> np.ndarray:
    out = np.full((pred.size, n_labels), 0.1)
    out[np.arange(pred.size), pred] = 0.9
    return out


@pytest.mark.parametrize(("variant_right", "probe_right", "expected"), [
    (40, 20, "learned"), (20, 40, "worse than base"), (31, 29, "inconclusive"), (30, 30, "no effect")])
def test_verdict_rules(variant_right, probe_right, expected):
    from evals.classproof import against_probe, column_scores, decide

    y = np.zeros(50, dtype=int)
    probe_pred = np.where(np.arange(50) < probe_right, 0, 1)
    variant_pred = probe_pred.copy() if expected == "no effect" else np.where(np.arange(50) < variant_right, 0, 1)
    probe, variant = _probs(probe_pred), _probs(variant_pred)
    vs = against_probe(y, probe, variant, 2)
    verdict = decide(column_scores(y, probe, 2), column_scores(y, variant, 2), vs)
    assert verdict.label == expected, verdict.sentence


def test_data_readers_reject_a_nonexistent_file(tmp_path):
    from adapters.data.classes import load_classification

    with pytest.raises(LoraEqError):
        load_classification(tmp_path / "missing.jsonl")


# ---- the web app's handlers, called without a server ---------------------------------------------


def test_app_shows_classify_for_an_encoder_and_runs_its_handlers(tmp_path, cache_home, monkeypatch):
    """Data tab -> Train tab (the worker runs `loraeq train`) -> Classify tab, as a user clicks."""
    import time

    from adapters.limits import Limits
    from adapters.train.runs import run_status
    from playground import tab_classify, tab_data, tab_train
    from playground.app import is_encoder, make_shared, tabs_for_kind
    from playground.sessions import Session

    monkeypatch.setenv("LORAEQ_NO_PRELOAD", "1")
    model = write_tiny_encoder(tmp_path / "bert")
    shared = make_shared(str(model), "fp32", str(tmp_path / "runs"), limits=Limits(variants=2))
    state = Session()
    assert is_encoder(shared, state)
    compare, classify, evalsets = tabs_for_kind(shared, state)
    assert (compare.visible, classify.visible, evalsets.visible) == (False, True, False)
    with pytest.raises(LoraEqError, match="train a classification run first"):
        tab_classify.classify_text(shared, "w1 w2", "", "", state)
    data = write_rows(tmp_path / "rows.jsonl")
    report = tab_data.validate(shared, str(data), None, "auto", "", 128, state)[0]
    assert state.data["task"] == "classification" and "60" in report
    tab_train.apply_preset(shared, "attention", state)
    tab_train.add_variant(shared, "attn", "4", "0.01", "5", 8, state)
    tab_train.start_training(shared, state)
    run = shared.run_path(state)
    for _ in range(300):
        job = shared.jobs.get(str(run))
        if job.state not in ("queued", "running"):
            break
        time.sleep(1)
    assert [(v["name"], v["status"]) for v in run_status(run)["variants"]] == [("probe", "done"), ("attn", "done")]
    figure, table, _, state = tab_classify.classify_text(shared, "w1 w20", "", "a", state)
    assert list(table["column"]) == ["probe", "attn"] and set(table["correct"]) <= {"yes", "no"}
    assert len(figure.axes[0].patches) == 3 * 2  # 3 labels x 2 columns
    tab_classify.vote(shared, "pass", "attn", state)
    board = tab_classify.vote(shared, "fail", "probe", state)
    assert dict(zip(board["variant"], board["passes"])) == {"attn": 1, "probe": 0}
    with pytest.raises(LoraEqError, match="expected label 'zzz'"):
        tab_classify.classify_text(shared, "w1", "", "zzz", state)
    scores = tab_classify.score_set(shared, str(write_rows(tmp_path / "set.jsonl", n=9)), "", state)
    assert list(scores["column"]) == ["probe", "attn"] and (scores["n"] == 9).all()


def test_app_keeps_compare_for_a_causal_lm(tiny_model_dir, cache_home, tmp_path):
    from playground.app import make_shared, tabs_for_kind
    from playground.sessions import Session

    shared = make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"))
    compare, classify, evalsets = tabs_for_kind(shared, Session())
    assert (compare.visible, classify.visible, evalsets.visible) == (True, False, True)


def test_data_inspect_and_mix_by_label_on_the_cli(capsys):
    args = ["datasets/dolly-15k-sample.jsonl", "--task", "classification", "--map", "instruction=text",
            "--map", "category=label", "--json"]
    assert main(["data", "inspect", *args]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "classification" and data["rows_valid"] == 160 and len(data["categories"]) == 8
    assert main(["data", "mix", *args, "--quota", "creative_writing=200", "--size", "500"]) == 0
    mix = json.loads(capsys.readouterr().out)
    assert mix["quotas_hold"] is True


def test_train_cli_classification_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LORAEQ_NO_PRELOAD", "1")
    model = write_tiny_encoder(tmp_path / "bert")
    data = write_rows(tmp_path / "rows.jsonl")
    code = main(["train", "--task", "classification", "--data", str(data), "--model", str(model), "--preset", "late",
                 "--out", str(tmp_path / "run"), "--precision", "fp32", "--max-steps", "2", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert [(v["name"], v["status"], v["steps"]) for v in out["variants"]] == [("probe", "done", 2), ("late", "done", 2)]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["task"] == "classification"


def test_merged_export_is_a_plain_classifier_with_the_variants_predictions(trained_run, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from adapters.data.classes import LabeledRow
    from adapters.share.export import export_adapter_zip, export_merged
    from adapters.train.classify import Classifier, probabilities

    run_dir, _, _ = trained_run
    out = export_merged(run_dir / "uniform", tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert merged.config.id2label == {0: "a", 1: "b", 2: "c"}
    data = [LabeledRow("w1 w20 w30", "a"), LabeledRow("w2 w40", "b")]
    plain = probabilities(merged, AutoTokenizer.from_pretrained(out), data, "cpu")
    np.testing.assert_allclose(plain, Classifier(run_dir).probabilities(data, ["uniform"])["uniform"], atol=1e-5)
    assert "AutoModelForSequenceClassification" in (out / "README.md").read_text()
    assert export_adapter_zip(run_dir / "uniform", tmp_path / "u.zip").is_file()


def test_proof_tab_shows_the_classification_report(trained_run, cache_home, tmp_path):
    import shutil

    from evals.classproof import evaluate_classification
    from playground import tab_proof
    from playground.app import make_shared
    from playground.sessions import Session

    run_dir, model, _ = trained_run
    shared = make_shared(str(model), "fp32", str(tmp_path / "runs"))
    state = Session()
    name, own = shared.area.new_run(state)
    shutil.rmtree(own)
    shutil.copytree(run_dir, own)
    evaluate_classification(own)
    state.run = name
    lines, table, html = tab_proof.report_view(shared, state)
    assert list(table["name"]) == ["uniform", "attn"] and table["accuracy"].between(0, 1).all()
    assert "labels held-out rows right" in lines and "<iframe" in html

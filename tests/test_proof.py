"""The proof of learning on a tiny model run (report files, JSON, no effect, train loss), the verdict
rules on synthetic numbers, the losses against a plain forward pass, and `loraeq eval`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from adapters.base.loading import load_model
from adapters.base.tokenize import IGNORE, encode_chat
from adapters.data import load_dataset, split_heldout
from adapters.errors import LoraEqError
from adapters.infer.adapter_rows import BASE_ROW
from adapters.shape.variants import Hyper, Variant
from adapters.train.runs import create_run, data_info, run_queue
from conftest import write_chats
from evals.adapter_set import load_adapter_set, release
from evals.answers import greedy_generate
from evals.losses import plan_batches, score
from evals.proof import evaluate_run
from evals.verdict import Evidence, Matches, Paired, Thresholds, UserChecks, decide
from loraeq.main import main

JSON_KEYS = {"name", "verdict", "heldout_loss_base", "heldout_loss", "similarity_base", "similarity", "diff_ci",
             "p_value", "kl_to_base"}


def _write_data(path, n=80):
    """Distinct rows whose answer is a fixed function of the question, so a LoRA can learn it."""
    return write_chats(path, ((f"w{i % 20} w{(i * 7) % 23} ?", f"w{40 + i % 20} paris w{60 + (i * 7) % 23}",
                               {"category": ["a", "b"][i % 2]}) for i in range(n)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run, trained once: a 0-step variant and a variant trained hard on the train split."""
    from conftest import write_tiny_model

    root = tmp_path_factory.mktemp("proof")
    model_dir = write_tiny_model(root / "tiny-llama")
    data = _write_data(root / "data.jsonl")
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.25, seed=0)
    run = root / "run"
    create_run(run, variants=[
        Variant("zero", "uniform", Hyper(max_steps=0)),
        Variant("hard", "uniform", Hyper(max_steps=80, learning_rate=5e-3, batch_size=8, rank=16)),
    ], split=split, data_info=data_info(dataset, split, str(data)), model=str(model_dir), precision="fp32", bands=2)
    results = run_queue(run)
    assert [r["status"] for r in results] == ["done", "done"]
    return run


@pytest.fixture(scope="module")
def tiny_report(tiny_run):
    return evaluate_run(tiny_run, seed=0)


def test_report_files_and_json_keys(tiny_run, tiny_report):
    for name in ("report.json", "report.md", "report.html"):
        assert (tiny_run / name).stat().st_size > 500, name
    data = json.loads((tiny_run / "report.json").read_text())
    assert [v["name"] for v in data["variants"]] == ["zero", "hard"]
    for v in data["variants"]:
        assert JSON_KEYS <= set(v)
        assert len(v["diff_ci"]) == 2 and v["diff_ci"][0] <= v["diff_ci"][1]
        assert 0 < v["p_value"] <= 1
        assert len(v["per_example"]["answers"]) == data["heldout_rows"] == len(data["rows"])
    html = (tiny_run / "report.html").read_text()
    assert html.count("<svg") == 3 and "src=\"http" not in html and "<script" not in html
    md = (tiny_run / "report.md").read_text()
    assert "**zero**: no effect" in md and "| hard |" in md


def test_zero_step_variant_is_no_effect(tiny_report):
    zero = tiny_report.variants[0]
    assert zero.verdict.label == "no effect"
    assert zero.evidence.kl_to_base == 0.0 and zero.evidence.max_logit_diff == 0.0
    assert zero.answers == tiny_report.base_answers
    assert "no effect: same as the base" in zero.verdict.sentence


def test_hard_trained_variant_lowers_train_loss_and_moved(tiny_report):
    hard = tiny_report.variants[1]
    e = hard.evidence
    assert e.train_loss.variant < e.train_loss.base - 0.5
    assert e.train_loss.down(0.01)
    assert e.kl_to_base > 1e-2 and hard.verdict.label != "no effect"
    assert hard.loss_curve and hard.loss_curve[-1][1] < hard.loss_curve[0][1]
    assert hard.steps == 80


def test_base_is_left_unchanged_by_an_evaluation(tiny_run):
    base = load_model(json.loads((tiny_run / "run.json").read_text())["model"], "fp32")
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    evaluate_run(tiny_run, base=base, write=False, limit=4)
    after = base.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in name for name, _ in base.model.named_modules())


def test_a_second_proof_reads_the_bases_share_from_the_cache_with_the_same_numbers(tiny_run, cache_home):
    def numbers(report):
        data = report.to_json()
        data.pop("seconds"), data.pop("base_cached")
        return json.dumps(data, sort_keys=True)

    first = evaluate_run(tiny_run, write=False, limit=8)
    second = evaluate_run(tiny_run, write=False, limit=8)
    assert first.base_cached == [] and second.base_cached == ["train losses", "answers"]
    assert numbers(first) == numbers(second)
    # It really reads them: an entry changed on disk shows in the next report.
    [entry] = (cache_home / "proof-base").glob("answers-*.json")
    entry.write_text(json.dumps({"answers": ["from the cache"] * 8}))
    assert evaluate_run(tiny_run, write=False, limit=8).base_answers == ["from the cache"] * 8
    # Without the cache, or on other rows, nothing is read; a broken entry is a miss.
    assert evaluate_run(tiny_run, write=False, limit=8, base_cache=False).base_answers == first.base_answers
    assert evaluate_run(tiny_run, write=False, limit=6).base_cached == []
    entry.write_text("{not json")
    assert evaluate_run(tiny_run, write=False, limit=8).base_answers == first.base_answers


def test_losses_match_a_plain_forward_and_batching(tiny_run):
    """Batched, padded, per-adapter losses equal one-example forwards of the base and of base+adapter merged."""
    from peft import PeftModel

    spec = json.loads((tiny_run / "run.json").read_text())["model"]
    base = load_model(spec, "fp32")
    convs = [json.loads(line)["messages"] for line in (tiny_run / "data" / "heldout.jsonl").read_text().splitlines()]
    encoded = [encode_chat(base.tokenizer, c) for c in convs]
    adapters = load_adapter_set(base, {"hard": tiny_run / "hard"})
    try:
        scores, moved = score(adapters, encoded, [BASE_ROW, "v0"], divergence=True)
    finally:
        release(adapters)
    merged = PeftModel.from_pretrained(load_model(spec, "fp32").model, str(tiny_run / "hard")).merge_and_unload()
    for model, key in ((base.model, BASE_ROW), (merged, "v0")):
        for i, e in enumerate(encoded[:5]):
            ids, labels = torch.tensor([e.input_ids]), torch.tensor([e.labels])
            with torch.no_grad():
                expected = model(input_ids=ids, labels=labels).loss.item()  # HF shifts and averages itself
            assert scores[key].loss[i] == pytest.approx(expected, rel=1e-4)
            assert len(scores[key].token_logprobs[i]) == sum(1 for t in e.labels if t != IGNORE)
    assert moved["v0"].kl_mean > 0 and moved["v0"].positions == sum(e.trained_tokens for e in encoded)


def test_batches_respect_the_budgets():
    lengths = [900, 50, 60, 5000, 70] + [30] * 100
    batches = plan_batches(lengths, [10] * len(lengths))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [3]  # the longest first, alone
    assert all(len(b) * max(lengths[i] for i in b) <= 8192 or len(b) == 1 for b in batches)
    assert all(len(b) <= 32 for b in batches)


def test_greedy_generate_answers_each_adapter_as_if_alone(tiny_run):
    base = load_model(json.loads((tiny_run / "run.json").read_text())["model"], "fp32")
    adapters = load_adapter_set(base, {"zero": tiny_run / "zero", "hard": tiny_run / "hard"})
    prompts = [[{"role": "user", "content": f"w{i} w{i + 1} ?"}] for i in range(4)]
    try:
        mixed = greedy_generate(adapters, prompts * 3, [BASE_ROW] * 4 + ["v0"] * 4 + ["v1"] * 4, max_new_tokens=6)
        alone = greedy_generate(adapters, prompts, ["v1"] * 4, max_new_tokens=6, batch_size=1)
        base_alone = greedy_generate(adapters, prompts[::-1], [BASE_ROW] * 4, max_new_tokens=6)[::-1]
    finally:
        release(adapters)
    assert mixed[:4] == mixed[4:8]  # the 0-step adapter answers like the base
    assert mixed[8:] == alone  # batching and left padding do not change an answer
    assert mixed[8:] != mixed[:4]
    assert base_alone == mixed[:4]  # the base's answers do not depend on the variants in the call


def test_injected_generate_is_used(tiny_run):
    calls = []

    def fake(adapters, prompts, names):
        calls.append((sorted(set(names)), len(prompts)))
        return [p[-1]["content"] for p in prompts]  # echo the question

    report = evaluate_run(tiny_run, generate=fake, write=False, limit=6)
    # The held-out questions for every model, then each variant's own training questions.
    assert calls == [([BASE_ROW, "v0", "v1"], 18), (["v0", "v1"], 12)]
    assert report.base_answers == [r.prompt[-1]["content"] for r in report.rows]
    assert len(report.rows) == 6
    assert [v.evidence.train_facts[1] for v in report.variants] == [6, 6]


def test_evaluate_refuses_a_folder_without_finished_variants(tmp_path, tiny_run):
    with pytest.raises(LoraEqError, match="not a LoRA EQ run"):
        evaluate_run(tmp_path)
    with pytest.raises(LoraEqError, match="limit"):
        evaluate_run(tiny_run, limit=0, write=False)


def test_cli_eval_json_and_table(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--limit", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [v["name"] for v in out["variants"]] == ["zero", "hard"]
    assert JSON_KEYS <= set(out["variants"][0]) and out["heldout_rows"] == 8
    assert out["variants"][0]["verdict"] == "no effect"
    assert main(["eval", str(tiny_run), "--limit", "8"]) == 0
    text = capsys.readouterr().out
    assert "zero: no effect: same as the base" in text and "report.html" in text
    assert main(["eval", str(tiny_run.parent / "nowhere")]) == 2


# ---- the verdict rules on synthetic numbers ---------------------------------------------------


def paired(base: float, variant: float, lo: float, hi: float, p: float, n: int = 60) -> Paired:
    return Paired(base, variant, variant - base, (lo, hi), p, n)


SIM_SAME = paired(0.60, 0.61, -0.02, 0.04, 0.40)
LOSS_SAME = paired(2.40, 2.38, -0.10, 0.06, 0.50)


def evidence(**kw) -> Evidence:
    defaults = dict(similarity=SIM_SAME, heldout_loss=LOSS_SAME, train_loss=paired(2.40, 2.37, -0.10, 0.04, 0.3),
                    kl_to_base=0.05, max_logit_diff=2.0, membership_auc=0.55, min_k_auc=0.52)
    return Evidence(**{**defaults, **kw})


def test_similarity_and_loss_alone_are_closer_in_wording_never_learned():
    # The pattern of the answers learned, every number invented: similarity and loss say "better".
    v = decide(evidence(similarity=paired(0.60, 0.85, 0.19, 0.31, 0.0004), heldout_loss=paired(1.98, 0.39, -1.7, -1.4, 1e-4),
                        matches=Matches.of([False] * 24, [False] * 24, facts=24)))
    assert v.label == "closer in wording"
    assert v.sentence.startswith("closer in wording: held-out answers closer to the data's wording (similarity +0.25 "
                                 "[+0.19, +0.31], p < 0.001; held-out loss 1.98 -> 0.39), but they state the "
                                 "reference's facts in 0 of 24 (0%; base 0 of 24)")
    assert v.sentence.endswith("the facts are not stated")
    # Without the match counts at all, similarity still cannot make "learned".
    assert decide(evidence(similarity=paired(0.6, 0.78, 0.12, 0.24, 0.0004))).label == "closer in wording"


def test_a_falling_loss_with_answers_unchanged_is_closer_in_wording_never_learned():
    flat = Matches.of([False] * 12, [False] * 12)
    v = decide(evidence(heldout_loss=paired(3.63, 3.02, -0.8, -0.4, 0.0001), train_loss=paired(2.4, 1.8, -0.7, -0.5, 1e-4),
                        similarity=paired(0.60, 0.62, -0.02, 0.05, 0.40), matches=flat))
    assert v.label == "closer in wording"
    assert "held-out loss 3.63 -> 3.02" in v.sentence
    assert "they match the reference in 0 of 12 (0%; base 0 of 12), McNemar p = 1.0" in v.sentence


def test_verdict_learned_by_matches_when_similarity_is_flat():
    base, variant = [False] * 30, [True] * 14 + [False] * 16
    v = decide(evidence(heldout_loss=paired(2.4, 1.9, -0.6, -0.4, 0.0001), matches=Matches.of(base, variant, facts=30)))
    assert v.label == "learned"
    assert v.sentence.startswith("learned: held-out answers state the reference's facts in 14 of 30 (47%; base 0 of "
                                 "30), McNemar p < 0.001")
    assert Matches.of(base, [True] * 3 + [False] * 27).p_value == 0.25  # 3 discordant rows: not enough
    assert decide(evidence(matches=Matches.of([True] * 14 + [False] * 16, base))).label == "worse than base"


def test_the_users_checks_outrank_the_held_out_answers():
    sim_up, loss_down = paired(0.60, 0.85, 0.19, 0.31, 0.0004), paired(1.98, 0.39, -1.7, -1.4, 1e-4)
    facts = Matches.of([False] * 24, [True] * 14 + [False] * 10, facts=24)
    none = UserChecks("quillmarsh-test", 0, 0, 8, 1.0)
    # Similarity rose, the eval set passes 0/8: never "learned", and the line says why.
    v = decide(evidence(similarity=sim_up, heldout_loss=loss_down, checks=(none,),
                        matches=Matches.of([False] * 24, [False] * 24, facts=24)))
    assert v.label == "closer in wording"
    assert v.sentence.endswith("but your eval set quillmarsh-test passes 0/8 (base 0/8, p = 1.00): the facts are not "
                               "learned")
    # More held-out facts stated, but the user's own checks show no significant gain: said in the same line.
    weak = UserChecks("quillmarsh-test", 5, 0, 8, 0.0625)
    v = decide(evidence(similarity=sim_up, heldout_loss=loss_down, matches=facts, checks=(weak,)))
    assert v.label == "fails your checks"
    assert "state the reference's facts in 14 of 24" in v.sentence
    assert v.sentence.endswith("but your eval set quillmarsh-test passes 5/8 (base 0/8, p = 0.062): no significant "
                               "gain on your own checks")
    # Every eval set gains significantly (6 of 8 against none: p = 0.031 < 0.05): learned, checks first.
    good = UserChecks("quillmarsh-test", 6, 0, 8, 0.03125)
    v = decide(evidence(similarity=sim_up, heldout_loss=loss_down, matches=facts, checks=(good,)))
    assert v.label == "learned" and v.sentence.startswith("learned: your eval set quillmarsh-test passes 6/8 (base 0/8")
    # A style goal with no facts in its references: the user's checks alone can make "learned".
    assert decide(evidence(similarity=sim_up, checks=(good,))).label == "learned"
    # One of two sets without a gain is enough to withhold "learned".
    assert decide(evidence(matches=facts, checks=(good, none))).label == "fails your checks"
    # An eval set significantly worse than the base makes the variant worse.
    worse = UserChecks("regressions", 0, 7, 8, 0.015625)
    assert decide(evidence(matches=facts, checks=(good, worse))).label == "worse than base"


def test_verdict_memorized():
    e = evidence(train_loss=paired(2.4, 0.1, -2.5, -2.1, 1e-4), heldout_loss=paired(2.4, 2.6, 0.1, 0.3, 0.001),
                 similarity=paired(0.6, 0.58, -0.06, 0.02, 0.3), membership_auc=0.98, min_k_auc=0.95)
    v = decide(e)
    assert v.label == "memorized"
    assert "train loss 2.40 -> 0.10" in v.sentence and "membership AUC 0.98" in v.sentence
    assert "none of the train drop carried over" in v.sentence
    # Answers in the memorized rows' form raise similarity; the loss shows the content did not carry over.
    form = replace(e, similarity=paired(0.6, 0.72, 0.08, 0.17, 1e-4), heldout_loss=paired(2.8, 2.3, -0.7, -0.4, 1e-4))
    assert decide(form).label == "memorized" and "22% of the train drop" in decide(form).sentence
    # The same train drop carried over to held-out is not memorization; with the facts not stated, not learning.
    assert decide(replace(e, heldout_loss=paired(2.4, 0.6, -1.9, -1.7, 1e-4))).label == "closer in wording"
    # Without train rows standing out (membership AUC), a flat held-out is not called memorization.
    assert decide(replace(e, membership_auc=0.6)).label == "worse than base"
    # A small train drop is not memorization either.
    assert decide(evidence(train_loss=paired(2.4, 2.2, -0.3, -0.1, 1e-4), membership_auc=0.9)).label == "inconclusive"


def test_verdict_no_effect_thresholds():
    assert decide(evidence(kl_to_base=0.0, max_logit_diff=0.0)).label == "no effect"
    assert decide(evidence(kl_to_base=5e-5, max_logit_diff=5e-4)).label == "no effect"
    assert decide(evidence(kl_to_base=5e-5, max_logit_diff=0.5)).label == "inconclusive"
    assert decide(evidence(kl_to_base=2e-4, max_logit_diff=5e-4)).label == "inconclusive"
    # bf16 logits near 20 round in steps of 0.0625: a change of one step is rounding, not an effect.
    assert decide(evidence(kl_to_base=1e-6, max_logit_diff=0.0625, logit_resolution=0.0625)).label == "no effect"
    # No effect wins over noisy statistics: an unchanged model cannot have learned anything.
    assert decide(evidence(kl_to_base=0.0, max_logit_diff=0.0,
                           similarity=paired(0.6, 0.8, 0.1, 0.3, 1e-4))).label == "no effect"


def test_verdict_worse_than_base():
    v = decide(evidence(similarity=paired(0.6, 0.5, -0.15, -0.05, 0.0002)))
    assert v.label == "worse than base" and "-0.10 [-0.15, -0.05], p < 0.001" in v.sentence
    assert decide(evidence(heldout_loss=paired(2.4, 3.0, 0.4, 0.8, 0.001))).label == "worse than base"


def test_verdict_inconclusive_and_significance_needs_both_ci_and_p():
    assert decide(evidence()).label == "inconclusive"
    # The interval excludes 0 but p is above alpha (or the reverse): not significant.
    assert decide(evidence(similarity=paired(0.6, 0.65, 0.01, 0.09, 0.03))).label == "inconclusive"
    assert decide(evidence(similarity=paired(0.6, 0.65, -0.01, 0.09, 0.005))).label == "inconclusive"
    facts = Matches.of([False] * 12, [True] * 5 + [False] * 7, facts=12)  # McNemar p = 0.0625
    assert decide(evidence(matches=facts)).label == "inconclusive"
    assert decide(evidence(matches=facts), Thresholds(alpha=0.07)).label == "learned"


def test_paired_and_thresholds_check_their_values():
    p = Paired.of([1.0, 2.0, 3.0, 4.0], [2.0, 3.5, 3.9, 5.2])
    assert p.diff == pytest.approx(np.mean([1.0, 1.5, 0.9, 1.2])) and p.n == 4 and p.p_value == 2 / 16
    with pytest.raises(LoraEqError):
        Paired.of([1.0, 2.0], [1.0])
    with pytest.raises(LoraEqError):
        Paired(1.0, 2.0, 1.0, (0.5, 0.2), 0.1, 5)
    with pytest.raises(LoraEqError):
        Thresholds(alpha=0)
    with pytest.raises(LoraEqError):
        Evidence(SIM_SAME, LOSS_SAME, LOSS_SAME, kl_to_base=-1.0, max_logit_diff=0.0)


def test_each_variant_answers_its_own_training_questions_and_the_count_is_kept(tiny_run):
    from adapters.train.runfolder import RunFolder
    from adapters.train.runs import run_split
    from evals.recall import Recall, advice, longer_schedule, questions, record, train_recall, train_sample

    base = load_model(RunFolder.open(tiny_run).model, "fp32")
    recalls = train_recall(tiny_run, base, size=12)
    assert set(recalls) == {"zero", "hard"} and recalls["zero"] == Recall(0, 12)
    # Counted by hand: the hard variant's answers holding both codes of their reference (w40 ... w60).
    config = RunFolder.open(tiny_run).variant("hard").config
    asked = questions(train_sample(run_split(tiny_run, "train"), config, base.tokenizer, 12, 0), frozenset())
    adapters = load_adapter_set(base, {"hard": tiny_run / "hard"})
    try:
        answers = greedy_generate(adapters, [p for p, _ in asked], ["v0"] * 12, max_new_tokens=16)
    finally:
        release(adapters)
    by_hand = sum(all(w in a.split() for w in ref.split() if w.startswith("w")) for a, (_, ref) in zip(answers, asked))
    assert recalls["hard"] == Recall(by_hand, 12)
    record(tiny_run, recalls)
    metrics = json.loads((tiny_run / "hard" / "metrics.json").read_text())
    assert metrics["train_recall"]["stated"] == recalls["hard"].stated and metrics["status"] == "done"
    # What to train instead when the facts are not learned: twice the training, as a flag.
    assert longer_schedule({"epochs": 8.0, "max_steps": None}, 130) == "--epochs 16 (it had 8 epochs; about 4 min)"
    assert longer_schedule({"epochs": None, "max_steps": 40}) == "--max-steps 80 (it had 40 steps)"
    line = advice("short", Recall(3, 24), {"epochs": 2.0, "max_steps": None}, 40)
    assert line == ("short states the facts in 3 of 24 of its own training questions: the facts are not learned "
                    "yet; train longer: --epochs 4 (it had 2 epochs; about 80 s)")
    assert advice("good", Recall(22, 24), {"epochs": 8.0}) == ""

"""The fast paths' one contract (adapters/fastpath.py): the switch, the release check with its one
logged line, a Patch that puts back exactly what was there, one "is this plain LoRA" test, a
fallback where bitsandbytes hands back its stub, and training + compare with every fast path off
giving the fast run's losses and greedy tokens (fp32), as `loraeq` reports them."""

from __future__ import annotations

import ctypes
import json
import logging

import pytest
import torch
from conftest import fast_path, load_nf4_bf16, tiny_causal_lm, write_tiny_model
from peft import LoraConfig, get_peft_model

from adapters import fastpath
from adapters.infer import packed4bit
from adapters.train import lora_train
from adapters.errors import LoraEqError
from adapters.fastpath import (
    FEW_ROWS_LINEAR,
    FUSED_ROUTER,
    LORA_TRAIN,
    NAMES,
    PACKED4BIT,
    Patch,
    off_reason,
    plain_lora_reason,
    switched_on,
)
from adapters.infer.adapter_rows import FusedRouter, PeftRouter, fusable, fused_or_peft


@pytest.fixture
def fresh_releases():
    """The release check is cached per process: start and leave it empty."""
    fastpath.release_reason.cache_clear()
    yield
    fastpath.release_reason.cache_clear()


def test_the_switch_turns_all_some_or_none_on_and_refuses_an_unknown_name(monkeypatch):
    assert switched_on("") == switched_on("on") == switched_on("ALL") == set(NAMES)
    assert switched_on("off") == switched_on(" none ") == set()
    assert switched_on("lora_train, label_loss") == {"lora_train", "label_loss"}
    assert switched_on("-packed4bit,-lora_train") == set(NAMES) - {"packed4bit", "lora_train"}
    assert switched_on("off,packed4bit") == {"packed4bit"} and switched_on("all,-fused_router,+fused_router") == set(NAMES)
    with pytest.raises(LoraEqError, match=r"'-packed4bt' is not a fast path.*packed4bit, lora_train"):
        switched_on("-packed4bt")
    monkeypatch.setenv(fastpath.ENV, "-lora_train")
    assert off_reason(LORA_TRAIN) == "switched off (LORAEQ_FAST_PATHS=-lora_train)"
    assert off_reason(PACKED4BIT) == fastpath.release_reason(PACKED4BIT)  # the others as the releases say


def test_the_commands_that_report_the_fast_paths_exist():
    from loraeq.main import REPORT_FAST_PATHS, build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    assert set(REPORT_FAST_PATHS) == {"train", "compare", "evalset", "eval"} <= set(commands)


def test_a_patch_puts_back_exactly_what_was_there():
    hooked, plain = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    hook = hooked.forward = lambda x: x * 0  # an instance forward of its own, as accelerate's hooks set
    undone = []
    x = torch.ones(1, 2)
    with Patch("test") as patch:
        patch.replace_forward(hooked, lambda x: x + 1)
        patch.replace_forward(plain, lambda x: x - 1)
        patch.on_restore(lambda: undone.append("first"))
        patch.on_restore(lambda: undone.append("second"))
        assert torch.equal(hooked(x), x + 1) and torch.equal(plain(x), x - 1) and patch.forwards == 2
    assert hooked.__dict__["forward"] is hook and "forward" not in plain.__dict__
    assert undone == ["second", "first"] and patch.forwards == 0


def _two_adapters(**second):
    """A tiny PEFT model with a plain adapter `plain` and a second one, `other`, configured by `second`."""
    torch.manual_seed(0)
    targets = ["q_proj", "v_proj"]
    model = get_peft_model(tiny_causal_lm("llama"), LoraConfig(r=4, lora_alpha=8, target_modules=targets),
                           adapter_name="plain")
    model.add_adapter("other", LoraConfig(r=4, lora_alpha=8, target_modules=targets, **second))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: make each adapter change the answers
            torch.nn.init.normal_(p, std=0.5)
    return model, model.base_model.model.model.layers[0].self_attn.q_proj


@pytest.mark.parametrize("second, reason", [
    (dict(lora_bias=True), "a LoRA bias"),
    (dict(use_dora=True), "a LoRA variant (DoraLinearVariant)"),
])
def test_training_and_the_router_share_one_plain_lora_test(second, reason):
    model, layer = _two_adapters(**second)
    assert plain_lora_reason(layer, "plain") is None and plain_lora_reason(layer, "other") == reason
    assert fusable(model, "plain") is None and fusable(model, "other") == reason
    model.base_model.set_adapter("other")
    assert plain_lora_reason(layer) == reason
    assert lora_train.applies(model) == f"no plain LoRA layer (the first: {reason})"
    model.base_model.set_adapter("plain")
    assert lora_train.applies(model) is None

    # Two active adapters: training's layer forward would sum both; a router row names its one.
    model.base_model.set_adapter(["plain", "other"])
    assert plain_lora_reason(layer) == "2 active adapters" and plain_lora_reason(layer, "plain") is None
    model.base_model.set_adapter("plain")
    layer.merge(["plain"])
    assert plain_lora_reason(layer) == plain_lora_reason(layer, "plain") == "adapters merged into the base weights"
    assert fusable(model, "plain") == "adapters merged into the base weights"
    with pytest.raises(LoraEqError, match="adapters merged into the base weights"):
        FusedRouter(model, ["plain", "__base__"])  # the engine never gets here: fusable said why first


def test_an_untested_release_runs_the_librarys_own_path_with_one_logged_line(monkeypatch, caplog, fresh_releases):
    real = fastpath._installed
    monkeypatch.setattr(fastpath, "_installed", lambda library: "0.99.1" if library == "peft" else real(library))
    model, _ = _two_adapters()
    with caplog.at_level(logging.WARNING, logger="loraeq.fastpath"):
        assert off_reason(LORA_TRAIN) == "untested peft 0.99.1 (tested: 0.21)"
        assert fusable(model, "plain") == off_reason(FUSED_ROUTER) == "untested peft 0.99.1 (tested: 0.21)"
        patch = lora_train.install(model)
        router = fused_or_peft(model, ["plain", "__base__"])
    assert [r.getMessage() for r in caplog.records if r.name == "loraeq.fastpath"] == [
        "fast path lora_train: untested peft 0.99.1 (tested: 0.21); peft's own path runs instead",
        "fast path fused_router: untested peft 0.99.1 (tested: 0.21); peft's own path runs instead",
    ]
    assert patch.forwards == 0 and isinstance(router, PeftRouter)
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    model.eval()
    with torch.no_grad():  # PEFT's own mixed batch: row 1 is the base model
        logits = router.forward(input_ids=ids, attention_mask=torch.ones_like(ids))
        with model.disable_adapter():
            base = model(input_ids=ids[1:]).logits[:, -1].float()
    torch.testing.assert_close(logits[1:], base)
    assert not torch.allclose(logits[:1], base)  # row 0 through its adapter
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()  # and training runs through PEFT's layers
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_A.plain" in n)


@fast_path(PACKED4BIT)
def test_the_4bit_call_steps_aside_when_bitsandbytes_hands_back_its_stub(tmp_path, monkeypatch):
    from bitsandbytes.backends.cpu import ops

    base = load_nf4_bf16(write_tiny_model(tmp_path / "tiny"))
    layer = next(m for m in base.model.modules() if packed4bit.is_4bit_linear(m))
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    with torch.no_grad():
        expected = base.model(ids).logits[:, -1].float()
    assert isinstance(packed4bit.direct_forward(layer), packed4bit._Kernel)  # the real install: a C function

    class Stub:  # what bitsandbytes' library object gives for a symbol it lacks
        def __getattr__(self, name):
            def throw_on_call(*args, **kwargs):
                raise RuntimeError(f"Native code method attempted to call: lib.{name}()")
            return throw_on_call

    with pytest.raises(ctypes.ArgumentError):
        ctypes.cast(Stub().gemv_4bit_inference_cpu_nf4_bf16, ctypes.c_void_p)  # what a cast of it did
    packed4bit._native_kernel.cache_clear()
    try:
        with monkeypatch.context() as mp, fastpath.recording() as record:
            mp.setattr(ops, "lib", Stub())  # while the fast path decides (its answer is kept per process)
            assert packed4bit.applies() == "bitsandbytes' native library has no gemv_4bit_inference_cpu_nf4_bf16"
            assert packed4bit.direct_forward(layer) is None
            router = FusedRouter(base.model, ["__base__", "__base__"])
        assert not any("forward" in m.__dict__ for m in base.model.modules() if packed4bit.is_4bit_linear(m))
        with torch.no_grad():  # bitsandbytes' own layers answer (its real library is back for them)
            got = router.forward(input_ids=ids, attention_mask=torch.ones_like(ids))
        router.close()
        assert torch.equal(got, expected)
        assert record[PACKED4BIT] == "bitsandbytes' native library has no gemv_4bit_inference_cpu_nf4_bf16"
        assert record[FUSED_ROUTER] == fastpath.RAN
    finally:
        packed4bit._native_kernel.cache_clear()


def _write_rows(path, n=40):
    with path.open("w") as f:
        for i in range(n):
            answer = " ".join(f"w{(i % 4) * 10 + k}" for k in range(6))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"w{i % 30} w{(i * 7) % 30} ?"},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


def _cli(capsys, argv: list[str]) -> dict:
    from loraeq.main import main

    assert main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _losses(run) -> list[float]:
    from adapters.train.runfolder import read_log

    (log,) = run.glob("*/train_log.jsonl")
    return [r["loss"] for r in read_log(log) if "loss" in r]


def test_with_every_fast_path_off_training_and_compare_give_the_same_losses_and_tokens(tmp_path, cache_home,
                                                                                       capsys, monkeypatch):
    model = write_tiny_model(tmp_path / "tiny")
    data = _write_rows(tmp_path / "rows.jsonl")
    train = ["train", "--data", str(data), "--model", str(model), "--precision", "fp32", "--max-steps", "8",
             "--lr", "1e-2", "--batch-size", "4", "--dropout", "0"]  # no dropout: the two draw other masks
    compare = ["compare", str(tmp_path / "fast"), "--prompt", "w1 w2 ?", "--max-new-tokens", "8"]
    runs_here = {n for n in NAMES if off_reason(n) is None}  # all of them, on the tested releases
    fast = _cli(capsys, [*train, "--out", str(tmp_path / "fast")])
    fast_answers = _cli(capsys, compare)
    monkeypatch.setenv(fastpath.ENV, "off")
    plain = _cli(capsys, [*train, "--out", str(tmp_path / "plain")])
    plain_answers = _cli(capsys, compare)

    ran = {n for n, v in fast["fast_paths"].items() if v == fastpath.RAN}
    assert ran == runs_here - {PACKED4BIT}  # an fp32 base has no 4-bit layer
    assert {n for n, v in fast_answers["fast_paths"].items() if v == fastpath.RAN} == runs_here & {
        FUSED_ROUTER, "packed_attention", FEW_ROWS_LINEAR}
    assert fast_answers["fast_paths"]["lora_train"] == "not used by this command"
    for report in (plain["fast_paths"], plain_answers["fast_paths"]):
        assert set(report.values()) == {"switched off (LORAEQ_FAST_PATHS=off)"}
    assert fast_answers["backend"] == ("fused" if FUSED_ROUTER in runs_here else "peft")
    assert plain_answers["backend"] == "peft"

    assert len(_losses(tmp_path / "fast")) == 8
    assert _losses(tmp_path / "plain") == pytest.approx(_losses(tmp_path / "fast"), abs=1e-4)
    texts = [c["text"] for c in fast_answers["columns"]]
    assert texts == [c["text"] for c in plain_answers["columns"]]
    assert [c["tokens"] for c in fast_answers["columns"]] == [c["tokens"] for c in plain_answers["columns"]]
    assert texts[0] != texts[1]  # not vacuous: the variant answers otherwise than the base


def test_few_rows_linear_gives_the_layers_result_and_steps_aside_where_it_does_not_apply(monkeypatch):
    from torch import nn

    from adapters.infer import few_rows

    torch.manual_seed(0)
    layer, half = nn.Linear(64, 96), nn.Linear(64, 96).to(torch.bfloat16)
    x = torch.randn(4, 3, 64)
    with torch.no_grad():
        expected = layer(x)
        with Patch(FEW_ROWS_LINEAR) as patch:
            assert few_rows.route([layer, half, nn.ReLU()], patch) == [layer]  # fp32 nn.Linear only
            assert torch.allclose(layer(x), expected, atol=1e-5)
            assert torch.equal(layer(x[:1, :1]), nn.functional.linear(x[:1, :1], layer.weight, layer.bias))
            many = torch.randn(few_rows.MAX_ROWS + 1, 64)
            assert torch.equal(layer(many), nn.functional.linear(many, layer.weight, layer.bias))
            with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast's bf16 layer, as without the patch
                assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
        assert "forward" not in layer.__dict__  # restored
    with torch.enable_grad(), Patch(FEW_ROWS_LINEAR) as patch:
        few_rows.route([layer], patch)
        out = layer(x)
        assert out.requires_grad and torch.equal(out, nn.functional.linear(x, layer.weight, layer.bias))
    monkeypatch.setenv(fastpath.ENV, "-few_rows_linear")
    with fastpath.recording() as record, Patch(FEW_ROWS_LINEAR) as patch:
        assert few_rows.route([layer], patch) == [] and patch.forwards == 0
    assert record[FEW_ROWS_LINEAR] == "switched off (LORAEQ_FAST_PATHS=-few_rows_linear)"

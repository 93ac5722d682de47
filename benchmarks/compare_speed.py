"""Side-by-side speed and memory: base + 4 variants in one batched call vs a `set_adapter` loop.

    python benchmarks/compare_speed.py [--precision nf4] [--tokens 64] [--rounds 3] [--json]

Speed, on the embedded SmolLM2-135M in --precision with four adapters shaped by equalizer presets
(uniform, attention, mlp, late; random non-zero B factors), greedy, up to --tokens new tokens per
column, one chat prompt:
- batched: `CompareEngine.answer` over five columns (base + 4) in one decode (fused router);
- loop: plain PEFT on the very same model: per column `set_adapter` (`disable_adapter` for the
  base) and `generate` with batch size 1, as one would write it without LoRA EQ;
- also PEFT's own `adapter_names` batches (the engine's "peft" backend), for reference.
Rounds alternate the methods. `speedup` is the median over rounds of loop time / batched time
(wall clock); beside it the ratio of the best times and the ratio of this process's CPU time, which
other processes on a shared machine disturb less. `identical`: every column's tokens are the same
under all three methods in every round.

Memory: one NF4 base carrying the four adapters against five full-precision (fp32) models loaded
separately: the base plus each variant merged into its own copy, as `loraeq export --merged`
writes them. Bytes are parameters + buffers + 4-bit quantization state.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PRESETS = ("uniform", "attention", "mlp", "late")
PROMPT = "Write a long, detailed story about a lighthouse keeper who finds a message in a bottle."


def random_adapters(base, root: Path, presets=PRESETS, std: float = 0.05) -> dict[str, Path]:
    """PEFT adapters compiled from equalizer presets, with seeded random non-zero B factors."""
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


def model_bytes(model: torch.nn.Module) -> int:
    """Parameters + buffers + the quantization state of 4-bit weights (absmax, codebooks)."""
    total = sum(t.nelement() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None:
            continue
        nested = getattr(state, "state2", None)
        for t in (state.absmax, state.code, getattr(state, "offset", None),
                  getattr(nested, "absmax", None), getattr(nested, "code", None)):
            if isinstance(t, torch.Tensor):
                total += t.nelement() * t.element_size()
    return total


def loop_answers(engine, tokens: int) -> dict[str, list[int]]:
    """Plain PEFT: one column at a time with set_adapter / disable_adapter and generate."""
    from adapters.base.tokenize import encode_prompt
    from adapters.infer.engine import BASE_COLUMN, conversation

    model = engine.model
    ids = torch.tensor([encode_prompt(engine.tokenizer, conversation(PROMPT, None, None))])
    out = {}
    for column in engine.columns():
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens, do_sample=False,
                      eos_token_id=sorted(engine.stop_ids), pad_token_id=engine.tokenizer.pad_token_id)
        with torch.no_grad():
            if column.variant == BASE_COLUMN:
                with model.disable_adapter():
                    generated = model.generate(**kwargs)
            else:
                model.set_adapter(engine._variants[column.variant].key)
                generated = model.generate(**kwargs)
        new = generated[0, ids.shape[1]:].tolist()
        out[column.label] = new[:-1] if new and new[-1] in engine.stop_ids else new
    return out


def batched_answers(engine, tokens: int, backend: str) -> dict[str, list[int]]:
    from adapters.infer.decoding import Sampling

    engine.backend = backend
    try:
        return {a.label: a.token_ids for a in engine.answer(PROMPT, sampling=Sampling(max_new_tokens=tokens))}
    finally:
        engine.backend = "fused"


def timed(fn, *args) -> tuple[float, float, dict]:
    """Wall seconds, this process's CPU seconds, and the result."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def measure_speed(precision: str, tokens: int, rounds: int) -> dict:
    from adapters.base.loading import load_model
    from adapters.infer.engine import CompareEngine

    base = load_model(None, precision)
    folders = random_adapters(base, Path(tempfile.mkdtemp(prefix="loraeq-bench-")))
    engine = CompareEngine(base, folders)
    batched_answers(engine, 4, "fused")  # warm-up: the first NF4 forward repacks the weights for the CPU
    loop_answers(engine, 4)
    times: dict[str, list[float]] = {"batched": [], "loop": [], "peft_batched": []}
    cpu: dict[str, list[float]] = {"batched": [], "loop": [], "peft_batched": []}
    identical = True
    for _ in range(rounds):
        outputs: dict[str, dict] = {}
        for name, fn, args in (("batched", batched_answers, (engine, tokens, "fused")),
                               ("loop", loop_answers, (engine, tokens)),
                               ("peft_batched", batched_answers, (engine, tokens, "peft"))):
            seconds, cpu_seconds, outputs[name] = timed(fn, *args)
            times[name].append(seconds)
            cpu[name].append(cpu_seconds)
        identical = identical and outputs["batched"] == outputs["loop"] == outputs["peft_batched"]
    distinct = len({tuple(v) for v in outputs["batched"].values()})
    engine.close()

    def median(name: str, clock: dict = times) -> float:
        return round(statistics.median(a / b for a, b in zip(clock["loop"], clock[name])), 2)

    return {
        "precision": precision,
        "speedup": median("batched"),
        "speedup_best_times": round(min(times["loop"]) / min(times["batched"]), 2),
        "speedup_cpu_time": median("batched", cpu),
        "speedup_peft_adapter_names": median("peft_batched"),
        "identical": identical,
        "distinct_answers": distinct,
        "tokens_per_column": {k: len(v) for k, v in outputs["batched"].items()},
        "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
    }


def measure_memory() -> dict:
    from peft import PeftModel

    from adapters.base.loading import load_model
    from adapters.infer.engine import CompareEngine

    base = load_model(None, "nf4")
    folders = random_adapters(base, Path(tempfile.mkdtemp(prefix="loraeq-bench-")))
    engine = CompareEngine(base, folders)
    one_base = model_bytes(engine.model)
    adapters = sum(p.nelement() * p.element_size() for n, p in engine.model.named_parameters() if "lora_" in n)
    engine.close()
    separate = []
    for folder in [None, *folders.values()]:
        full = load_model(None, "fp32")
        model = full.model if folder is None else PeftModel.from_pretrained(full.model, folder).merge_and_unload()
        separate.append(model_bytes(model))
    return {
        "memory_ratio": round(sum(separate) / one_base, 2),
        "nf4_base_plus_4_adapters_mib": round(one_base / 2**20, 1),
        "adapters_mib": round(adapters / 2**20, 1),
        "five_fp32_models_mib": round(sum(separate) / 2**20, 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--precision", default="nf4", choices=["nf4", "bf16", "fp32"], help="base for the speed part")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per column (default 64)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print {speedup, memory_ratio, identical, ...} as JSON")
    args = p.parse_args()
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    result = {**measure_speed(args.precision, args.tokens, args.rounds), **measure_memory(),
              "threads": torch.get_num_threads()}
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:32s} {v}")


if __name__ == "__main__":
    main()

"""The vLLM-safe export: each module's scale folded into lora_B, one uniform r = lora_alpha.

Checked with plain PEFT on a tiny seeded Llama: the folded adapter, loaded with no rank or alpha
patterns, gives the original adapter's logits (fp32, max abs difference under 1e-4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adapters.errors import LoraEqError
from adapters.share.export import fold_scales
from tests.conftest import tiny_causal_lm

IDS = torch.tensor([[4, 120, 7, 9, 5, 4, 121, 33, 60]])
NONUNIFORM = dict(r=8, lora_alpha=16,
                  rank_pattern={r"model\.layers\.0\.self_attn\.q_proj": 2, r"model\.layers\.1\.mlp\.up_proj": 4},
                  alpha_pattern={r"model\.layers\.0\.self_attn\.q_proj": 3, r"model\.layers\.1\.mlp\.down_proj": 40})
TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


def _adapter(folder, seed=1, **lora):
    """A PEFT adapter on the tiny Llama with random (non-zero) A and B, saved to `folder`."""
    from peft import LoraConfig, get_peft_model

    lora.setdefault("target_modules", TARGETS)
    model = get_peft_model(tiny_causal_lm("llama"), LoraConfig(**lora))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    model.save_pretrained(folder)
    return folder


def _logits(folder):
    from peft import PeftModel

    model = PeftModel.from_pretrained(tiny_causal_lm("llama"), folder).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _base_logits():
    with torch.no_grad():
        return tiny_causal_lm("llama")(input_ids=IDS).logits


EMBEDDING = {**NONUNIFORM, "target_modules": [*TARGETS, "embed_tokens"],
             "rank_pattern": {**NONUNIFORM["rank_pattern"], "embed_tokens": 3}, "alpha_pattern": {"embed_tokens": 5}}


@pytest.mark.parametrize("lora", [NONUNIFORM, {**NONUNIFORM, "use_rslora": True}, {**NONUNIFORM, "lora_bias": True},
                                  EMBEDDING], ids=["patterns", "rslora", "lora-bias", "embedding"])
def test_folded_adapter_gives_the_same_logits_without_patterns(tmp_path, lora):
    src = _adapter(tmp_path / "src", **lora)
    dst = fold_scales(src, tmp_path / "dst")

    config = json.loads((dst / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 8
    assert config["rank_pattern"] == {} and config["alpha_pattern"] == {} and config["use_rslora"] is False
    weights = load_file(dst / "adapter_model.safetensors")
    q0 = "base_model.model.model.layers.0.self_attn.q_proj"
    assert weights[f"{q0}.lora_A.weight"].shape == (8, 64)  # rank 2 padded with zero rows to 8
    assert torch.count_nonzero(weights[f"{q0}.lora_A.weight"][2:]) == 0
    original, folded = _logits(src), _logits(dst)
    assert (original - _base_logits()).abs().max() > 1e-2  # the adapter does change the model
    assert (original - folded).abs().max() < 1e-4


def test_ignoring_the_patterns_would_be_wrong(tmp_path):
    """What a one-scale server does with the unfolded adapter: the reason the fold exists."""
    src = _adapter(tmp_path / "src", **NONUNIFORM)
    weights = load_file(src / "adapter_model.safetensors")
    config = json.loads((src / "adapter_config.json").read_text())
    top = max(w.shape[0] for k, w in weights.items() if k.endswith("lora_A.weight"))
    padded = {k: (torch.nn.functional.pad(w, (0, 0, 0, top - w.shape[0])) if "lora_A" in k
                  else torch.nn.functional.pad(w, (0, top - w.shape[1]))) for k, w in weights.items()}
    naive = tmp_path / "naive"
    naive.mkdir()
    from safetensors.torch import save_file

    save_file(padded, naive / "adapter_model.safetensors", metadata={"format": "pt"})
    config.update(rank_pattern={}, alpha_pattern={}, r=top)
    (naive / "adapter_config.json").write_text(json.dumps(config))
    assert (_logits(src) - _logits(naive)).abs().max() > 1e-3


def test_uniform_adapter_keeps_its_outputs_and_alpha_equal_r_keeps_its_weights(tmp_path):
    src = _adapter(tmp_path / "src", r=4, lora_alpha=12)
    dst = fold_scales(src, tmp_path / "dst")
    assert json.loads((dst / "adapter_config.json").read_text())["lora_alpha"] == 4
    assert (_logits(src) - _logits(dst)).abs().max() < 1e-4

    same = _adapter(tmp_path / "same", r=4, lora_alpha=4)
    folded = load_file(fold_scales(same, tmp_path / "same-folded") / "adapter_model.safetensors")
    original = load_file(same / "adapter_model.safetensors")
    assert folded.keys() == original.keys()
    assert all(torch.equal(folded[k], original[k]) for k in original)


def test_dora_is_refused(tmp_path):
    src = _adapter(tmp_path / "src", r=4, lora_alpha=8, use_dora=True)
    with pytest.raises(LoraEqError, match="DoRA"):
        fold_scales(src, tmp_path / "dst")


def test_a_folder_without_an_adapter_is_refused(tmp_path):
    with pytest.raises(LoraEqError, match="no PEFT adapter"):
        fold_scales(tmp_path, tmp_path / "dst")


def test_cli_and_export_tab_export_a_trained_variant_vllm_safe(tmp_path, tiny_model_dir, cache_home, capsys):
    """`loraeq export RUN/VARIANT --vllm-safe --out DIR`, and the Export tab's checkbox, on a variant
    trained with a non-uniform equalizer."""
    from peft import PeftModel

    from adapters.data import load_dataset, split_heldout
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.runs import create_run, data_info, run_queue
    from loraeq.main import main

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"w{i} w{i + 3} ?"},
                                                     {"role": "assistant", "content": f"paris w{i * 2}"}]}) + "\n"
                            for i in range(24)))
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.2, seed=0)
    from playground.jobs import JobQueue
    from playground.sessions import Session, SessionArea
    from playground.shared import ModelRegistry, Shared

    shared = Shared(ModelRegistry(), JobQueue(), SessionArea(tmp_path / "runs"), None, "fp32")
    session = Session()
    session.run, run = shared.area.new_run(session)
    create_run(run, variants=[Variant("v", "early", Hyper(max_steps=2, learning_rate=5e-2, batch_size=4))],
               split=split, data_info=data_info(dataset, split, str(data)), model=str(tiny_model_dir),
               precision="fp32", bands=2)
    run_queue(run)
    assert json.loads((run / "v" / "adapter_config.json").read_text())["rank_pattern"]  # the case that needs it

    assert main(["export", str(run / "v"), "--vllm-safe", "--out", str(tmp_path / "safe"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "vllm-safe adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "variant.json"} <= {
        p.name for p in (tmp_path / "safe").iterdir()}
    from transformers import AutoModelForCausalLM

    logits = []
    for folder in (run / "v", tmp_path / "safe"):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
        with torch.no_grad():
            logits.append(PeftModel.from_pretrained(base, folder).eval()(input_ids=IDS).logits)
    assert (logits[0] - logits[1]).abs().max() < 1e-4
    assert main(["export", str(run / "v"), "--vllm-safe", "--out", str(tmp_path / "safe")]) == 2  # not empty

    import zipfile

    from playground import tab_export

    download, card = tab_export.export_zip(shared, "v", True, session)
    with zipfile.ZipFile(download) as z:
        config = json.loads(z.read("adapter_config.json"))
        assert "vLLM" in z.read("README.md").decode()
    assert config["r"] == config["lora_alpha"] and config["rank_pattern"] == {} and config["alpha_pattern"] == {}
    plain, _ = tab_export.export_zip(shared, "v", False, session)
    with zipfile.ZipFile(plain) as z:
        assert json.loads(z.read("adapter_config.json"))["rank_pattern"]


# ---- what an export names and says -----------------------------------------------------------


def _fact_rows(path, n: int = 24):
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"w{i} w{i + 3} ?"},
                                                     {"role": "assistant", "content": f"paris w{i * 2}"}]}) + "\n"
                            for i in range(n)))
    return path


def _trained_run(tmp_path, model: str | None, base=None, precision: str = "fp32"):
    from adapters.data import load_dataset, split_heldout
    from adapters.shape.variants import Hyper, Variant
    from adapters.train.runs import create_run, data_info, run_queue

    data = _fact_rows(tmp_path / "data.jsonl")
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.25, seed=0)
    run = tmp_path / "run"
    create_run(run, variants=[Variant("v", "uniform", Hyper(max_steps=1, rank=2, batch_size=4))], split=split,
               data_info=data_info(dataset, split, str(data)), model=model, precision=precision, bands=2)
    run_queue(run, base=base)
    return run


def _load_in_a_fresh_process(adapter: Path, env: dict) -> str:
    """PeftModel.from_pretrained in a new interpreter, the base named only by the adapter's config."""
    import subprocess
    import sys

    code = ("import json, sys; from peft import PeftModel; from transformers import AutoModelForCausalLM; "
            "name = json.load(open(sys.argv[1] + '/adapter_config.json'))['base_model_name_or_path']; "
            "m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(name), sys.argv[1]); "
            "print(type(m).__name__, name)")
    proc = subprocess.run([sys.executable, "-c", code, str(adapter)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def test_an_export_of_the_embedded_model_names_its_hub_id(tmp_path, real_model, capsys):
    """Trained on the embedded GGUF (converted into LoRA EQ's cache): the exported config names the
    Hub id, never the cache folder PEFT saved, in the zip and in the vLLM-safe copy."""
    import zipfile

    from adapters.base.models import EMBEDDED_HUB_ID
    from adapters.cache import cache_dir
    from loraeq.main import main

    run = _trained_run(tmp_path, None, base=real_model)
    saved = json.loads((run / "v" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert saved != EMBEDDED_HUB_ID  # what PEFT wrote: the local folder the base was loaded from
    assert main(["export", str(run / "v"), "--adapter", "--out", str(tmp_path / "v.zip")]) == 0
    assert main(["export", str(run / "v"), "--vllm-safe", "--out", str(tmp_path / "safe")]) == 0
    with zipfile.ZipFile(tmp_path / "v.zip") as z:
        zipped = json.loads(z.read("adapter_config.json"))
        card = z.read("README.md").decode()
    safe = json.loads((tmp_path / "safe" / "adapter_config.json").read_text())
    for config in (zipped, safe):
        assert config["base_model_name_or_path"] == EMBEDDED_HUB_ID
        assert str(cache_dir()) not in json.dumps(config)
    assert f"base_model: {EMBEDDED_HUB_ID}" in card and "## Results" not in card  # no proof, no eval set yet


def test_an_export_loads_anywhere_by_the_users_path_and_its_card_carries_the_results(tmp_path, tiny_model_dir,
                                                                                        cache_home, capsys):
    """Trained on a folder the user named: in a fresh process with an empty cache, plain PEFT loads
    the exported adapter from its config alone; the card lists the proof's verdict and the eval set."""
    import os
    import zipfile

    from loraeq.main import main

    run = _trained_run(tmp_path, str(tiny_model_dir))
    assert main(["eval", str(run), "--json"]) == 0
    assert main(["evalset", str(run), "--set", "heldout", "--max-new-tokens", "4", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out.splitlines()[0])["variants"][0]["verdict"]
    assert main(["export", str(run / "v"), "--adapter", "--out", str(tmp_path / "v.zip")]) == 0
    out = tmp_path / "unzipped"
    with zipfile.ZipFile(tmp_path / "v.zip") as z:
        z.extractall(out)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tiny_model_dir.resolve())
    card = (out / "README.md").read_text()
    results = card[card.index("## Results"):card.index("## Use")]
    assert "proof: v: " in results and verdict in results, results
    assert "eval set heldout: v passes" in results, results
    env = {**os.environ, "LORAEQ_CACHE": str(tmp_path / "empty-cache"), "HF_HUB_OFFLINE": "1"}
    loaded, name = _load_in_a_fresh_process(out, env).split()
    assert loaded.startswith("PeftModel") and name == str(tiny_model_dir.resolve())

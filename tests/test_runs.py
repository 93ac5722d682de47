"""The training queue and run folders on a tiny model: failures, cancel, kill -9 and resume, export."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile

import pytest
import torch

from adapters.base.loading import load_model
from adapters.data import load_dataset, split_heldout
from adapters.errors import LoraEqError
from adapters.shape.variants import Hyper, Variant
from adapters.share.export import export_adapter_zip, export_merged
from adapters.train.runs import create_run, data_info, request_cancel, run_queue, run_status
from adapters.train.training import read_log
from conftest import write_chats


def _write_data(path, n=40):
    return write_chats(path, ((f"w{i % 30} w{(i * 7) % 30} ?", f"w{(i * 3) % 50} paris w{i % 11}",
                               {"category": ["a", "b"][i % 2]}) for i in range(n)))


@pytest.fixture
def tiny_run(tmp_path, tiny_model_dir, cache_home):
    data = _write_data(tmp_path / "data.jsonl")
    dataset = load_dataset(data)
    split = split_heldout(dataset, fraction=0.2, seed=0)

    def make(variants, name="run"):
        create_run(tmp_path / name, variants=variants, split=split, data_info=data_info(dataset, split, str(data)),
                   model=str(tiny_model_dir), precision="fp32", bands=2)
        return tmp_path / name

    return make


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failing_variant_is_marked_and_the_queue_goes_on(tiny_run):
    bad_grid = {"roles": ["nope"], "bands": [[0, 1]], "strengths": [[1.0]]}
    run = tiny_run([
        Variant("broken", bad_grid, Hyper(max_steps=2)),
        Variant("fine", "attention", Hyper(max_steps=3, batch_size=4)),
    ])
    results = run_queue(run)
    assert [r["status"] for r in results] == ["failed", "done"]
    status = run_status(run)
    assert status["variants"][0]["status"] == "failed" and "nope" in status["variants"][0]["error"]
    assert status["variants"][1]["status"] == "done" and len(status["variants"][1]["losses"]) == 3
    fine = run / "fine"
    for name in ("adapter_config.json", "adapter_model.safetensors", "variant.json", "train_log.jsonl", "metrics.json"):
        assert (fine / name).is_file(), name
    record = json.loads((fine / "variant.json").read_text())
    assert record["base"]["fingerprint"] and record["data"]["fingerprint"] and record["versions"]["peft"]
    assert record["equalizer_grid"]["roles"] and record["hyper"]["max_steps"] == 3
    assert not (run / "broken" / "adapter_model.safetensors").exists()


def test_same_run_resumes_but_a_different_one_is_refused(tiny_run, tmp_path):
    variants = [Variant("v", "uniform", Hyper(max_steps=1))]
    run = tiny_run(variants)
    assert tiny_run(variants) == run  # same plan: accepted, for resuming
    with pytest.raises(LoraEqError, match="different run"):
        tiny_run([Variant("v", "uniform", Hyper(max_steps=2))])


def test_cancel_stops_the_queue(tiny_run):
    run = tiny_run([
        Variant("long", "uniform", Hyper(max_steps=5000, batch_size=2, save_steps=1000)),
        Variant("next", "uniform", Hyper(max_steps=5)),
    ])
    worker = threading.Thread(target=run_queue, args=(run,))
    worker.start()
    deadline = time.time() + 120
    while time.time() < deadline and len([r for r in read_log(run / "long" / "train_log.jsonl") if "loss" in r]) < 3:
        time.sleep(0.05)
    request_cancel(run)
    worker.join(timeout=120)
    assert not worker.is_alive()
    states = {v["name"]: v["status"] for v in run_status(run)["variants"]}
    assert states == {"long": "cancelled", "next": "cancelled"}
    steps = [r["step"] for r in read_log(run / "long" / "train_log.jsonl") if "loss" in r]
    assert 3 <= steps[-1] < 5000


def test_kill_9_then_resume(tmp_path, tiny_model_dir, cache_home):
    data = _write_data(tmp_path / "data.jsonl")
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([
        {"name": "first", "equalizer": "uniform", "hyper": {"max_steps": 12, "batch_size": 4}},
        {"name": "second", "equalizer": "mlp", "hyper": {"max_steps": 90, "batch_size": 2, "save_steps": 10}},
    ]))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "loraeq", "train", "--data", str(data), "--sweep", str(sweep),
           "--out", str(run), "--model", str(tiny_model_dir), "--precision", "fp32", "--bands", "2", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline:
        steps = [r["step"] for r in read_log(run / "second" / "train_log.jsonl") if "loss" in r]
        if steps and steps[-1] >= 25 and any((run / "second" / "checkpoints").glob("checkpoint-*")):
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = [r["step"] for r in read_log(run / "second" / "train_log.jsonl") if "loss" in r][-1]
    assert killed_at < 90
    assert {v["name"]: v["status"] for v in run_status(run)["variants"]} == {"first": "done", "second": "interrupted"}
    assert not (run / "second" / "metrics.json").exists()
    first_adapter = _sha(run / "first" / "adapter_model.safetensors")
    first_metrics = json.loads((run / "first" / "metrics.json").read_text())

    again = subprocess.run([sys.executable, "-m", "loraeq", "train", "--resume", str(run), "--json"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    out = json.loads(again.stdout)
    assert [v["status"] for v in out["variants"]] == ["done", "done"]
    log = read_log(run / "second" / "train_log.jsonl")
    resumed = [r for r in log if r.get("event") == "resume"]
    assert len(resumed) == 1
    ckpt_step = int(resumed[0]["checkpoint"].split("-")[1])
    assert 10 <= ckpt_step <= killed_at
    after = [r["step"] for r in log[log.index(resumed[0]):] if "loss" in r]
    assert after[0] == ckpt_step + 1 and after[-1] == 90
    assert _sha(run / "first" / "adapter_model.safetensors") == first_adapter
    # Not trained again; its own training questions are asked once the run's queue is done.
    again_metrics = json.loads((run / "first" / "metrics.json").read_text())
    assert {k: v for k, v in again_metrics.items() if k != "train_recall"} == first_metrics
    assert again_metrics["train_recall"]["asked"] > 0


def test_export_adapter_zip_and_merged_model(tiny_run, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tiny_run([Variant("v", "uniform", Hyper(max_steps=4, learning_rate=5e-2, batch_size=4))])
    run_queue(run)
    archive = export_adapter_zip(run / "v", tmp_path / "out" / "v.zip")
    names = set(zipfile.ZipFile(archive).namelist())
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "variant.json"} <= names
    card = zipfile.ZipFile(archive).read("README.md").decode()
    assert "Equalizer" in card and "| band |" in card

    merged_dir = export_merged(run / "v", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = load_model(json.loads((run / "run.json").read_text())["model"], "fp32")
    tuned = PeftModel.from_pretrained(base.model, run / "v").eval()
    ids = torch.tensor([[4, 120, 7, 9, 5, 4, 121]])
    with torch.no_grad():
        a = merged.generate(ids, max_new_tokens=8, do_sample=False)
        b = tuned.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
        assert torch.allclose(merged(ids).logits, tuned(input_ids=ids).logits, atol=1e-4)
    assert torch.equal(a, b)
    with pytest.raises(LoraEqError, match="not empty"):
        export_merged(run / "v", tmp_path / "merged")


def test_model_card_front_matter_and_its_use_snippet_runs(tiny_run, tmp_path):
    """The card's "Use" code loads this adapter on its base with plain transformers + peft, as written."""
    import re

    import yaml

    from adapters.base.models import EMBEDDED_HUB_ID, ModelSource
    from adapters.share.export import model_card, split_front_matter

    run = tiny_run([Variant("v", "uniform", Hyper(max_steps=2, batch_size=4))])
    run_queue(run)
    head, body = split_front_matter(model_card(run / "v"))
    meta = yaml.safe_load(head)
    assert meta == {"library_name": "peft", "tags": ["lora", "loraeq"]}  # a local folder: no Hub base_model
    assert body.startswith("# v\n")
    code = re.search(r"```python\n(.*?)```", body, re.S).group(1).replace("path/to/this/folder", str(run / "v"))
    scope: dict = {}
    exec(code, scope)  # noqa: S102 - the snippet a user copies
    assert type(scope["model"]).__name__ == "PeftModelForCausalLM"
    assert sum(p.numel() for n, p in scope["model"].named_parameters() if "lora_" in n) > 0

    embedded = ModelSource(id=f"{EMBEDDED_HUB_ID} (embedded SmolLM2-135M-Instruct.Q4_1.gguf)", kind="gguf",
                           path=tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert embedded.hub_id == EMBEDDED_HUB_ID
    assert ModelSource(id="/models/x.gguf", kind="gguf").hub_id is None
    assert ModelSource(id="Qwen/Qwen2.5-0.5B", kind="hub").hub_id == "Qwen/Qwen2.5-0.5B"
    assert split_front_matter("# no front matter") == ("", "# no front matter")


def test_export_refuses_an_unfinished_variant(tiny_run):
    run = tiny_run([Variant("v", "uniform", Hyper(max_steps=1))])
    with pytest.raises(LoraEqError, match="no trained adapter"):
        export_adapter_zip(run / "v", run / "x.zip")


def test_the_train_command_runs_distributed(tmp_path, tiny_model_dir, cache_home):
    """Two CPU processes under torchrun (what `accelerate launch` uses for several GPUs): both train
    their share of the batches, only the main one writes the run and prints the report."""
    import shutil

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    data = _write_data(tmp_path / "data.jsonl")
    run = tmp_path / "run"
    proc = subprocess.run(
        [torchrun, "--nproc_per_node", "2", "-m", "loraeq", "train", "--data", str(data), "--preset", "uniform",
         "--out", str(run), "--model", str(tiny_model_dir), "--precision", "fp32", "--max-steps", "4", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and reports[0]["variants"][0]["status"] == "done"
    log = read_log(run / "uniform" / "train_log.jsonl")
    assert [r["world_size"] for r in log if r.get("event") == "start"] == [2]
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == [1, 2, 3, 4]  # one log line per step, from the main process only
    assert (run / "uniform" / "adapter_model.safetensors").is_file()

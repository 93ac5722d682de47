"""End to end in Chromium with an encoder as the base: the Classify tab replaces Compare, the Data
tab validates text -> label rows, the Train tab trains the probe and a variant, Classify labels a
text per column. A tiny BERT built in the test keeps it fast; screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_browser import ROOT, _free_port, _shot, _tab, _upload, browser, page  # noqa: F401  (fixtures)
from test_encoders import write_rows, write_tiny_encoder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def encoder_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("encoder-app")
    model = write_tiny_encoder(root / "bert")
    port = _free_port()
    log = open(root / "app.log", "w")
    env = {**os.environ, "LORAEQ_CACHE": str(root / "cache"), "LORAEQ_NO_PRELOAD": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--runs-dir", str(root / "runs"),
                             "--model", str(model), "--precision", "fp32"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                break
        except OSError:
            assert proc.poll() is None, Path(log.name).read_text()[-3000:]
            time.sleep(1)
    yield {"url": url, "rows": write_rows(root / "rows.jsonl")}
    proc.terminate()
    proc.wait(timeout=30)


def test_encoder_flow_in_chromium(encoder_server, page):  # noqa: F811
    page.goto(encoder_server["url"])
    summary = page.locator("#model-summary")
    summary.wait_for(timeout=60_000)
    assert "2 layers x 6 roles = 12 tuning points" in summary.inner_text()
    assert page.get_by_role("tab", name="Classify").is_visible()
    assert not page.get_by_role("tab", name="Compare").is_visible()

    _tab(page, "Data")
    _upload(page, encoder_server["rows"])
    page.get_by_role("button", name="Validate").click()
    report = page.locator("#data-report")
    report.get_by_text(re.compile("rows in")).wait_for(timeout=120_000)
    assert "valid 60" in report.inner_text(), report.inner_text()

    _tab(page, "Equalizer & Train")
    page.get_by_role("button", name="Apply preset").click()
    page.wait_for_timeout(1000)
    page.get_by_label("Max steps").fill("5")
    page.get_by_role("button", name="Add variant").click()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Start training").click()
    progress = page.locator("#train-progress")
    progress.get_by_text(re.compile(r"variant-1\s+done")).wait_for(timeout=300_000)
    assert re.search(r"probe\s+done", progress.inner_text()), progress.inner_text()

    _tab(page, "Classify")
    page.locator("#classify-text textarea").fill("w1 w20 w30")
    page.get_by_role("button", name="Classify", exact=True).click()
    table = page.locator("#classify-table")
    table.locator("[data-testid='cell-1-0']").get_by_text("variant-1").wait_for(timeout=120_000)
    assert "probe" in table.locator("[data-testid='cell-0-0']").inner_text()
    _shot(page, "encoder-classify")

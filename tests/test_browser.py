"""End to end in a real browser: Debian's Chromium driven by Playwright against the served app.

Screenshots of every tab are saved to test-artifacts/ (kept by CI as the run's artifacts).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
DOLLY = ROOT / "datasets" / "dolly-15k-sample.jsonl"
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    port = _free_port()
    log = open(tmp_path_factory.mktemp("log") / "app.log", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--runs-dir", str(runs)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                break
        except OSError:
            assert proc.poll() is None, Path(log.name).read_text()[-3000:]
            time.sleep(1)
    yield {"url": url, "runs": runs}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "install Debian's chromium (scripts/setup.sh does)"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LD_PRELOAD", raising=False)  # `make test` preloads a malloc for PyTorch; the browser keeps its own
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
            yield b
            b.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _upload(page, path: Path) -> None:
    """Put a file in the Data tab's upload box and wait until it has landed: the box then lists it by name
    (the name's text is split in two spans, stem and extension, so the list cell's label is what says it)."""
    box = page.locator("#data-upload")
    box.locator("input[type=file]").set_input_files(str(path))
    box.get_by_label(Path(path).name, exact=True).wait_for(timeout=60_000)


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


@pytest.fixture
def page(browser, request):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    yield page
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        _shot(page, f"failed-{request.node.name}")
    page.close()


def test_full_flow_in_chromium(server, page):
    page.goto(server["url"])
    summary = page.locator("#model-summary")
    summary.wait_for(timeout=60_000)
    assert "30 layers x 7 roles = 210 tuning points" in summary.inner_text()
    page.locator("#tuning-heatmap img").wait_for(timeout=30_000)  # drawn once the page has opened
    _shot(page, "1-model")

    _tab(page, "Data")
    _upload(page, DOLLY)
    page.get_by_role("button", name="Validate").click()
    report = page.locator("#data-report")
    report.get_by_text(re.compile("rows in")).wait_for(timeout=120_000)
    text = report.inner_text()
    assert "valid 160" in text and "rejected 0" in text, text
    assert page.get_by_text("creative_writing").first.is_visible()
    _shot(page, "2-data")

    _tab(page, "Equalizer & Train")
    page.get_by_role("button", name="Apply preset").click()
    page.wait_for_timeout(1500)
    grid = page.locator("#equalizer-grid img")
    grid.wait_for()
    # Brush 0, then click the first cell (band 0 x q_proj): it must read "off" in the table.
    _switch_off_first_cell(page)
    words = page.locator("#equalizer-table").inner_text().split()
    first_band = words[words.index("0-7") + 1: words.index("0-7") + 8]
    assert first_band == ["0", "1", "1", "1", "1", "1", "1"], words  # q_proj off, the rest untouched
    page.get_by_label("Max steps").fill("5")
    page.get_by_label("Batch size").fill("2")
    page.get_by_role("button", name="Add variant").click()
    page.wait_for_timeout(1000)
    page.get_by_role("button", name="Start training").click()
    progress = page.locator("#train-progress")
    progress.get_by_text(re.compile(r"variant-1\s+done")).wait_for(timeout=300_000)
    _shot(page, "3-train")

    _tab(page, "Compare")
    page.get_by_role("button", name="Load my run's variants").click()
    page.get_by_role("checkbox", name="variant-1").wait_for(timeout=120_000)
    page.get_by_label("Reference answer (optional, for scoring)").fill("Your dog is called Biscuit.")
    turns = ["My dog is called Biscuit.", "What is my dog called?"]
    page.locator("#chat-input textarea").fill(turns[0])
    page.locator("#chat-send").click()
    page.locator("#pass-1").wait_for(timeout=180_000)  # vote buttons show once every column finished
    page.locator("#chat-info-1").get_by_text(re.compile(r"\d+ tokens")).wait_for(timeout=30_000)
    page.locator("#chat-input textarea").fill(turns[1])
    page.locator("#chat-input textarea").press("Enter")  # Enter sends too
    page.locator("#chat-col-1 [data-testid='bot']").nth(1).wait_for(timeout=180_000)
    page.locator("#pass-1").wait_for(timeout=180_000)
    shown = {i: [" ".join(t.split()) for t in page.locator(f"#chat-col-{i} [data-testid='bot']").all_inner_texts()]
             for i in range(2)}
    tokens = {i: int(re.search(r"(\d+) tokens", page.locator(f"#chat-info-{i}").inner_text()).group(1)) for i in range(2)}
    assert page.get_by_text(re.compile(r"to reference \d\.\d{3}")).first.is_visible()  # the votes came with it
    _check_against_the_engine(server["runs"], turns, shown, tokens)
    page.locator("#pass-1").click()
    first_row = page.locator("#leaderboard [data-testid='cell-0-0']")
    first_row.get_by_text("variant-1").wait_for(timeout=30_000)
    _shot(page, "4-compare")
    page.get_by_text("Blind battle").click()
    page.locator("#battle-input textarea").fill("Name a colour.")
    page.locator("#battle-send").click()
    page.locator("#battle-vote-a").wait_for(timeout=180_000)
    page.locator("#battle-vote-a").click()
    page.locator("#battle-reveal").get_by_text(re.compile("Model A was")).wait_for(timeout=30_000)
    _shot(page, "4-battle")

    _tab(page, "Proof")
    page.get_by_label("Held-out rows to use (0 = all)").fill("8")
    page.get_by_role("button", name="Run the proof").click()
    page.locator("#proof-status").get_by_text(re.compile(r"variant-1: ")).wait_for(timeout=900_000)
    verdict = page.locator("#proof-status").inner_text()
    assert re.search(r"variant-1: (learned|memorized|closer (?:in|to the data's) wording|no effect|worse|inconclusive)", verdict), verdict
    report = page.frame_locator("#proof-report iframe")
    report.get_by_role("heading", name="Proof of learning").wait_for(timeout=30_000)
    report.get_by_text("variant-1").first.wait_for(timeout=5_000)
    _shot(page, "5-proof")

    _tab(page, "Export")
    page.get_by_role("button", name="Refresh").click()
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Adapter (PEFT zip)").click()
    page.locator("#model-card").get_by_text(re.compile("Equalizer")).first.wait_for(timeout=120_000)
    _shot(page, "6-export")


def _switch_off_first_cell(page) -> None:
    """Brush 0, then a click on the grid's first cell (band 0 x q_proj); returns once the table shows it off."""
    from playwright.sync_api import expect

    grid = page.locator("#equalizer-grid img")
    grid.wait_for()
    brush = page.get_by_label("number input for Brush strength")
    brush.fill("0")
    brush.press("Enter")
    box = grid.bounding_box()
    natural = page.evaluate("(img) => [img.naturalWidth, img.naturalHeight]", grid.element_handle())
    sx, sy = box["width"] / natural[0], box["height"] / natural[1]
    grid.click(position={"x": (96 + 40) * sx, "y": (34 + 20) * sy})
    expect(page.locator("#equalizer-table")).to_contain_text(re.compile(r"0-7\s+0\s"), timeout=60_000)  # applied


def _check_against_the_engine(runs: Path, turns: list[str], shown: dict, tokens: dict) -> None:
    """Each column's replies in the page are the engine's greedy answers to that column's own
    history, token for token, made as the page makes them (one batched call per turn), and the
    second differs from the answer without the first turn."""
    from adapters.infer.decoding import Sampling
    from adapters.infer.engine import CompareEngine

    engine = CompareEngine.from_run(next(runs.glob("*/run-*")))
    greedy = Sampling(max_new_tokens=96)  # the form's default
    columns = ["base", "variant-1"]
    try:
        first = engine.answer(turns[0], columns, sampling=greedy)
        history = {a.label: [{"role": "user", "content": turns[0]}, {"role": "assistant", "content": a.text}]
                   for a in first}
        second = engine.answer(turns[1], columns, history=history, sampling=greedy)
        alone = engine.answer(turns[1], columns, sampling=greedy)
    finally:
        engine.close()
    for i, column in enumerate(columns):
        assert shown[i] == [" ".join(a.text.split()) for a in (first[i], second[i])], (column, shown[i])
        assert tokens[i] == second[i].tokens, (column, tokens[i], second[i].tokens)
        assert alone[i].token_ids != second[i].token_ids, (column, alone[i].text)


def _validate_sample(page, name: str) -> None:
    _tab(page, "Data")
    page.get_by_label("...or a sample dataset").click()
    page.get_by_role("option", name=name).click()
    page.get_by_role("button", name="Validate").click()
    page.locator("#data-report").get_by_text(re.compile("rows in")).wait_for(timeout=120_000)


def test_the_data_tab_shows_the_split_and_rows_and_a_suggestion_holds_add_variant(server, page):
    from playwright.sync_api import expect

    page.goto(server["url"])
    page.locator("#model-summary").wait_for(timeout=60_000)
    _validate_sample(page, "fictional-facts.jsonl")
    split = page.locator("#data-split")
    split.get_by_text(re.compile(r"Held out for the proof: \d+ of \d+ rows")).wait_for(timeout=60_000)
    assert "grouped by fact_id" in split.inner_text() and "auto: 10% of the rows" in split.inner_text()
    preview = page.locator("#data-preview")
    preview.get_by_text("What is the capital of Varnis?").first.wait_for(timeout=30_000)
    page.get_by_label("Held-out share (auto or a fraction, e.g. 0.2)").fill("0.2")
    page.get_by_role("button", name="Apply the split").click()
    split.get_by_text("0.2 of the rows, as set").wait_for(timeout=60_000)
    _shot(page, "7-data-split")

    _tab(page, "Equalizer & Train")
    add = page.locator("#add-variant")
    expect(add).to_be_enabled()
    page.locator("#suggest").click()
    expect(add).to_be_disabled(timeout=10_000)  # held while the suggestion runs: it would take the old grid
    _shot(page, "8-suggesting")
    expect(add).to_be_enabled(timeout=300_000)
    page.get_by_text(re.compile(r"Suggested from \d+ examples")).wait_for(timeout=30_000)


def test_a_reload_mid_training_finds_the_progress_the_grid_and_the_variants(server, page):
    from playwright.sync_api import expect

    page.goto(server["url"])
    page.locator("#model-summary").wait_for(timeout=60_000)
    _validate_sample(page, "autumn-voice.jsonl")
    _tab(page, "Equalizer & Train")
    table = page.locator("#equalizer-table")
    _switch_off_first_cell(page)
    page.get_by_label("Name", exact=True).fill("kept")
    page.get_by_label("Max steps").fill("5000")  # still training when the page is reloaded
    page.get_by_label("Batch size").fill("1")
    page.get_by_role("button", name="Add variant").click()
    expect(page.locator("#variants-table")).to_contain_text("kept", timeout=30_000)
    page.get_by_role("button", name="Start training").click()
    progress = page.locator("#train-progress")
    progress.get_by_text(re.compile(r"kept\s+running .* [1-9]\d*/5000")).wait_for(timeout=300_000)

    page.reload()
    page.locator("#model-summary").wait_for(timeout=60_000)
    _tab(page, "Equalizer & Train")
    progress.get_by_text(re.compile(r"kept\s+running .* [1-9]\d*/5000")).wait_for(timeout=60_000)
    assert "Run run-" in progress.inner_text()
    expect(page.locator("#variants-table")).to_contain_text("kept", timeout=30_000)
    words = table.inner_text().split()
    assert words[words.index("0-7") + 1: words.index("0-7") + 3] == ["0", "1"], words  # q_proj still off
    _shot(page, "9-reloaded")
    page.get_by_role("button", name="Cancel").click()
    progress.get_by_text(re.compile(r"kept\s+(interrupted|cancelled)")).wait_for(timeout=120_000)  # the worker stopped


def test_a_small_search_shows_its_trials_and_its_winner_chats_as_a_variant(server, page):
    """Two trials (the auto defaults and one drawn, each a third of an epoch at rank 4) on a run
    trained here; the confirmed winner becomes a variant the Compare tab answers with."""
    from playwright.sync_api import expect

    page.goto(server["url"])
    page.locator("#model-summary").wait_for(timeout=60_000)
    _validate_sample(page, "fictional-facts.jsonl")
    _tab(page, "Equalizer & Train")
    page.get_by_label("Max steps").fill("2")
    page.get_by_label("Batch size").fill("2")
    page.get_by_role("button", name="Add variant").click()
    expect(page.locator("#variants-table")).to_contain_text("variant-1", timeout=30_000)
    page.get_by_role("button", name="Start training").click()
    page.locator("#train-progress").get_by_text(re.compile(r"variant-1\s+done")).wait_for(timeout=300_000)

    _tab(page, "Search")
    expect(page.locator("#search-run input")).to_have_value(re.compile(r"^run-"), timeout=30_000)  # the session's run
    page.locator("#search-budget input").fill("2")
    page.locator("#search-settings textarea").fill("epochs=0.3\nrank=4")
    page.locator("#search-start").click()
    status, trials = page.locator("#search-status"), page.locator("#search-trials")
    expect(trials).to_contain_text("default", timeout=600_000)  # trial 0 listed while the search runs
    status.get_by_text(re.compile(r"2 trials done of 2 .*· done")).wait_for(timeout=1_500_000)
    expect(trials).to_contain_text("winner")
    winner = page.locator("#search-winner").inner_text()
    assert re.search(r"Winner: trial [01]: \d+% of the search checks; on \d+ checks it never saw \d+% "
                     r"\(95% CI \d+%-\d+%\) against the default's \d+%", winner), winner
    page.locator("#search-grid img").wait_for(timeout=30_000)
    _shot(page, "10-search")

    page.locator("#search-make-variant").click()  # the trial box says best
    status.get_by_text("The new variant is ready").wait_for(timeout=300_000)
    expect(trials).to_contain_text(re.compile(r"variant search-[01]"), timeout=30_000)

    _tab(page, "Compare")
    page.get_by_role("button", name="Load my run's variants").click()
    adopted = page.get_by_role("checkbox", name=re.compile(r"search-[01]"))
    adopted.wait_for(timeout=120_000)
    expect(adopted).to_be_checked()
    page.locator("#chat-input textarea").fill("What is the capital of Varnis?")
    page.locator("#chat-send").click()
    page.locator("#chat-col-2 [data-testid='bot']").first.wait_for(timeout=180_000)  # base, variant-1, search-N
    assert page.locator("#chat-col-2 [data-testid='bot']").first.inner_text().strip()
    _shot(page, "11-search-variant-chat")

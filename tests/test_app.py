"""The web app served for real on a tiny model and driven through its API with gradio_client."""

from __future__ import annotations

import json
import socket
import urllib.request

import pytest

from playground.app import build_app, launch_settings, make_shared, parse_args
from playground.plots import analysis_heatmap, cell_at, equalizer_image
from playground.tab_model import cells_table, model_summary
from playground.users import parse_auth


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def shared(tiny_model_dir, cache_home, tmp_path):
    return make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"))


@pytest.fixture
def served(shared):
    demo = build_app(shared)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **launch_settings(shared))
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_defaults_listen_on_localhost_7860():
    args = parse_args([])
    assert (args.host, args.port, args.model, args.precision, args.share) == ("127.0.0.1", 7860, None, "auto", False)
    assert args.runs_dir is None  # resolved at start: playground.storage.runs_location
    assert parse_auth("ann:secret").check("ann", "secret")
    with pytest.raises(Exception, match="USER:PASS"):
        parse_auth("nopassword")


def test_summary_and_table_come_from_the_analysis(shared):
    loaded = shared.registry.get(shared.default_model, "fp32")
    assert "2 layers x 7 roles = 14 tuning points" in model_summary(loaded)
    table = cells_table(loaded)
    assert len(table) == 14 and table["params"].sum() == sum(c["params"] for c in loaded.analysis.cells)


def test_heatmap_shows_every_layer_and_role(shared):
    analysis = shared.registry.get(shared.default_model, "fp32").analysis
    image = analysis_heatmap(analysis, "effective_rank").axes[0].images[0].get_array()
    assert image.shape == (2, 7)
    scaled = analysis_heatmap(analysis, "spectral", per_role=True).axes[0].images[0].get_array()
    assert list(scaled.max(axis=0)) == pytest.approx([1.0] * 7)


def test_equalizer_clicks_map_back_to_cells(shared):
    from adapters.shape.equalizer import preset

    analysis = shared.registry.get(shared.default_model, "fp32").analysis
    eq = preset("uniform", analysis.roles, [[0], [1]])
    image = equalizer_image(eq)
    assert image.size[0] > 7 * 80
    assert cell_at(eq, 96 + 92 * 3 + 10, 34 + 46 + 10) == (1, 3)
    assert cell_at(eq, 5, 5) is None and cell_at(eq, 96 + 92 * 7 + 1, 40) is None


def test_served_app_runs_the_stages_through_its_api(served, shared):
    from gradio_client import Client

    assert urllib.request.urlopen(served, timeout=30).status == 200
    client = Client(served, verbose=False)
    assert "plot" in str(client.predict("stable_rank", True, api_name="/heatmap"))
    report, issues, rejects, mix = client.predict(None, "dolly-15k-sample.jsonl", "auto", "", 64,
                                                     api_name="/validate")
    assert "valid **160**" in report
    categories = {row[0] for row in mix["data"]}
    assert len(categories) == 8 and "creative_writing" in categories
    quota = mix["headers"].index("quota_per_1000")
    mix["data"] = [row[:quota] + [100 if row[0] == "creative_writing" else 0] + row[quota + 1:] for row in mix["data"]]
    realized = client.predict(mix, 1000, api_name="/preview_mix")
    realized = realized.get("value", realized)  # an update that also shows the table
    counts = {row[0]: row[realized["headers"].index("count")] for row in realized["data"]}
    assert sum(counts.values()) == 1000 and counts["creative_writing"] >= 100  # 6 rows, yet 100 per 1000
    _, grid = client.predict(1, "q_proj", 0.5, api_name="/set_cell")
    assert grid["data"][1][2] == 0.5 and grid["data"][0][2] == 1
    variants, _ = client.predict("my variant", 4, 1e-3, 2, 4, api_name="/add_variant")
    row = dict(zip(variants["headers"], variants["data"][0]))
    assert (row["name"], row["equalizer"], row["rank"]) == ("my-variant", "custom grid", 4)
    assert row["steps"] == 2 and row["trainable_params"] and row["size"].endswith("x uniform")  # what it will be, first


def test_two_sessions_keep_their_uploads_apart(served, shared, tmp_path):
    from gradio_client import Client

    first, second = Client(served, verbose=False), Client(served, verbose=False)
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "w1"},
                                             {"role": "assistant", "content": "w2"}]}) + "\n")
    from gradio_client import handle_file

    first.predict(handle_file(str(data)), None, "auto", "", 64, api_name="/validate")
    second.predict(None, "autumn-voice.jsonl", "auto", "", 64, api_name="/validate")
    sessions = [p for p in shared.runs_dir.iterdir() if p.is_dir()]
    uploads = sorted(sorted(f.name for f in (p / "uploads").iterdir()) for p in sessions)
    assert uploads == [["autumn-voice.jsonl"], ["mine.jsonl"]]


def _wait_for_finished_variant(run_root, timeout: float = 240.0) -> None:
    import time

    from adapters.train.runs import run_status

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [v["status"] for run in run_root.glob("run-*") for v in run_status(run)["variants"]]
        if states and all(state not in ("queued", "running") for state in states):
            assert states == ["done"], states
            return
        time.sleep(1.0)
    raise AssertionError(f"no finished variant under {run_root} after {timeout:.0f} s")


def test_two_sessions_see_only_their_own_votes(served, shared, tmp_path):
    """Two visitors each train a variant, ask, and vote: each leaderboard holds only its own vote."""
    from gradio_client import Client

    clients = {"pass": Client(served, verbose=False), "fail": Client(served, verbose=False)}
    for client in clients.values():
        client.predict(None, "autumn-voice.jsonl", "auto", "", 64, api_name="/validate")
        client.predict("mine", 4, 1e-3, 2, 2, api_name="/add_variant")
        client.predict(api_name="/start_training")
    sessions = [p for p in shared.runs_dir.iterdir() if p.is_dir()]
    assert len(sessions) == 2
    for folder in sessions:
        _wait_for_finished_variant(folder)
    for verdict, client in clients.items():
        _, _, grid, board, _ = client.predict(api_name="/load_variants")
        assert not any(c not in ("", None) for row in board["data"] for c in row), board  # no vote yet
        client.predict("w1 w2", "", ["mine"], 0.0, 1.0, 4, 0, None, grid, "", api_name="/ask")
        board, _ = client.predict("my note", api_name=f"/{verdict}_1")
        rows = {row[board["headers"].index("variant")]: row for row in board["data"]}
        assert list(rows) == ["mine"], board
    for verdict, client in clients.items():  # after both voted, each still sees only its own vote
        board = client.predict(api_name="/load_variants")[3]
        assert len(board["data"]) == 1, board
        counts = dict(zip(board["headers"], board["data"][0]))
        assert (counts["votes"], counts["passes"], counts["fails"]) == ((1, 1, 0) if verdict == "pass" else (1, 0, 1))


def test_spaces_settings_are_honoured(monkeypatch):
    monkeypatch.setenv("GRADIO_SERVER_NAME", "0.0.0.0")
    monkeypatch.setenv("GRADIO_SERVER_PORT", "7861")
    args = parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 7861)


def test_requirements_match_the_package_dependencies():
    """Spaces installs requirements.txt: it must name every runtime dependency of pyproject.toml."""
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [l.strip() for l in (root / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert sorted(lines) == sorted(deps)
    front = (root / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front


def test_a_mapped_csv_trains_from_the_web_app_and_its_web_and_cli_votes_share_one_key(served, shared, tmp_path,
                                                                                         capsys):
    """Columns that need a mapping: the run's training split holds the mapped rows; a web vote and a
    `loraeq vote` on the same answer (settings from `loraeq compare --json`) are one key."""
    import csv

    from gradio_client import Client, handle_file

    from evals.votes import VoteStore
    from loraeq.main import main

    data = tmp_path / "theirs.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ask", "reply"])
        writer.writerows([[f"w{i} w{i + 1} ?", f"w{i + 2} w{i + 3}"] for i in range(20)])
    client = Client(served, verbose=False)
    report = client.predict(handle_file(str(data)), None, "auto", "ask=prompt,reply=completion", 64,
                            api_name="/validate")[0]
    assert "valid **20**" in report
    client.predict("mine", 4, 1e-3, 2, 2, api_name="/add_variant")
    client.predict(api_name="/start_training")
    session = next(p for p in shared.runs_dir.iterdir() if p.is_dir())
    _wait_for_finished_variant(session)
    run = next(session.glob("run-*"))
    rows = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    assert rows and all(r["messages"][0]["content"].endswith("?") for r in rows), rows[0]
    grid = client.predict(api_name="/load_variants")[2]
    client.predict("w1 w2", "", ["mine"], 0.0, 1.0, 4, 0, None, grid, "", api_name="/ask")
    client.predict("", api_name="/pass_1")
    assert main(["compare", str(run), "--prompt", "w1 w2", "--variants", "mine", "--max-new-tokens", "4", "--json"]) == 0
    column = next(c for c in json.loads(capsys.readouterr().out)["columns"] if c["variant"] == "mine")
    assert main(["vote", str(run), "--prompt", "w1 w2", "--variant", "mine", "--verdict", "fail",
                 "--settings", json.dumps(column["settings"]), "--json"]) == 0
    votes = VoteStore(run).votes("mine")
    keys = {json.dumps(v.settings, sort_keys=True) for v in votes}
    assert [v.verdict for v in votes] == ["pass", "fail"] and len(keys) == 1, votes
    board = {row["variant"]: row for row in (s.to_json() for s in VoteStore(run).leaderboard())}
    assert list(board) == ["mine"] and board["mine"]["votes"] == 2


def test_every_endpoint_name_is_given_once(shared):
    """Gradio renames a second `api_name="x"` to `x_1` silently: a client calling `/x` would reach
    the wrong tab's handler."""
    from collections import Counter

    demo = build_app(shared)
    names = [fn.api_name for fn in demo.fns.values() if fn.api_name and fn.api_visibility != "private"]
    assert len(names) > 30
    renamed = [n for n in names if n.rsplit("_", 1)[-1].isdigit() and n.rsplit("_", 1)[0] in names]
    assert renamed == [] and [n for n, k in Counter(names).items() if k > 1] == []


def test_start_up_serves_before_drawing_and_turns_the_collector_back_on(tiny_model_dir, cache_home, tmp_path,
                                                                         monkeypatch):
    """`app.py` pauses the garbage collector for start-up: when the page is served it is on again,
    with start-up's objects frozen. The Model tab's heatmap is not drawn before serving: a page
    load draws it (the start-up benchmark's budget), for the statistic the page shows."""
    import gc

    import gradio as gr

    import playground.app as app

    seen = {}

    def launch(demo, **kwargs):
        seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count(), demo=demo)

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    gc.disable()
    try:
        app.main(["--model", str(tiny_model_dir), "--precision", "fp32", "--runs-dir", str(tmp_path / "runs")])
    finally:
        gc.enable()
        gc.unfreeze()
    assert seen["enabled"] and seen["frozen"] > 10_000
    demo = seen["demo"]
    plot = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "tuning-heatmap")
    assert plot.value is None
    loads = [fn for fn in demo.fns.values() if any(t[1] == "load" for t in fn.targets) and plot in fn.outputs]
    assert len(loads) == 1
    figure = loads[0].fn("spectral", False, app.Session())
    assert figure.axes[0].images[0].get_array().shape == (2, 7)


def test_the_first_start_says_what_it_measures_once_and_a_warm_start_does_not(tiny_model_dir, cache_home, tmp_path,
                                                                              caplog):
    import logging

    caplog.set_level(logging.INFO, logger="loraeq")
    make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs"))
    said = [r.getMessage() for r in caplog.records if r.name.startswith("loraeq")]
    assert any(m.startswith("measuring the weights of the 14 places LoRA can tune, once") for m in said), said
    assert "measuring the weights: 14 of 14" in said and any(m.startswith("measured in") for m in said), said
    caplog.clear()
    make_shared(str(tiny_model_dir), "fp32", str(tmp_path / "runs2"))  # warm: read from the cache
    assert not any("measur" in r.getMessage() for r in caplog.records), caplog.records

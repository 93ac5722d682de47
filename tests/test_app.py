"""The web app, served for real on a tiny model and driven through its API with gradio_client."""

from __future__ import annotations

import socket
import urllib.request

import pytest

from playground.app import build_app, cells_table, load_context, model_summary, parse_args
from playground.plots import analysis_heatmap


@pytest.fixture
def tiny_context(tiny_model_dir, cache_home):
    return load_context(str(tiny_model_dir), "fp32")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_defaults_listen_on_localhost_7860():
    args = parse_args([])
    assert (args.host, args.port, args.model, args.precision) == ("127.0.0.1", 7860, None, "auto")


def test_summary_and_table_come_from_the_analysis(tiny_context):
    summary = model_summary(tiny_context)
    assert "2 layers x 7 roles = 14 tuning points" in summary and "fp32" in summary
    table = cells_table(tiny_context.analysis)
    assert len(table) == 14 and table["params"].sum() == sum(c["params"] for c in tiny_context.analysis.cells)


def test_heatmap_shows_every_layer_and_role(tiny_context):
    fig = analysis_heatmap(tiny_context.analysis, "effective_rank")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (2, 7)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == tiny_context.analysis.roles
    scaled = analysis_heatmap(tiny_context.analysis, "spectral", per_role=True).axes[0].images[0].get_array()
    assert list(scaled.max(axis=0)) == pytest.approx([1.0] * 7)


def test_served_app_answers_the_heatmap_api(tiny_context):
    from gradio_client import Client

    demo = build_app(tiny_context)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        assert urllib.request.urlopen(url, timeout=30).status == 200
        client = Client(url, verbose=False)
        result = client.predict("stable_rank", True, api_name="/heatmap")
        assert result is not None and "plot" in str(result)
    finally:
        demo.close()

"""DVC plots: every plot has a readable title, each fine-tuning task has its curves, and `make plots`
(pipeline/plots.py) writes a page that renders offline: no http(s) script src, the data inlined."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1"}


@pytest.fixture(scope="module")
def plots() -> dict[str, list[dict]]:
    out = subprocess.run(["dvc", "plots", "show", "--json"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout)["data"]


def _title(plot: dict) -> str:
    title = plot["content"].get("title")
    return title.get("text", "") if isinstance(title, dict) else (title or "")


def test_every_plot_has_a_readable_title(plots):
    for name, rendered in plots.items():
        for plot in rendered:
            title = _title(plot)
            assert title and "/" not in title and not title.endswith(".csv"), (name, title)


def test_each_task_has_its_fine_tuning_curves(plots):
    tasks = yaml.safe_load((REPO / "params.yaml").read_text())["tasks"]
    for task in tasks:
        path = f"reports/finetune/{task}/history.csv"
        if not (REPO / path).exists():
            continue
        (plot,) = plots[path]
        assert _title(plot) == f"Fine-tuning {task}: training loss and dev score per epoch"
        folded = plot["content"]["transform"][0]["fold"]
        rows = plot["content"]["data"]["values"]
        assert folded == ["train_loss", "dev_score"] and rows and all(k in rows[0] for k in ("epoch", *folded))


def test_offline_template_inlines_the_libraries(monkeypatch):
    from pipeline import plots

    fake = type(sys)("vl_convert")
    fake.javascript_bundle = lambda: "window.vegaEmbed = function () {}; var s = '</script>';"
    monkeypatch.setitem(sys.modules, "vl_convert", fake)
    page = plots.offline_template()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN <script src> tags have nowhere to go
    assert "window.vegaEmbed" in page and "'<\\/script>'" in page


def test_without_vl_convert_a_one_line_hint(monkeypatch, capsys):
    from pipeline import plots

    monkeypatch.setitem(sys.modules, "vl_convert", None)  # import fails
    assert plots.main([]) == 2
    assert "vl-convert-python" in capsys.readouterr().err


def test_make_plots_page_renders_offline(tmp_path):
    pytest.importorskip("vl_convert")
    out = tmp_path / "plots"
    subprocess.run([sys.executable, "-m", "pipeline.plots", "-o", str(out)], cwd=REPO, env=_env(), check=True, timeout=600, capture_output=True)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?https?:", page, re.I)
    assert "window.vegaEmbed" in page and "vegaEmbed('#" in page
    assert "Fine-tuning sentiment: training loss and dev score per epoch" in page
    assert '"dev_score"' in page and '"train_loss"' in page  # the data is in the page

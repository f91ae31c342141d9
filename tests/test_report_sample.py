"""summary.md says when tasks ran on the bundled sample: there the model-vs-baseline table says nothing
about quality (the sample models lose to the baseline, as they may)."""

from __future__ import annotations

from tests.conftest import REPO
from tests.test_report import BASE, EVAL, PRE, SENT, STANCE
from twilbert.report import build_summary, render_markdown, sample_tasks, write_summary


def test_sample_tasks_are_those_with_files_under_data_sample(tmp_path):
    files = {
        "sentiment": ["data/sample/tasks/sentiment/train.tsv", "data/sample/tasks/sentiment/dev.tsv"],
        "hateval": ["../shared/data/hateval/train.tsv", "../shared/data/hateval/dev.tsv"],
        "mixed": ["/elsewhere/train.tsv", "data/sample/../sample/tasks/x/dev.tsv"],
        "near": ["data/sample-real/train.tsv", "data/samples/train.tsv"],
    }
    assert sample_tasks(files, tmp_path) == ["sentiment", "mixed"]
    assert sample_tasks({"t": [str(tmp_path / "data" / "sample" / "a.tsv")]}, tmp_path) == ["t"]  # absolute paths too


def test_the_repo_params_point_at_the_sample():
    from pipeline.params import load_params

    p = load_params(REPO / "params.yaml", check_files=False)
    files = {n: [t.train_file, t.dev_file, t.test_file] for n, t in p.tasks.items()}
    assert sample_tasks(files, REPO) == list(p.tasks)


def test_summary_md_notes_the_sample_first(tmp_path):
    summary = build_summary({"sentiment": SENT, "stance": STANCE}, BASE, PRE, EVAL)
    md = render_markdown(summary, sample=["sentiment", "stance"])
    head = md.split("## ")[0]
    assert "Bundled sample data" in head and "sentiment, stance" in head and "nothing about model quality" in head
    assert "Bundled sample data" not in render_markdown(summary) and "Bundled sample data" not in render_markdown(summary, sample=[])
    _, path = write_summary(summary, tmp_path, sample=["sentiment"])
    assert "(task sentiment:" in path.read_text(encoding="utf-8")
    assert md.split("\n## ", 1)[1] == render_markdown(summary).split("\n## ", 1)[1]  # the tables are unchanged

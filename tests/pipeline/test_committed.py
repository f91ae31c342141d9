"""pipeline.committed: timings out of committed results (into logs/timing.json), float noise rounded."""

from __future__ import annotations

import json
import math

from pipeline.committed import read_timing, record_timing, rounded, split_timing


def test_split_timing_keeps_what_a_rerun_reproduces():
    kept, timing = split_timing({"steps": 10, "loss": 1.5, "wall_s": 3.2, "tokens_per_s": 99.0, "device": "cpu", "resumed_from_step": 10})
    assert kept == {"steps": 10, "loss": 1.5, "device": "cpu"} and timing == {"wall_s": 3.2, "tokens_per_s": 99.0, "resumed_from_step": 10}


def test_rounded_hides_summation_noise_and_keeps_the_rest():
    a, b = rounded({"loss": 6.566341787871748, "x": [0.6910234689712524]}), rounded({"loss": 6.566340982127111, "x": [0.6910234540700912]})
    assert a == b == {"loss": 6.56634, "x": [0.691023]}
    assert rounded({"n": 3, "s": "a", "b": True, "z": 0.0, "nan": math.nan})["n"] == 3
    assert math.isnan(rounded(math.nan)) and rounded(1.23456789e-9) == 1.23457e-9


def test_record_timing_merges_entries(tmp_path):
    path = tmp_path / "logs" / "timing.json"
    record_timing({"vocab": {"train_seconds": 1.0}}, path)
    record_timing({"pretrain": {"wall_s": 2.0}}, path)
    assert json.loads(path.read_text()) == read_timing(path) == {"vocab": {"train_seconds": 1.0}, "pretrain": {"wall_s": 2.0}}
    assert read_timing(tmp_path / "missing.json") == {}


def test_record_timing_never_fails_a_stage(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert record_timing({"a": {}}, blocked / "timing.json") is None
    assert seen and "MLflow" in str(seen[0].message)

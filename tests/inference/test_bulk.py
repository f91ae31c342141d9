"""Bulk prediction (twilbert/bulk.py): ``predict -i FILE`` streamed in chunks gives, row for row and in
order, what ``Predictor.predict`` gives text by text; the chunked reader equals ``read_input_file`` and
fails with its messages; output comes before a generator input is fully read (bounded memory); freed
heap goes back to the OS after every chunk; the prefetch thread hands its errors over; ``--output``
appears whole or not at all."""

from __future__ import annotations

import json

import numpy as np
import pytest

import twilbert.bulk as bulk
from tests.finetune.test_finetune_e2e import LABELS
from tests.inference.test_predict import TEXTS, error_line, json_lines, models, run_cli  # noqa: F401
from twilbert.inference import InputError, read_input_file

TWEETS = [f"{t} {i} {'muy ' * (i % 7)}bien" for i, t in enumerate(TEXTS * 9)]  # 63 texts of mixed lengths


def write_tsv(path, texts, ids=True):
    path.write_text("id\ttext\n" + "".join(f"r{i}\t{t}\n" for i, t in enumerate(texts)), encoding="utf-8")
    return path


def probs(rows) -> np.ndarray:
    return np.array([[r["probabilities"][lab] for lab in LABELS] for r in rows])


def test_file_output_equals_per_row_output_in_order(models, tmp_path, monkeypatch):
    import twilbert

    monkeypatch.setattr(bulk, "CHUNK_ROWS", 10)  # several chunks, the last one short
    f = write_tsv(tmp_path / "in.tsv", TWEETS)
    result = run_cli("predict", "--model", str(models["single"]), "-i", str(f), "--id-column", "id", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    rows = json_lines(result.stdout)
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(len(TWEETS))]
    p = twilbert.load(models["single"])
    one_by_one = [p.predict([t], batch_size=1)[0] for t in TWEETS]
    assert [r["label"] for r in rows] == [r["label"] for r in one_by_one]
    np.testing.assert_allclose(probs(rows), probs(one_by_one), atol=1e-5)
    out = tmp_path / "sub" / "out.jsonl"
    result = run_cli("predict", "--model", str(models["single"]), "-i", str(f), "-o", str(out))
    assert result.exit_code == 0 and f"{len(TWEETS)} predictions" in result.stderr
    np.testing.assert_allclose(probs(json_lines(out.read_text())), probs(rows), atol=1e-6)


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_chunked_reader_equals_read_input_file(tmp_path, fmt):
    texts = ['"quoted, text"', "plain", "", "tab-free ñ 😀"] * 5
    f = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        f.write_text("".join(json.dumps({"id": i, "text": t, "b": "x"}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    elif fmt == "csv":
        f.write_text("id,text,b\n" + "".join(f'{i},"{t.replace(chr(34), 2 * chr(34))}",x\n' for i, t in enumerate(texts)), encoding="utf-8")
    else:
        f.write_text("id\ttext\tb\n" + "".join(f"{i}\t{t}\tx\n" for i, t in enumerate(texts)), encoding="utf-8")
    whole = read_input_file(f, "text", "b", "id")
    chunks = list(bulk.read_file_chunks(f, "text", "b", "id", rows=6))
    assert [len(c.texts) for c in chunks] == [6, 6, 6, 2]
    assert sum((c.texts for c in chunks), []) == whole.texts == texts
    assert sum((c.aux for c in chunks), []) == whole.aux
    assert sum((c.ids for c in chunks), []) == whole.ids
    assert bulk.count_rows(f) == (None if fmt == "csv" else len(texts))


def test_chunked_reader_fails_with_read_input_files_messages(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"text": "hola"}) + "\n" for _ in range(20)) + json.dumps({"text": None}) + "\n", encoding="utf-8")
    with pytest.raises(InputError) as want:
        read_input_file(bad, "text")
    with pytest.raises(InputError) as got:
        list(bulk.read_file_chunks(bad, "text", rows=8))
    assert str(got.value) == str(want.value) and "line(s) 21" in str(got.value)
    for path, column in ((tmp_path / "nope.tsv", "text"), (write_tsv(tmp_path / "a.tsv", ["x"]), "missing")):
        with pytest.raises(InputError) as want:
            read_input_file(path, column)
        with pytest.raises(InputError) as got:
            list(bulk.read_file_chunks(path, column))
        assert str(got.value) == str(want.value)
    (tmp_path / "header.tsv").write_text("id\ttext\n", encoding="utf-8")
    with pytest.raises(InputError, match="no rows"):
        list(bulk.read_file_chunks(tmp_path / "header.tsv", "text"))


def test_output_is_written_before_a_generator_input_is_fully_read(models):
    """Memory bounded: the first chunk's predictions come while the input is still being read (at most
    the chunk being computed, PREFETCH encoded ones and the one being encoded are held)."""
    import twilbert

    p = twilbert.load(models["single"])
    consumed = []

    def texts():
        for i in range(400):
            consumed.append(i)
            yield TWEETS[i % len(TWEETS)]

    stream = bulk.predict_chunks(p, bulk.chunked(texts(), rows=10), batch_size=4)
    rows, chunk = next(stream)
    assert len(rows) == len(chunk.texts) == 10
    assert len(consumed) <= 10 * (bulk.PREFETCH + 2) < 400
    rest = [r for rows, _ in stream for r in rows]
    assert len(rest) == 390 and len(consumed) == 400


def vm_rss_mb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def test_freed_heap_pinned_by_live_blocks_goes_back_to_the_os():
    """The fragmentation the chunks leave (freed activations between long-lived small objects) stays
    resident until trimmed: 80 MB freed with every 50th block kept alive is returned by the call."""
    import sys

    if not sys.platform.startswith("linux") or bulk._malloc_trim() is None:
        pytest.skip("glibc malloc_trim only")
    blocks = [bytearray(4000) for _ in range(20_000)]  # 80 MB, each block malloc'ed (over pymalloc's 512 bytes)
    kept = blocks[::50]  # the long-lived objects that pin the heap
    del blocks
    before = vm_rss_mb()
    assert bulk.release_freed_memory() is True
    assert before - vm_rss_mb() > 40, (before, vm_rss_mb())
    assert len(kept) == 400


def test_freed_memory_is_released_after_every_chunk(models, monkeypatch):
    import twilbert

    p = twilbert.load(models["single"])
    released = []
    monkeypatch.setattr(bulk, "release_freed_memory", lambda: released.append(len(released)) or True)
    monkeypatch.setattr(bulk, "TRIM_EVERY_S", 3600.0)  # only the calls between chunks
    stream = bulk.predict_chunks(p, bulk.chunked(TWEETS[:25], rows=10), batch_size=4)
    for n, (rows, _) in enumerate(stream, start=1):
        assert len(released) == n  # before the chunk's rows are handed over
    assert len(released) == 3


def test_only_the_first_chunk_is_trimmed_while_it_computes(models, monkeypatch):
    """The first chunk creates oneDNN's per-shape primitives (the spike); later chunks only get the
    call between chunks, so the trimming thread costs nothing once memory is steady."""
    from contextlib import contextmanager

    import twilbert

    p = twilbert.load(models["single"])
    timed = []

    @contextmanager
    def record():
        timed.append(1)
        yield

    monkeypatch.setattr(bulk, "releasing_freed_memory", record)
    assert sum(len(rows) for rows, _ in bulk.predict_chunks(p, bulk.chunked(TWEETS[:25], rows=10), batch_size=4)) == 25
    assert timed == [1]


def test_freed_memory_is_released_periodically_while_a_chunk_computes(monkeypatch):
    import threading
    import time

    if bulk._malloc_trim() is None:
        pytest.skip("glibc malloc_trim only")
    calls = []
    monkeypatch.setattr(bulk, "release_freed_memory", lambda: calls.append(1) or True)
    with bulk.releasing_freed_memory(every_s=0.01):
        time.sleep(0.3)
    assert len(calls) >= 3
    seen = len(calls)
    time.sleep(0.1)
    assert len(calls) == seen  # the thread ends with the body
    assert not any(t.name == "twilbert-trim" for t in threading.enumerate())


def test_prefetch_hands_over_errors_and_stops_early():
    def items():
        yield 1
        raise InputError("broken at 2")

    with pytest.raises(InputError, match="broken at 2"):
        list(bulk.prefetch(items()))
    produced = []

    def many():
        for i in range(10_000):
            produced.append(i)
            yield i

    gen = bulk.prefetch(many(), depth=2)
    assert next(gen) == 0
    gen.close()  # the consumer stops: the producer ends instead of reading everything
    import time

    time.sleep(0.5)
    assert len(produced) < 100


def test_an_error_mid_file_leaves_no_output_file(models, tmp_path, monkeypatch):
    monkeypatch.setattr(bulk, "CHUNK_ROWS", 5)
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"text": t}) + "\n" for t in TWEETS[:12]) + json.dumps({"other": 1}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    line = error_line(run_cli("predict", "--model", str(models["single"]), "-i", str(f), "-o", str(out)))
    assert "line(s) 13" in line
    assert not out.exists() and list(tmp_path.iterdir()) == [f]


def test_a_non_finite_output_names_its_row_in_the_whole_input(models, monkeypatch):
    import twilbert
    from twilbert.inference import OutputError

    p = twilbert.load(models["single"])
    real, calls = p.outputs_of, []

    def second_chunk_nan(data, **kw):
        out = real(data, **kw)
        calls.append(1)
        if len(calls) == 2:
            out[3] = np.nan
        return p._finite(out, "output")

    monkeypatch.setattr(p, "outputs_of", second_chunk_nan)
    stream = bulk.predict_chunks(p, bulk.chunked(TWEETS[:20], rows=8))
    assert len(next(stream)[0]) == 8
    with pytest.raises(OutputError, match=r"row\(s\) 3.*from 0-based input row 8"):
        next(stream)

"""Ingestion: malformed rows are quarantined with a reason, drops are counted, counts reconcile."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from twilbert.text.corpus import CorpusError, ingest, normalize_corpora
from twilbert.text.corpus.dedupe import Deduper
from twilbert.text.normalize import DropRules, NormalizeConfig, NormalizeRules

HEADER = b"ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n"


def _rules():
    return NormalizeRules().effective()


def _rejects(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.split("\t") for ln in lines if ln and not ln.startswith("file\t")]


def _run(tmp_path: Path, payload: bytes, *, kind="pairs", header=True, drop=None, chunk_bytes=16 << 20, max_chars=5000):
    src = tmp_path / f"{kind}.tsv"
    src.write_bytes(payload)
    out = tmp_path / "out.parquet"
    rej = tmp_path / "rejects.tsv"
    rej.write_text("")
    stats = ingest([src], kind, _rules(), drop or DropRules(), out, rej, header=header, chunk_bytes=chunk_bytes, max_chars=max_chars)
    return stats, pl.read_parquet(out), _rejects(rej), src


def test_every_malformed_row_is_quarantined_with_its_reason(tmp_path):
    good = b"1\tHola @ana, mira esto https://t.co/x \xf0\x9f\x98\x82\t2\tQue bueno, me encanta la idea de verdad\n"
    rows = [
        good,                                                           # line 2: ok
        b"3\tsolo tres campos\t4\n",                                    # 3 wrong_column_count
        b"5\tuno\t6\tdos\textra\n",                                     # 4 wrong_column_count (5 fields)
        b"7\t   \t8\tresp con texto suficiente aqui\n",                 # 5 empty_text
        b"9\tbad \xff\xfe bytes aqui ya\t10\tuna respuesta valida larga\n",  # 6 invalid_utf8
        b"11\ttexto con \r retorno dentro\t12\trespuesta normal y larga\n",  # 7 stray_cr
        b"13\tcon nul \x00 dentro del texto\t14\trespuesta normal larga\n",  # 8 control_chars
        b'15\t"el dijo ""hola"" a todos"\t16\trespuesta normal larga\n',    # 9 csv_quoted_field
        b"\t\xc2\xbfsin id?\t18\trespuesta normal larga ok\n",           # 10 empty_id
        b"19\t" + b"a " * 3000 + b"\t20\trespuesta\n",                   # 11 too_long
        b"\n",                                                          # 12 blank interior line
        b'21\tella dijo "vale" y se fue contenta\t22\tpues a mi me parece bien todo\r\n',  # 13 ok (CRLF)
    ]
    stats, df, rejects, src = _run(tmp_path, HEADER + b"".join(rows))
    by_line = {int(r[1]): r[2] for r in rejects}
    assert by_line == {
        3: "wrong_column_count",
        4: "wrong_column_count",
        5: "empty_text",
        6: "invalid_utf8",
        7: "stray_cr",
        8: "control_chars",
        9: "csv_quoted_field",
        10: "empty_id",
        11: "too_long",
        12: "wrong_column_count",
    }
    assert all(r[0] == str(src) for r in rejects)
    # Undecodable bytes are kept visibly (backslash-escaped, and backslashes themselves doubled).
    assert r"bad \\xff\\xfe bytes" in next(r[3] for r in rejects if r[2] == "invalid_utf8")
    # Control characters are escaped too: one reject per line for any reader, no terminal escapes.
    assert r"con nul \x00 dentro" in next(r[3] for r in rejects if r[2] == "control_chars")
    assert df["line"].to_list() == [2, 13]
    assert df["reply_text"][1] == "pues a mi me parece bien todo"  # the CRLF line ending is not content
    assert stats.crlf_line_endings == 1
    assert stats.rows_in == 12 and stats.rows_out == 2 and sum(stats.rejected.values()) == 10
    assert stats.reconciles


def test_bom_is_stripped_and_header_checked(tmp_path):
    payload = b"\xef\xbb\xbf" + HEADER + b"1\tun tweet con varias palabras\t2\tuna respuesta con varias palabras\n"
    stats, df, rejects, _ = _run(tmp_path, payload)
    assert stats.rows_out == 1 and not rejects and stats.header_lines == 1
    with pytest.raises(CorpusError, match="line 1 is not a pairs header: 'ID.tTEXT'"):
        _run(tmp_path, b"ID\tTEXT\n1\thola que tal estas\n")


@pytest.mark.parametrize(
    "kind, header",
    [
        ("pairs", b"ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT"),
        ("pairs", b"ID\tTEXT\tREPLY_ID\tREPLY_TEXT"),  # ../shared/data/twilbert_reply_pairs_es/pairs.tsv
        ("pairs", b"orig_id\tOrig_Text\treply_id\treply_text\r"),  # any case, CRLF
        ("pairs", b"\xef\xbb\xbf ID \t TEXT\tREPLY_ID\tREPLY_TEXT"),  # BOM, padded names
        ("tweets", b"ID\tTEXT"),
        ("tweets", b"id\ttext"),
    ],
)
def test_known_header_layouts_are_accepted(tmp_path, kind, header):
    row = b"1\tun tweet con varias palabras\t2\tuna respuesta con varias palabras\n" if kind == "pairs" else b"1\tun tweet suelto con palabras\n"
    stats, df, rejects, _ = _run(tmp_path, header + b"\n" + row, kind=kind)
    assert stats.header_lines == 1 and stats.rows_in == 1 and stats.rows_out == 1 and not rejects


def test_headerless_file_read_with_header_true_fails_loudly(tmp_path):
    """Checking only the column count would silently take the first data row for the header."""
    first = b"1001\tprimer tweet del fichero sin cabecera\t1002\tla respuesta al primer tweet aqui"
    payload = first + b"\n1003\tsegundo tweet con texto\t1004\ty su respuesta tambien larga\n"
    with pytest.raises(CorpusError) as err:
        _run(tmp_path, payload)
    msg = str(err.value)
    assert "\n" not in msg  # one line
    assert msg.startswith(str(tmp_path / "pairs.tsv") + ": line 1 is not a pairs header")
    assert r"'1001\tprimer tweet del fichero sin cabecera\t1002" in msg  # the line, escaped
    assert "ORIG_ID ORIG_TEXT REPLY_ID REPLY_TEXT or ID TEXT REPLY_ID REPLY_TEXT" in msg
    assert "set data.header: false" in msg
    stats, df, _, _ = _run(tmp_path, payload, header=False)
    assert df["orig_id"].to_list() == ["1001", "1003"]
    # A tweets header is not a pairs header, even with the right count (and vice versa).
    with pytest.raises(CorpusError, match="not a tweets header"):
        _run(tmp_path, b"ORIG_ID\tORIG_TEXT\n1\thola que tal estas\n", kind="tweets")
    with pytest.raises(CorpusError, match="not a pairs header"):
        _run(tmp_path, b"A\tB\tC\tD\n" + payload)
    # An undecodable first line is shown backslash-escaped, not as "".
    with pytest.raises(CorpusError, match=r"not a pairs header: 'ID\\\\xff"):
        _run(tmp_path, b"ID\xff\tTEXT\tREPLY_ID\tREPLY_TEXT\n" + payload)


def test_headerless_files_keep_their_first_row(tmp_path):
    """The original skipped the first line of header-less files (see docs/deviations.md)."""
    payload = b"1\tprimer tweet del fichero sin cabecera\t2\tla respuesta al primer tweet aqui\n"
    stats, df, _, _ = _run(tmp_path, payload, header=False)
    assert stats.rows_in == 1 and df["orig_id"].to_list() == ["1"]


def test_missing_input_names_the_path(tmp_path):
    with pytest.raises(CorpusError, match=r"nope\.tsv: no such file"):
        ingest([tmp_path / "nope.tsv"], "pairs", _rules(), DropRules(), tmp_path / "o.parquet", tmp_path / "r.tsv")


def test_drop_rules_are_counted_and_duplicates_found_across_chunks(tmp_path):
    rows = []
    for i in range(400):  # distinct, long enough to survive every rule
        rows.append(f"{i}\tel tweet numero {i} habla de fútbol\t{i + 10000}\tla respuesta {i} no está de acuerdo\n")
    rows.append("9001\t@pepe @ana\t9002\thttps://t.co/abc @luis\n")  # placeholders only -> dropped
    rows.append("9003\tjaja sí\t9004\tvale\n")  # <= 2 words both sides -> dropped
    rows.append("9005\tdos palabras\t9006\tuna respuesta suficientemente larga\n")  # only one side short: kept
    rows.append(rows[5].replace("5\t", "77777\t", 1))  # same texts, other ids -> duplicate
    rows.append(rows[399])  # exact duplicate line, far from the original (another chunk)
    payload = HEADER + "".join(rows).encode()
    stats, df, rejects, _ = _run(tmp_path, payload, chunk_bytes=2048)  # many chunks
    assert stats.dropped["placeholder_only"] == 1
    assert stats.dropped["too_few_words"] == 1
    assert stats.dropped["duplicate"] == 2
    assert stats.rows_out == 401 and not rejects
    assert stats.reconciles
    assert df.height == 401 and df.select(pl.struct("orig_text", "reply_text").n_unique()).item() == 401


def test_chunking_does_not_change_results(tmp_path):
    rows = "".join(f"{i}\tHOLA {i} qué tal, jajajaja 😂 #BuenosDias\t{i+1}\tmuy bien @ana_{i} graciasss!!!\n" for i in range(300))
    a = _run(tmp_path, HEADER + rows.encode(), chunk_bytes=1 << 20)[1]
    b = _run(tmp_path, HEADER + rows.encode(), chunk_bytes=700)[1]
    assert a.equals(b)


def test_normalize_corpora_writes_outputs_and_reconciled_stats(tmp_path):
    pairs = tmp_path / "p.tsv"
    pairs.write_bytes(HEADER + b"1\tun tweet normal con palabras\t2\tuna respuesta normal tambien\n3\tmal\n")
    tweets = tmp_path / "t.tsv"
    tweets.write_bytes(b"ID\tTEXT\n1\tun tweet suelto para el mlm\n2\t\n")
    out = tmp_path / "norm"
    stats = normalize_corpora(pairs=[pairs], tweets=[tweets], cfg=NormalizeConfig(), out_dir=out)
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["total"] == stats["total"] == {
        "files": 2, "empty_files": 0, "rows_in": 4, "rows_out": 2, "rows_rejected": 2, "rows_dropped": 0
    }
    assert on_disk["pairs"]["reconciles"] and on_disk["tweets"]["reconciles"]
    assert pl.read_parquet(out / "tweets.parquet")["text"].to_list() == ["un tweet suelto para el mlm"]
    rej = _rejects(out / "rejects.tsv")
    assert sorted(r[2] for r in rej) == ["empty_text", "wrong_column_count"]
    assert set(on_disk) == {"pairs", "tweets", "total"}  # counts only: no strings in DVC metrics


# -- huge lines --------------------------------------------------------------------------------------

GOOD_A = b"1\tun tweet normal con varias palabras\t2\tuna respuesta normal tambien larga\n"
GOOD_B = b"4\totro tweet normal con varias palabras\t5\tuna respuesta distinta y larga\n"


def _write_huge(path: Path, mb: int, *, tail: bytes, piece: bytes = b"x") -> None:
    """HEADER, a good row, then a line of ``mb`` MB that never holds a newline, then ``tail``."""
    with open(path, "wb") as f:
        f.write(HEADER + GOOD_A + b"3\t")
        block = piece * ((1 << 20) // len(piece))
        for _ in range(mb):
            f.write(block)
        f.write(tail)


@pytest.mark.parametrize("tail", [b"\n" + GOOD_B, b""], ids=["middle", "end-of-file"])
def test_a_30mb_line_is_skipped_as_too_long_and_counts_reconcile(tmp_path, tail):
    src = tmp_path / "pairs.tsv"
    _write_huge(src, 30, tail=tail)
    rej = tmp_path / "rejects.tsv"
    rej.write_text("")
    stats = ingest([src], "pairs", _rules(), DropRules(), tmp_path / "o.parquet", rej)
    rejects = _rejects(rej)
    assert [(r[1], r[2]) for r in rejects] == [("3", "too_long")]
    content = rejects[0][3]
    assert content.startswith(r"3\txxxx") and content.endswith(f"... [too_long: {30 * (1 << 20) + 2} bytes]")
    assert len(content) < 300  # a preview, not the line
    assert stats.rejected == {"too_long": 1}
    assert stats.rows_in == (3 if tail else 2) and stats.rows_out == stats.rows_in - 1 and stats.reconciles
    lines = pl.read_parquet(tmp_path / "o.parquet")["line"].to_list()
    assert lines == ([2, 4] if tail else [2])


def test_too_long_does_not_depend_on_chunking_or_encoding(tmp_path):
    """A line over the byte cap is too_long whether the reader skips it (longer than what is buffered)
    or it arrives whole inside a chunk, decodable or not; a line under max_chars is never too_long."""
    long_ok = b"6\t" + "ñ".encode() * 60 + b"\t7\tuna respuesta normal y larga\n"  # 60 chars, 120 bytes
    rows = [
        GOOD_A,
        b"3\t" + b"y" * 5000 + b"\n",  # over the byte cap (4 * 100 + 1), wrong column count too
        b"8\t" + b"\xff" * 500 + b"\t9\tresp\n",  # over the cap and undecodable: too_long
        b"10\t\xff\xfe corto\t11\tuna respuesta normal\n",  # undecodable, short: invalid_utf8
        b"12\t" + b"z" * 150 + b"\t13\tresp\n",  # 150 chars > max_chars=100 but under the cap
        long_ok,
    ]
    payload = HEADER + b"".join(rows)
    results = []
    for chunk_bytes in (64, 700, 1 << 20):
        stats, df, rejects, _ = _run(tmp_path, payload, chunk_bytes=chunk_bytes, max_chars=100)
        results.append(([(r[1], r[2]) for r in rejects], df["line"].to_list(), stats.reconciles))
    assert results[0] == results[1] == results[2]
    assert results[0] == ([("3", "too_long"), ("4", "too_long"), ("5", "invalid_utf8"), ("6", "too_long")], [2, 7], True)


def test_memory_stays_bounded_on_a_30mb_line(tmp_path):
    """Peak RSS of a subprocess reading a 30 MB newline-free line stays near that of a tiny file
    (measured: 146 MB tiny, 193 MB with the line; 587 MB before the reader capped its buffer)."""
    import subprocess
    import sys

    small, big = tmp_path / "small.tsv", tmp_path / "big.tsv"
    small.write_bytes(HEADER + GOOD_A)
    _write_huge(big, 30, tail=b"\t\xff" * 1000 + b"\n" + GOOD_B)
    code = (
        "import resource, sys; from pathlib import Path\n"
        "from twilbert.text.corpus import ingest\n"
        "from twilbert.text.normalize import DropRules, NormalizeRules\n"
        "src, out = Path(sys.argv[1]), Path(sys.argv[2]); (out / 'r.tsv').write_text('')\n"
        "st = ingest([src], 'pairs', NormalizeRules().effective(), DropRules(), out / 'o.parquet', out / 'r.tsv')\n"
        "assert st.reconciles\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, dict(st.rejected))\n"
    )
    peaks = {}
    for f in (small, big):
        out = tmp_path / f.stem
        out.mkdir()
        res = subprocess.run([sys.executable, "-c", code, str(f), str(out)], capture_output=True, text=True, check=True)
        kb, rejected = res.stdout.split(" ", 1)
        peaks[f.stem] = int(kb) / 1024
    assert "too_long" in rejected
    assert peaks["big"] - peaks["small"] < 150, peaks  # MB; two 16 MB read chunks plus copies


# -- empty inputs -----------------------------------------------------------------------------------


def test_empty_and_header_only_files_are_counted_warnings(tmp_path):
    empty, header_only, good = tmp_path / "empty.tsv", tmp_path / "header.tsv", tmp_path / "good.tsv"
    empty.write_bytes(b"")
    header_only.write_bytes(HEADER)
    good.write_bytes(HEADER + GOOD_A)
    rej = tmp_path / "r.tsv"
    rej.write_text("")
    stats = ingest([empty, header_only, good], "pairs", _rules(), DropRules(), tmp_path / "o.parquet", rej)
    assert stats.rows_in == stats.rows_out == 1 and stats.reconciles
    assert stats.empty_files == [str(empty), str(header_only)]
    assert stats.warnings == [
        f"{empty}: is empty; nothing read from it (listed in params data.pairs)",
        f"{header_only}: has a header but no rows; nothing read from it (listed in params data.pairs)",
    ]
    d = stats.to_dict()
    assert d["empty_files"] == 2 and d["empty_file_names"] == [str(empty), str(header_only)]
    # Header-less mode: an empty file (or one blank line) is empty too.
    blank = tmp_path / "blank.tsv"
    blank.write_bytes(b"\n")
    stats = ingest([blank, empty], "pairs", _rules(), DropRules(), tmp_path / "o2.parquet", rej, header=False)
    assert stats.empty_files == [str(blank), str(empty)] and stats.rows_in == 0


def test_normalize_fails_when_no_row_comes_out_but_writes_its_stats_first(tmp_path):
    empty, tweets = tmp_path / "empty.tsv", tmp_path / "t.tsv"
    empty.write_bytes(b"")
    tweets.write_bytes(b"ID\tTEXT\n1\t\n")  # one row, rejected (empty_text)
    out = tmp_path / "norm"
    with pytest.raises(CorpusError) as err:
        normalize_corpora(pairs=[empty], tweets=[tweets], cfg=NormalizeConfig(), out_dir=out)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("normalize: no row to write from 2 input file(s)")
    assert "1 rows in, 1 rejected, 0 dropped" in msg and "rejects.tsv" in msg
    on_disk = json.loads((out / "stats.json").read_text())
    assert on_disk["total"]["empty_files"] == 1 and on_disk["pairs"]["empty_file_names"] == [str(empty)]
    assert [r[2] for r in _rejects(out / "rejects.tsv")] == ["empty_text"]


# -- duplicates -------------------------------------------------------------------------------------


def _union1d_first_occurrence(seen: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plain implementation (one array re-sorted per chunk), as the reference."""
    _, first_idx = np.unique(hashes, return_index=True)
    keep = np.zeros(hashes.size, dtype=bool)
    keep[first_idx] = True
    if seen.size:
        pos = np.minimum(np.searchsorted(seen, hashes), seen.size - 1)
        keep &= seen[pos] != hashes
    return keep, np.union1d(seen, hashes[keep])


def test_deduper_finds_the_same_duplicates_as_before_across_chunks():
    rng = np.random.default_rng(7)
    pool = rng.integers(0, 2**64 - 1, size=3000, dtype=np.uint64)
    pool[:3] = [0, 2**64 - 1, 1]  # the extremes of the key range, where searchsorted clips
    sizes = rng.integers(0, 400, size=200)  # ragged chunks, empty ones included
    hashes = pool[rng.integers(0, pool.size, size=int(sizes.sum()))]  # ~2/3 of them repeats
    d, seen = Deduper(), np.empty(0, dtype=np.uint64)
    start = 0
    for size in sizes:
        chunk = hashes[start : start + size]
        start += size
        expected, seen = _union1d_first_occurrence(seen, chunk)
        np.testing.assert_array_equal(d.first_occurrence(chunk), expected)
        assert len(d) == seen.size
        assert len(d.runs) <= 2 * int(np.log2(max(len(d), 2))) + 1  # O(log N) runs
    assert start == hashes.size  # every row went through
    merged = np.sort(np.concatenate(d.runs))
    np.testing.assert_array_equal(merged, seen)  # the runs are disjoint and hold exactly the seen set


def test_normalize_under_dvc_refuses_corpora_missing_from_dvc_yaml_deps(tmp_path, monkeypatch):
    """DVC cannot template a params list into deps: a corpus named in params but not in dvc.yaml's deps
    would never trigger a rerun, so the stage refuses to run under DVC and names the key to fix."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from tests.conftest import REPO

    (tmp_path / "data").mkdir()
    for name in ("pairs.tsv", "more.tsv"):
        (tmp_path / "data" / name).write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n1\thola que tal todo\t2\tmuy bien y tu\n")
    params = (REPO / "params.yaml").read_text()
    params = params.replace("pairs: [data/sample/pairs.tsv]", "pairs: [data/pairs.tsv, data/more.tsv]").replace("tweets: [data/sample/tweets.tsv]", "tweets: []")
    for split in ("train", "dev", "test"):
        for task in ("sentiment", "stance"):
            params = params.replace(f"data/sample/tasks/{task}/{split}.tsv", str(REPO / f"data/sample/tasks/{task}/{split}.tsv"))
    (tmp_path / "params.yaml").write_text(params)
    (tmp_path / "dvc.yaml").write_text("stages:\n  normalize:\n    cmd: x\n    deps:\n      - data/pairs.tsv\n      - stages/normalize.py\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TWILBERT_TRACKING", "off")
    monkeypatch.setenv("DVC_STAGE", "normalize")
    bad = CliRunner().invoke(app, ["normalize", "--params", "params.yaml", "--out-dir", "out"])
    assert bad.exit_code == 2 and "stages.normalize.deps: add 'data/more.tsv'" in bad.stderr, bad.output
    assert not (tmp_path / "out").exists()
    monkeypatch.delenv("DVC_STAGE")  # a plain command line: no DVC, no check
    ok = CliRunner().invoke(app, ["normalize", "--params", "params.yaml", "--out-dir", "out"])
    assert ok.exit_code == 0, ok.output


def test_normalize_under_dvc_accepts_an_absolute_corpus_listed_in_deps(tmp_path, monkeypatch):
    """A corpus outside the repo, named by absolute path in params and in dvc.yaml, is accepted (both
    sides are compared as absolute paths); left out of deps it is still refused."""
    from typer.testing import CliRunner

    from pipeline.cli import app
    from tests.conftest import REPO

    outside, repo = tmp_path / "elsewhere", tmp_path / "repo"
    outside.mkdir(), repo.mkdir()
    corpus = outside / "tweets.tsv"
    corpus.write_text("ID\tTEXT\n1\thola que tal todo bien\n")
    params = (REPO / "params.yaml").read_text()
    params = params.replace("pairs: [data/sample/pairs.tsv]", "pairs: []").replace("tweets: [data/sample/tweets.tsv]", f"tweets: [{corpus}]")
    for split in ("train", "dev", "test"):
        for task in ("sentiment", "stance"):
            params = params.replace(f"data/sample/tasks/{task}/{split}.tsv", str(REPO / f"data/sample/tasks/{task}/{split}.tsv"))
    (repo / "params.yaml").write_text(params)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("TWILBERT_TRACKING", "off")
    monkeypatch.setenv("DVC_STAGE", "normalize")
    (repo / "dvc.yaml").write_text("stages:\n  normalize:\n    cmd: x\n    deps:\n      - stages/normalize.py\n")
    bad = CliRunner().invoke(app, ["normalize", "--params", "params.yaml", "--out-dir", "out"])
    assert bad.exit_code == 2 and f"add '{corpus}'" in bad.stderr, bad.output
    (repo / "dvc.yaml").write_text(f"stages:\n  normalize:\n    cmd: x\n    deps:\n      - {corpus}\n")
    ok = CliRunner().invoke(app, ["normalize", "--params", "params.yaml", "--out-dir", "out"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((repo / "out" / "stats.json").read_text())["total"]["rows_in"] == 1


# -- the fast paths keep the results of the straightforward ones ----------------------------------


def test_split_lines_is_decode_then_split_and_refuses_invalid_utf8():
    from twilbert.text.corpus.lines import split_lines

    for data in (b"", b"a", b"a\n", b"\n\n", "a\tb\r\nñ😂\n\nz".encode(), b"x" * 70 + b"\n" + "é".encode() * 9):
        got = split_lines(data)
        assert got is not None and got.dtype == pl.String
        assert got.to_list() == data.decode("utf-8").split("\n"), data
    for bad in (b"ok\n\xff", b"\xed\xa0\x80", b"\xc0\xaf", "é".encode()[:1]):  # stray, surrogate, overlong, cut
        assert split_lines(bad) is None, bad


def test_few_words_expr_agrees_with_counting_words():
    from twilbert.text.normalize.drop import few_words_expr
    from twilbert.text.normalize import word_count_expr

    rng = np.random.default_rng(3)
    pieces = ["a", "ñu", "😂", "x.y", " ", "  ", "\t", "\u00a0", "\u3000", "\u2028", "\x1c"]
    texts = ["".join(rng.choice(pieces, rng.integers(0, 9))) for _ in range(3000)] + ["", " ", None]
    s = pl.DataFrame({"t": texts}, schema={"t": pl.String})
    for k in (0, 1, 2, 3, 5, 65):
        got = s.select(few_words_expr(pl.col("t"), k))["t"].to_list()
        want = s.select(word_count_expr(pl.col("t")) <= k)["t"].to_list()
        assert got == want, k
        assert got[:-1] == [len(t.split()) <= k for t in texts[:-1]]  # Python's own str.split


def test_reader_thread_errors_and_early_stops_reach_the_caller():
    from twilbert.text.corpus.threads import prefetch

    def items(closed):
        try:
            yield 1
            yield 2
            raise CorpusError("x.tsv: cannot open")
        finally:
            closed.append(True)

    closed = []
    got = []
    with pytest.raises(CorpusError, match="cannot open"):
        for x in prefetch(items(closed)):
            got.append(x)
    assert got == [1, 2] and closed == [True]

    closed = []
    stream = prefetch(items(closed), depth=1)
    assert next(stream) == 1
    stream.close()  # the consumer stops early: the thread stops and the source is closed
    assert closed == [True]


def test_writer_thread_errors_reach_the_caller():
    from twilbert.text.corpus.threads import BackgroundWriter

    written = []

    def write(x):
        if x == 3:
            raise OSError("disk full")
        written.append(x)

    w = BackgroundWriter(write, depth=1)
    with pytest.raises(OSError, match="disk full"):
        for i in range(100):
            w.put(i)
        w.close()
    assert written == [0, 1, 2]  # in order, and nothing after the failure


def test_ingest_output_matches_the_eager_reference_pipeline(tmp_path):
    """The single streaming query (validation + normalisation + drop rules) against the eager steps
    it replaced, run here one after the other on the same rows: same rows, same order, same values."""
    from twilbert.text.corpus.rows import validate_and_split
    from twilbert.text.normalize import normalize_expr, placeholder_only_expr, word_count_expr

    rng = np.random.default_rng(5)
    words = ["hola", "JAJAJAJA", "#SiSePuede", "@ana", "https://t.co/x", "&amp;", "RT", "sííííí", "😂", "user", "ok", "…"]
    rows = []
    for i in range(3000):
        a, b = " ".join(rng.choice(words, rng.integers(1, 6))), " ".join(rng.choice(words, rng.integers(1, 6)))
        rows.append(f"{i}\t{a}\t{10**6 + i}\t{b}")
    rows[10] = "bad\tline"  # a reject
    rows[20] = rows[21].replace("21\t", "9999\t", 1)  # a duplicate (ids aside)
    payload = HEADER + ("\n".join(rows) + "\n").encode()
    stats, df, _, _ = _run(tmp_path, payload, chunk_bytes=20_000)

    lines = pl.DataFrame({"line": rows}).with_columns(
        pl.lit(None, dtype=pl.String).alias("_pre_reason"), (pl.int_range(len(rows)) + 2).alias("_line")
    )
    v = validate_and_split(lines, "pairs", 5000).filter(pl.col("reason").is_null())
    cols = ["orig_id", "orig_text", "reply_id", "reply_text"]
    good = v.select([pl.col(c).str.strip_chars() for c in cols] + [pl.col("_line").alias("line")])
    good = good.with_columns([word_count_expr(pl.col(c)).alias(f"_wc_{c}") for c in ("orig_text", "reply_text")])
    good = good.with_columns([normalize_expr(pl.col(c), _rules()).alias(c) for c in ("orig_text", "reply_text")])
    drop = (
        pl.any_horizontal([pl.col(c).str.len_chars() == 0 for c in ("orig_text", "reply_text")])
        | pl.all_horizontal([placeholder_only_expr(pl.col(c), _rules()) for c in ("orig_text", "reply_text")])
        | pl.all_horizontal([pl.col(f"_wc_{c}") <= 2 for c in ("orig_text", "reply_text")])
    )
    good = good.filter(~drop)
    good = good.filter(pl.concat_str(["orig_text", "reply_text"], separator="\t").is_first_distinct())  # exact duplicates
    assert df.select(cols + ["line"]).equals(good.select(cols + ["line"]))
    assert stats.rejected["wrong_column_count"] == 1 and stats.dropped["duplicate"] >= 1 and stats.reconciles


def test_normalize_under_dvc_accepts_corpora_under_a_directory_dep(tmp_path, monkeypatch):
    """data/corpora/ is a directory dep of the normalize stage: any corpus under it is covered (no
    dvc.yaml edit to train on your own tweets); a file beside it is still refused."""
    import typer

    from stages.normalize import check_dvc_deps

    (tmp_path / "data" / "corpora" / "mine").mkdir(parents=True)
    (tmp_path / "dvc.yaml").write_text("stages:\n  normalize:\n    cmd: x\n    deps:\n      - data/corpora\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_STAGE", "normalize")
    check_dvc_deps(tmp_path / "params.yaml", ["data/corpora/pairs.tsv", "data/corpora/mine/tweets.tsv"])
    with pytest.raises(typer.Exit):
        check_dvc_deps(tmp_path / "params.yaml", ["data/corpora2.tsv"])

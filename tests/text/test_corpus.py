"""Ingestion: malformed rows are quarantined with a reason, drops are counted, counts reconcile."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from twilbert.text.corpus import CorpusError, ingest, normalize_corpora
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
    assert df["line"].to_list() == [2, 13]
    assert df["reply_text"][1] == "pues a mi me parece bien todo"  # the CRLF line ending is not content
    assert stats.crlf_line_endings == 1
    assert stats.rows_in == 12 and stats.rows_out == 2 and sum(stats.rejected.values()) == 10
    assert stats.reconciles


def test_bom_is_stripped_and_header_checked(tmp_path):
    payload = b"\xef\xbb\xbf" + HEADER + b"1\tun tweet con varias palabras\t2\tuna respuesta con varias palabras\n"
    stats, df, rejects, _ = _run(tmp_path, payload)
    assert stats.rows_out == 1 and not rejects and stats.header_lines == 1
    with pytest.raises(CorpusError, match="header has 2 columns, expected 4"):
        _run(tmp_path, b"ID\tTEXT\n1\thola que tal estas\n")


def test_headerless_files_keep_their_first_row(tmp_path):
    """The original skipped the first line of header-less files (bug §13.7)."""
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
    assert on_disk["total"] == stats["total"] == {"rows_in": 4, "rows_out": 2, "rows_rejected": 2, "rows_dropped": 0}
    assert on_disk["pairs"]["reconciles"] and on_disk["tweets"]["reconciles"]
    assert pl.read_parquet(out / "tweets.parquet")["text"].to_list() == ["un tweet suelto para el mlm"]
    rej = _rejects(out / "rejects.tsv")
    assert sorted(r[2] for r in rej) == ["empty_text", "wrong_column_count"]
    assert set(on_disk) == {"pairs", "tweets", "total"}  # counts only: no strings in DVC metrics

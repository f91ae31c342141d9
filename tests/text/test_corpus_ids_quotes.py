"""Corpus rows: repeated ids are counted (never dropped for it), a tweet in quotes is a tweet while
CSV-quoted fields are rejects, a directory given as a corpus is named as one, and a failed run
never leaves a previous run's stats beside its outputs."""

from __future__ import annotations

import errno
import json

import polars as pl
import pyarrow.parquet as pq
import pytest

from twilbert.text.corpus import CorpusError, ingest, normalize_corpora
from twilbert.text.normalize import DropRules, NormalizeConfig, NormalizeRules

PAIRS_HEADER = "ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n"


def _ingest(tmp_path, text: str, kind: str = "pairs"):
    src = tmp_path / f"{kind}.tsv"
    src.write_text(text, encoding="utf-8")
    out, rej = tmp_path / "out.parquet", tmp_path / "rejects.tsv"
    rej.write_text("")
    stats = ingest([src], kind, NormalizeRules().effective(), DropRules(duplicates=False), out, rej)
    rejects = [ln.split("\t") for ln in rej.read_text(encoding="utf-8").splitlines() if ln]
    return stats, pl.read_parquet(out), rejects


def test_repeated_reply_ids_are_counted_and_kept(tmp_path):
    rows = [
        "1\tla primera frase de todas\t10\tuna respuesta bastante larga\n",
        "1\tla primera frase de todas\t11\totra respuesta distinta aquí\n",  # same tweet: by design, not counted
        "2\tsegunda frase para el hilo\t10\tuna respuesta que repite id\n",  # reply 10 again
        "3\ttercera frase para el hilo\t10\ty otra vez el mismo id\n",  # and again
    ]
    stats, df, _ = _ingest(tmp_path, PAIRS_HEADER + "".join(rows))
    assert stats.rows_out == 4 == df.height  # counted, not dropped
    assert stats.repeated_ids == 2 and stats.to_dict()["repeated_ids"] == 2
    assert stats.reconciles


def test_repeated_tweet_ids_are_counted_across_files_and_chunks(tmp_path):
    a, b = tmp_path / "a.tsv", tmp_path / "b.tsv"
    a.write_text("ID\tTEXT\n" + "".join(f"{i % 7}\tun tuit con número {i} dentro\n" for i in range(40)), encoding="utf-8")
    b.write_text("ID\tTEXT\n3\tel id tres vuelve en otro fichero\n", encoding="utf-8")
    rej = tmp_path / "rejects.tsv"
    rej.write_text("")
    stats = ingest([a, b], "tweets", NormalizeRules().effective(), DropRules(duplicates=False), tmp_path / "o.parquet", rej,
                   chunk_bytes=256)
    assert stats.rows_out == 41 and stats.repeated_ids == 41 - 7


def test_a_tweet_in_quotes_is_kept_and_csv_quoting_is_rejected(tmp_path):
    rows = [
        '1\t"Hola, ¿qué tal?" le dije ayer\t2\t"Bien, gracias, ¿y tú?"\n',  # quoted tweets: kept as written
        '3\t"dijo ""hola"" y se fue"\t4\tuna respuesta normal y larga\n',  # CSV's "" escape: a reject
    ]
    stats, df, rejects = _ingest(tmp_path, PAIRS_HEADER + "".join(rows))
    assert df["reply_text"].to_list() == ['"bien, gracias, ¿y tú?"']
    assert df["orig_text"].to_list() == ['"hola, ¿qué tal?" le dije ayer']
    assert stats.rejected == {"csv_quoted_field": 1} and [r[2] for r in rejects] == ["csv_quoted_field"]


def test_a_directory_as_corpus_says_so(tmp_path):
    rej = tmp_path / "rejects.tsv"
    rej.write_text("")
    with pytest.raises(CorpusError, match=rf"{tmp_path}: is a directory, not a corpus file \(listed in params data.tweets\)"):
        ingest([tmp_path], "tweets", NormalizeRules().effective(), DropRules(), tmp_path / "o.parquet", rej)


def test_a_failed_run_removes_the_previous_stats_and_leaves_no_temp(tmp_path, monkeypatch):
    src = tmp_path / "pairs.tsv"
    src.write_text(PAIRS_HEADER + "1\tuna frase bastante larga\t2\totra frase también larga\n", encoding="utf-8")
    out = tmp_path / "out"
    normalize_corpora(pairs=[src], tweets=[], cfg=NormalizeConfig(), out_dir=out)
    assert json.loads((out / "stats.json").read_text())["pairs"]["reconciles"]

    def full(self, table, *a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    with pytest.raises(OSError) as info:
        normalize_corpora(pairs=[src], tweets=[], cfg=NormalizeConfig(), out_dir=out)
    assert info.value.filename == str(out / "pairs.parquet")  # the final name, not the temp's
    assert sorted(p.name for p in out.iterdir()) == ["pairs.parquet", "rejects.tsv", "tweets.parquet"]  # the previous run's
    pq.read_table(out / "pairs.parquet")

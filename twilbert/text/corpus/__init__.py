"""Corpus ingestion: raw TSV -> validated, normalised, de-duplicated Parquet, with nothing lost.

* :mod:`twilbert.text.corpus_layout` the column layouts (``COLUMNS``, the one definition), headers, reasons, rule names
* :mod:`.lines`    reading a file as chunks of whole lines, memory bounded whatever the file holds
* :mod:`.rows`     row validation (a reason per malformed line) and the rejects file
* :mod:`.dedupe`   corpus-wide exact duplicates over 64-bit row hashes
* :mod:`.threads`  the bounded hand-overs between reader, query and writer threads
* :mod:`.ingest`   one corpus kind end to end (:func:`ingest`), the stage's core
  (:func:`normalize_corpora`) and its reconciled stats
"""

from __future__ import annotations

from twilbert.text.corpus.ingest import IngestStats, ingest, normalize_corpora, write_stats
from twilbert.text.corpus_layout import (
    COLUMNS,
    DROP_RULES,
    HEADERS,
    ID_COLUMNS,
    REJECT_REASONS,
    TEXT_COLUMNS,
    CorpusError,
    CorpusKind,
)
from twilbert.text.corpus.lines import max_line_bytes
from twilbert.text.corpus.rows import check_header

__all__ = [
    "COLUMNS",
    "TEXT_COLUMNS",
    "ID_COLUMNS",
    "HEADERS",
    "REJECT_REASONS",
    "DROP_RULES",
    "CorpusError",
    "CorpusKind",
    "IngestStats",
    "check_header",
    "ingest",
    "max_line_bytes",
    "normalize_corpora",
    "write_stats",
]

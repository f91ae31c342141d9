"""The corpus formats: column layouts, accepted headers, reject reasons and drop-rule names.

``COLUMNS`` is the one definition of the corpus columns (the pairs shards are written from it).
"""

from __future__ import annotations

from typing import Literal

CorpusKind = Literal["pairs", "tweets"]

# Column layouts of the two input formats (the original's pair TSV, and single tweets for MLM-only).
COLUMNS: dict[str, tuple[str, ...]] = {
    "pairs": ("orig_id", "orig_text", "reply_id", "reply_text"),
    "tweets": ("id", "text"),
}
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {"pairs": ("orig_text", "reply_text"), "tweets": ("text",)}
ID_COLUMNS: dict[str, tuple[str, ...]] = {"pairs": ("orig_id", "reply_id"), "tweets": ("id",)}
# The id each row should hold once, counted as ``repeated_ids`` in the normalize stats when it does
# not (an orig_id repeats by design: one tweet, several replies).
UNIQUE_ID_COLUMN: dict[str, str] = {"pairs": "reply_id", "tweets": "id"}
# Header lines accepted with ``data.header: true`` (compared case-insensitively, after stripping each
# name). The second pairs layout is that of ../shared/data/twilbert_reply_pairs_es/pairs.tsv.
HEADERS: dict[str, tuple[tuple[str, ...], ...]] = {
    "pairs": (("ORIG_ID", "ORIG_TEXT", "REPLY_ID", "REPLY_TEXT"), ("ID", "TEXT", "REPLY_ID", "REPLY_TEXT")),
    "tweets": (("ID", "TEXT"),),
}

REJECT_REASONS = (
    "invalid_utf8",
    "wrong_column_count",
    "empty_id",
    "empty_text",
    "stray_cr",
    "control_chars",
    "csv_quoted_field",
    "too_long",
)
DROP_RULES = ("placeholder_only", "too_few_words", "duplicate", "empty_after_normalize")


class CorpusError(ValueError):
    """An input that cannot be read at all (missing, unreadable, wrong header). One line, names the path."""

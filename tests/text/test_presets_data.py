"""Every real text of ``../shared/data``, for the differential tests of the normalisation presets.

``all_real_texts()`` reads all datasets: the eight task folders (``TEXT``, ``TEXT_B``, ``REPLY_TEXT``)
and the original TWilBERT's example corpora under ``twilbert_examples/`` (their downstream samples,
examples and pre-training sample). Each text keeps where it came from, so a difference is reported
as ``file:row:column``; allow-lists are keyed by :func:`text_key` (a hash of the raw text).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import SHARED_DATA

TEXT_COLUMNS = ("TEXT", "TEXT_B", "REPLY_TEXT", "TWEET", "PREV", "NEXT")
# Header-less files of the original's examples: which columns hold text.
HEADERLESS = {
    "examples/example_embeddings.tsv": (0, 1),
    "examples/example_test.tsv": (1, 3),
    "pretraining/prepro_twitter_47m_pairs.tsv": (1, 3),
}


def text_key(text: str) -> str:
    """Stable key of a raw text for allow-lists."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _read(path: Path, has_header: bool) -> pl.DataFrame:
    return pl.read_csv(
        path, separator="\t", quote_char=None, infer_schema=False, has_header=has_header, truncate_ragged_lines=True
    )


@functools.cache
def all_real_texts() -> tuple[tuple[str, str], ...]:
    """(where, text) for every non-empty text of every dataset; ``where`` = ``file:row:column``."""
    out: list[tuple[str, str]] = []
    for path in sorted(SHARED_DATA.glob("*/*.tsv")):
        df = _read(path, True)
        rel = path.relative_to(SHARED_DATA).as_posix()
        for col in TEXT_COLUMNS:
            if col in df.columns:
                out.extend((f"{rel}:{i}:{col}", t) for i, t in enumerate(df[col].to_list()) if t)
    corpora = SHARED_DATA / "twilbert_examples" / "corpora"
    for path in sorted(corpora.rglob("*")):
        if path.suffix not in (".csv", ".tsv", ".txt"):
            continue
        rel = path.relative_to(corpora).as_posix()
        where = f"twilbert_examples/corpora/{rel}"
        if path.suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            out.extend((f"{where}:{i}:line", t) for i, t in enumerate(lines) if t)
        elif rel in HEADERLESS:
            df = _read(path, False)
            for c in HEADERLESS[rel]:
                out.extend((f"{where}:{i}:{c}", t) for i, t in enumerate(df[:, c].to_list()) if t)
        else:
            df = _read(path, True)
            for col in TEXT_COLUMNS:
                if col in df.columns:
                    out.extend((f"{where}:{i}:{col}", t) for i, t in enumerate(df[col].to_list()) if t)
    return tuple(out)


def real_texts_or_skip() -> tuple[tuple[str, str], ...]:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return all_real_texts()


def test_loader_reads_every_dataset():
    texts = real_texts_or_skip()
    datasets = {where.split("/")[0] for where, _ in texts}
    on_disk = {p.name for p in SHARED_DATA.iterdir() if p.is_dir()}
    assert datasets == on_disk
    # The README's row counts: 137,430 lines in the task TSVs (headers included) hold ~137k texts;
    # pairs and ROP files add second texts, the original's examples ~1k more.
    assert len(texts) > 138_000
    assert len({where for where, _ in texts}) == len(texts)
    example = next(t for w, t in texts if w.startswith("twilbert_examples/corpora/examples/example_mlm.txt"))
    assert example.strip() and "\t" not in example

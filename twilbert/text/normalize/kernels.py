"""Series -> Series kernels in numpy and Arrow for what polars' regexes cannot express.

NFC of decomposed text, the hashtag word split (lookarounds), runs of one character (back-references):
each works on a whole batch's buffers at once, with no Python loop over rows or characters.
"""

from __future__ import annotations

import functools
import string
import unicodedata
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from twilbert.text.normalize.chars import LETTER, LOWER, SPACE, UPPER, char_class, expand_ranges, ranges_class
from twilbert.text.normalize.emojis import emoji_table
from twilbert.text.normalize.gating import apply_where

@functools.cache
def nfc_trigger() -> str:
    """Characters that NFC may change or compose with: combining marks, second halves of canonical
    pairs (incl. Hangul vowel/trailing jamo) and characters whose NFC differs (singletons). A text with
    none of them is already NFC. Planes 0-2 hold every character with a canonical decomposition."""
    cps = set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))
    for cp in range(0x30000):
        c = chr(cp)
        if unicodedata.combining(c) or unicodedata.normalize("NFC", c) != c:
            cps.add(cp)
        d = unicodedata.decomposition(c)
        if d and not d.startswith("<") and len(d.split()) == 2:
            cps.add(int(d.split()[1], 16))
    cps -= set(range(0xD800, 0xE000))
    return ranges_class(sorted(cps))


@functools.cache
def _nfc_pairs() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every two-character canonical composition of the Latin, Greek and Cyrillic blocks
    (``"a" + U+0301`` -> ``"á"``): base + combining mark -> the composed character, where NFC composes
    exactly that pair. Replacing one adjacent pair by its composition keeps the text canonically
    equivalent, so the NFC of the result is the NFC of the original."""
    pats, comps = [], []
    for cp in range(0x00C0, 0x0530):
        c = chr(cp)
        d = unicodedata.decomposition(c)
        if d and not d.startswith("<") and len(d.split()) == 2:
            pair = "".join(chr(int(h, 16)) for h in d.split())
            if unicodedata.normalize("NFC", pair) == c:
                pats.append(pair)
                comps.append(c)
    return tuple(pats), tuple(comps)


def nfc(s: pl.Series) -> pl.Series:
    """NFC of rows that hold a trigger character. Decomposed Spanish text (a fifth of the real tweets of
    ../shared/data are NFD) only needs letter + mark pairs composed: one Aho-Corasick pass does that,
    and only rows where a trigger character remains afterwards run polars' full ``normalize("NFC")``,
    about five times slower per row. Exact: the pass keeps the text canonically equivalent, and a text
    with no trigger character is already NFC (:func:`nfc_trigger`)."""
    pats, comps = _nfc_pairs()
    composed = s.str.replace_many(list(pats), list(comps))
    return apply_where(composed, composed.str.contains(nfc_trigger()), lambda t: t.str.normalize("NFC"))



def cut_at(s: pl.Series, sep: str) -> tuple[pa.ListArray, pl.Series, pl.Series]:
    """Rows (no nulls) cut at every literal ``sep``, as one flat column of pieces for the whole batch.

    Returns the list array (its offsets say which pieces make which row), the pieces ``(P,)``, row
    after row, and the indices ``(T,)`` of the pieces that follow a ``sep`` (every piece but a row's
    first), so a rule can rewrite those as one column and :func:`join_cut` put the rows back."""
    arr = s.str.split(sep, literal=True).to_arrow()
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    pieces = pl.Series(arr.values)  # (P,)
    offsets = np.asarray(arr.offsets)  # (n+1,)
    after = np.ones(len(pieces), dtype=bool)
    after[offsets[:-1][offsets[:-1] < len(pieces)]] = False  # a row's first piece has no sep before it
    return arr, pieces, pl.Series(np.flatnonzero(after).astype(np.uint32))


def join_cut(name: str, arr: pa.ListArray, pieces: pl.Series) -> pl.Series:
    """The rows of :func:`cut_at`'s ``arr`` with their pieces replaced by ``pieces``, joined back."""
    return pl.Series(name, type(arr).from_arrays(arr.offsets, pieces.to_arrow())).list.join("")


@functools.cache
def _tag_char_flags() -> np.ndarray:
    """Code point (< U+0800: one or two UTF-8 bytes) -> bit flags 1 lower, 2 upper, 4 digit, 8 letter, 16 "_"."""
    flags = np.zeros(0x800, dtype=np.uint8)
    for bit, cls in ((1, LOWER), (2, UPPER), (4, "0-9"), (8, LETTER)):
        flags[[ord(c) for c in expand_ranges(cls)]] |= bit
    flags[ord("_")] |= 16
    return flags


def split_tag_words(body: pl.Series) -> pl.Series:
    """Hashtag bodies (WORD characters only) split into words: a space at every lower|Upper,
    Upper|Upper-lower (``HTML|Parser``), digit|letter and letter|digit boundary, and for every ``_``.

    Each boundary depends only on the two or three characters around it (the reference's lookarounds,
    :data:`twilbert.text.normalize.rules._CAMEL`), so it is found for all bodies at once with numpy over
    their UTF-8 bytes. Why not a regex: polars' regex has no lookarounds, and emulating them with
    one-boundary-per-pass replacements and capture groups costs ~2 us per tag and pass (0.9 s per 1M
    real tweets; this is ~0.1 s). WORD characters are below U+0250, so each
    is one or two UTF-8 bytes; anything longer (impossible for a body) is treated as no letter.
    """
    arr = body.to_arrow()
    arr = (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]  # (n+1,)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]] if offsets[-1] > offsets[0] else np.zeros(0, np.uint8)
    offsets = offsets - offsets[0]
    flags = _tag_char_flags()
    ascii_only = not (data >= 0x80).any()
    starts = np.arange(len(data)) if ascii_only else np.flatnonzero((data & 0xC0) != 0x80)  # (C,) first bytes
    lead = data[starts]  # (C,)
    f = flags[lead]  # (C,) right for ASCII; a lead byte >= 0x80 is fixed below
    if not ascii_only:
        m = np.flatnonzero(lead >= 0xC0)  # two-byte characters (a longer one keeps flags 0: no WORD)
        cp = ((lead[m].astype(np.int32) & 0x1F) << 6) | (data[starts[m] + 1] & 0x3F)
        f[m] = np.where(lead[m] < 0xE0, flags[cp], 0)
    body_start = np.zeros(len(data) + 1, dtype=bool)
    body_start[offsets[:-1]] = True
    first = body_start[starts]  # (C,) the character starts a body
    f1, f2 = np.zeros_like(f), np.zeros_like(f)  # flags of the next / next-but-one character of the same body
    f1[:-1] = np.where(first[1:], 0, f[1:])
    f2[:-2] = np.where(first[1:-1] | first[2:], 0, f[2:])
    lower, upper, digit, letter = (f & 1) > 0, (f & 2) > 0, (f & 4) > 0, (f & 8) > 0
    upper1, digit1, letter1, lower2 = (f1 & 2) > 0, (f1 & 4) > 0, (f1 & 8) > 0, (f2 & 1) > 0
    brk = (lower & upper1) | (upper & upper1 & lower2) | (digit & letter1) | (letter & digit1)  # (C,) space after
    out = data.copy()
    out[starts[(f & 16) > 0]] = 32  # "_" -> " " (same length)
    # A space after each boundary character: its last byte is written twice, the copy overwritten.
    # (A boundary never follows a body's last character, so no space lands on a body's edge.)
    last_byte = np.append(starts[1:], len(data))[brk] - 1  # (K,)
    twice = np.zeros(len(data), dtype=np.int64)
    twice[last_byte] = 1
    out = np.repeat(out, 1 + twice)
    out[last_byte + np.arange(1, len(last_byte) + 1)] = 32
    shift = np.zeros(len(data) + 1, dtype=np.int64)
    np.cumsum(twice, out=shift[1:])
    new_offsets = offsets + shift[offsets]
    res = pa.LargeStringArray.from_buffers(n, pa.py_buffer(new_offsets), pa.py_buffer(out))
    return pl.Series(body.name, res)


@functools.cache
def char_run_alphabet() -> str:
    """Characters whose runs ``max_char_run`` caps: letters, punctuation and single-code-point emoji.

    Not digits (``1000000``), not whitespace (collapsed separately), not other scripts. A finite
    alphabet because polars' regex has no backreferences: runs are *found* with one alternation over it.
    """
    punct = string.punctuation + "¡¿«»‘’“”–—•·…"
    emoji_chars = "".join(sorted(e for e in emoji_table() if len(e) == 1 and e not in punct))
    return expand_ranges(LETTER) + punct + emoji_chars



@functools.cache
def _alphabet_lookup() -> np.ndarray:
    cps = np.array([ord(c) for c in char_run_alphabet()], dtype=np.int64)
    lut = np.zeros(int(cps.max()) + 1, dtype=bool)
    lut[cps] = True
    return lut


def cap_char_runs(s: pl.Series, max_run: int, scope: Literal["alphabet", "any"] = "alphabet") -> pl.Series:
    """Cut runs of one character longer than ``max_run``, for all rows at once in numpy.

    ``scope``: ``alphabet`` caps the characters of :func:`char_run_alphabet`; ``any`` every character
    but ``\\n`` (pysentimiento's ``(.)\\1\\1+``, where ``.`` excludes newline).

    Regexes cannot do this without backreferences (polars has none), so the texts go through their
    Arrow buffers: UTF-8 -> code points (one C call), run positions with cumulative sums, a keep mask,
    and back to an Arrow string array. No Python loop over rows or characters.
    """
    arr = s.to_arrow()
    arr = (arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr).cast(pa.large_string())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0] : offsets[-1]] if data_buf else np.zeros(0, np.uint8)
    byte_off = offsets - offsets[0]
    cps = np.frombuffer(data.tobytes().decode("utf-8").encode("utf-32-le"), dtype=np.uint32)  # (C,)
    # Character offset of each row: count UTF-8 lead bytes before its byte offset.
    leads = np.concatenate([[0], np.cumsum((data & 0xC0) != 0x80)])
    char_off = leads[byte_off]  # (n+1,)

    idx = np.arange(len(cps))
    run_start = np.ones(len(cps), dtype=bool)
    run_start[1:] = cps[1:] != cps[:-1]
    run_start[char_off[:-1][char_off[:-1] < len(cps)]] = True  # runs never cross rows
    pos_in_run = idx - np.maximum.accumulate(np.where(run_start, idx, 0))
    if scope == "any":
        in_alphabet = cps != ord("\n")
    else:
        lut = _alphabet_lookup()
        in_alphabet = lut[np.minimum(cps, len(lut) - 1)] & (cps < len(lut))
    keep = (pos_in_run < max_run) | ~in_alphabet

    kept = cps[keep]
    new_char_off = np.concatenate([[0], np.cumsum(keep)])[char_off]
    utf8_len = 1 + (kept >= 0x80) + (kept >= 0x800) + (kept >= 0x10000)
    new_byte_off = np.concatenate([[0], np.cumsum(utf8_len, dtype=np.int64)])[new_char_off]
    payload = kept.tobytes().decode("utf-32-le").encode("utf-8")
    out = pa.LargeStringArray.from_buffers(n, pa.py_buffer(new_byte_off.astype(np.int64)), pa.py_buffer(payload))
    out = pl.Series(s.name, out, dtype=pl.String)
    return out.zip_with(s.is_not_null(), s) if s.null_count() else out  # nulls stay null


@functools.cache
def char_run_trigger(max_run: int) -> str:
    # An alternation of literal runs ("aaaa|bbbb|..."): a DFA finds candidate rows without backreferences.
    return "|".join(pl.escape_regex(c * (max_run + 1)) for c in char_run_alphabet())


@functools.cache
def any_run_triggers(max_run: int) -> tuple[str, str]:
    """Row triggers for ``char_run_scope: any``: literal runs of the common characters (the alphabet,
    digits, spaces, Latin-1, combining accents, general punctuation, arrows, regional indicators, emoji
    joiners), and a class for every other character -- rows holding one (0.3 % of real tweets) go to
    the exact numpy pass whether or not they have a run. Two scans: one regex holding both is far slower."""
    span = lambda a, b: "".join(chr(c) for c in range(a, b + 1))  # noqa: E731
    common = char_run_alphabet() + "0123456789" + expand_ranges(SPACE).replace("\n", "") + "\u200d\ufe0f\ufe0e\u20e3"
    common += span(0x80, 0xFF) + span(0x300, 0x36F) + span(0x2000, 0x206F) + span(0x2190, 0x21FF) + span(0x1F1E6, 0x1F1FF)
    common = "".join(dict.fromkeys(common))
    runs = "|".join(pl.escape_regex(c * (max_run + 1)) for c in common)
    return runs, f"[^{char_class(common)}\n]"



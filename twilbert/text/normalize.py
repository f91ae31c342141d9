"""Tweet normalisation as one polars expression: URLs, mentions, RT, hashtags, laughter, emoji...

The original TWilBERT normalised in three places with per-row Python (inventory §2): ``re.sub`` for URLs
and mentions, ``html.unescape``, and ``str.replace("RT", " ")``, which also turned ``PARTE`` into
``PA E`` (§2.2 bug). Here every rule is a switch in :class:`NormalizeRules`, and all of them compile to
a single ``pl.Expr`` (:func:`normalize_expr`) that runs on whole columns: regexes and Aho-Corasick
tables in polars' Rust kernels, plus numpy for the one rule regexes cannot express. A per-row
pure-Python twin of exactly the same rules lives in :mod:`twilbert.text.reference`; tests hold the two
equal on hand-written golden tweets and on the real tweets of ``../shared/data``.

Rules, in the order they run (each can be switched off):

 1. ``unicode_nfc``      NFC: ``n + U+0303`` -> ``ñ``. Some sources are decomposed (NFD); without
                         this, the same word has two spellings and the rules below miss accents.
 2. ``html_unescape``    exactly ``html.unescape`` (``&amp; &lt; &quot; &#39; &#128514;`` ...). First,
                         so an escaped ``&#35;tag`` or ``&#8230;`` meets the rules below as the character.
 3. ``urls``             ``http(s):...``, ``www....``, ``t.co/...`` and tweet-truncated ``https:…``,
                         ``htt…`` -> `` url ``; a URL runs to the next space. Before mentions (a URL
                         may hold ``@``) and the ellipsis (a cut ``https://t.co/ab…`` is one URL).
 4. ``mentions``         ``@handle`` -> `` user ``, not inside words: ``ana@mail.es`` is kept (the
                         original's ``@+\\w+`` made it ``anauser.es``); glued ``@a@b`` is one mention.
 5. ``remove_rt``        ``RT`` only as a whitespace-delimited token (``RT @x: hola``, ``... es RT``);
                         never inside ``PARTE``, ``ARTE``, ``RTVE``, nor ``#RT`` or ``RT:`` (original
                         bug §2.2 removed every substring). Case-sensitive: ``rt`` is a word.
 6. ``remove_ellipsis``  ``…`` (U+2026) -> space.
 7. ``hashtags``         ``keep`` | ``split`` (``#ReyesMagos`` -> `` Reyes Magos``) | ``replace``
                         (-> `` hashtag ``) | ``token_split`` (-> `` hashtag Reyes Magos``, as
                         pysentimiento). A tag is ``#`` + word characters with at least one letter,
                         not after a word character (``C#``, ``#2024`` are no tags). Splits at
                         lower|Upper, Upper|Upper-lower, letter|digit, ``_``: ``#COVID19`` -> ``COVID 19``,
                         ``#HTMLParser`` -> ``HTML Parser``. Before lowercasing, which erases the case.
 8. ``laughter``         whole words made of alternating ``j`` and vowel runs with at least two of
                         each: ``jajaja``, ``JAJAJ``, ``jajajjaja``, ``ajajaja``, ``jajá`` -> ``jaja``;
                         likewise ``jejeje`` -> ``jeje``, ``jijiji`` -> ``jiji``, ``jojojo`` -> ``jojo``.
                         Left alone: ``ja``, ``jaj``, mixed ``jajeje``, ``jsjsjs``, ``haha``.
 9. ``lowercase``        ``str.lower``; accents and ``ñ`` are kept (SentencePiece can afford them).
10. ``max_char_run``     runs of one character longer than N are cut to N (``holaaaaa`` -> ``holaaa``,
                         ``!!!!!`` -> ``!!!``, ``😂😂😂😂`` -> ``😂😂😂``), for letters, punctuation and
                         single-code-point emoji (:func:`char_run_alphabet`); never digits (``1000000``
                         is a number) nor spaces (rule 12). After lowercasing so ``Aaaaa`` is a run;
                         before emoji naming so a run of one emoji is capped, not its name repeated.
                         (``❤️❤️❤️❤️`` is ``❤`` + U+FE0F repeated, no run: it stays four hearts.)
11. ``emoji``            ``keep`` | ``name`` (the Spanish CLDR name from the ``emoji`` package, as
                         ``emoji.demojize(language="es")``: ``🤣`` -> `` cara revolviéndose de la risa ``,
                         optionally wrapped: `` emoji ... emoji ``) | ``remove``. Longest sequences
                         first, so ZWJ families, skin tones and flags are one emoji, even glued to a
                         word (``🤣estoy``). Stray variation selectors go, as with ``demojize``. Late, so
                         no other rule touches a name (names are lower-case words).
12. ``collapse_whitespace``  runs of whitespace (``str.isspace``) -> one space, stripped.

Placeholders (``url``, ``user``, ``hashtag``, the emoji wrapper) are inserted with spaces around them,
so after rule 12 each is one whitespace-separated token: ``visita:https://x.co`` -> ``visita: url``.

Deliberate limits (identical in the reference, tested):
* Letter classes are explicit Latin ranges (ASCII, Latin-1, Latin Extended-A/B), not ``\\w``, so polars'
  Rust regex and Python's ``re`` agree character for character. Tags in other scripts are kept as is.
* Idempotence, ``normalize(normalize(x)) == normalize(x)``, holds on every real tweet of
  ``../shared/data`` but one: double-escaped HTML (``&amp;quot;`` -> ``&quot;`` -> ``"``). Contrived
  inputs can also break it where emoji handling changes what touches what: a stray U+FE0F after ``#``
  (``#️PARTE`` -> ``#parte``, a tag next time), a keycap glued to a word (``jajáj1️⃣``), ``İ``
  lower-cased to ``i`` + U+0307.

Speed: most rules touch a minority of rows (URLs, mentions, NFD text, HTML, hashtags, laughter, runs,
emoji), so each first finds its rows with a cheap scan and runs the full rule on those rows only
(:func:`_on_matching_rows`). On the real tweets of ``../shared/data`` replicated to 1M rows (106 MB),
2 cores, default preset: ~600k tweets/s with ``collect(engine="streaming")`` (batches run in
parallel), ~300k tweets/s single-threaded (eager / in-memory engine), vs ~10k tweets/s for the
per-row reference. CPU per 1M tweets: hashtags 0.74 s, NFC 0.41, runs 0.37, lowercase 0.26, emoji
0.26, URLs 0.25, whitespace 0.25, laughter 0.18, mentions 0.17, the rest < 0.1 each.
"""

from __future__ import annotations

import functools
import html
import string
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from twilbert.config import check

HashtagMode = Literal["keep", "split", "replace", "token_split"]
EmojiMode = Literal["keep", "name", "remove"]
HASHTAG_MODES: tuple[str, ...] = ("keep", "split", "replace", "token_split")
EMOJI_MODES: tuple[str, ...] = ("keep", "name", "remove")


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def _check_token(value: str, key: str, *, allow_empty: bool = False) -> None:
    check(isinstance(value, str), key, f"must be a string, got {value!r}")
    check(allow_empty or value != "", key, "must not be empty")
    check(not any(c.isspace() for c in value), key, f"must not contain whitespace, got {value!r}")


def _check_rule_values(obj: object, *, skip_none: bool) -> None:
    """Per-field checks shared by NormalizeRules (None = unset, skipped) and EffectiveRules."""
    for name in ("url_token", "user_token", "hashtag_token", "emoji_wrapper"):
        value = getattr(obj, name)
        if value is None and skip_none:
            continue
        _check_token(value, name, allow_empty=name == "emoji_wrapper")
    if getattr(obj, "hashtags") is not None or not skip_none:
        check(obj.hashtags in HASHTAG_MODES, "hashtags", f"expected one of {list(HASHTAG_MODES)}, got {obj.hashtags!r}")
    if getattr(obj, "emoji") is not None or not skip_none:
        check(obj.emoji in EMOJI_MODES, "emoji", f"expected one of {list(EMOJI_MODES)}, got {obj.emoji!r}")
    run = getattr(obj, "max_char_run")
    if run is not None or not skip_none:
        check(isinstance(run, int) and not isinstance(run, bool), "max_char_run", f"must be an int, got {run!r}")
        # 1 would merge Spanish double letters (llave, perro, acción); 0 switches the rule off.
        check(run >= 0 and run != 1, "max_char_run", f"must be 0 (off) or >= 2, got {run}")


@dataclass(frozen=True, kw_only=True)
class NormalizeRules:
    """The ``normalize.rules`` section of params.yaml. ``null`` (None) takes the preset's value."""

    preset: Literal["default"] = "default"
    unicode_nfc: bool | None = None  # compose NFD text (n + U+0303 -> ñ)
    html_unescape: bool | None = None  # &amp; &lt; &#39; ... -> characters
    urls: bool | None = None  # URLs -> url_token
    url_token: str | None = None
    mentions: bool | None = None  # @handle -> user_token
    user_token: str | None = None
    remove_rt: bool | None = None  # retweet marker, as a whole token only
    remove_ellipsis: bool | None = None  # U+2026 -> space
    hashtags: HashtagMode | None = None
    hashtag_token: str | None = None
    laughter: bool | None = None  # jajaja -> jaja (also je/ji/jo)
    max_char_run: int | None = None  # cap runs of one character; 0 = off
    emoji: EmojiMode | None = None
    emoji_wrapper: str | None = None  # "emoji" -> " emoji cara llorando de risa emoji "
    lowercase: bool | None = None
    collapse_whitespace: bool | None = None

    def __post_init__(self) -> None:
        check(self.preset in PRESETS, "preset", f"expected one of {list(PRESETS)}, got {self.preset!r}")
        _check_rule_values(self, skip_none=True)

    def effective(self) -> EffectiveRules:
        """Every rule concrete: unset fields filled from ``PRESETS[preset]``."""
        base = PRESETS[self.preset]
        values = {f.name: getattr(self, f.name) for f in fields(EffectiveRules)}
        return EffectiveRules(**{k: base[k] if v is None else v for k, v in values.items()})


@dataclass(frozen=True, kw_only=True)
class EffectiveRules:
    """The rules actually applied (logged with every run). Built by :meth:`NormalizeRules.effective`."""

    unicode_nfc: bool
    html_unescape: bool
    urls: bool
    url_token: str
    mentions: bool
    user_token: str
    remove_rt: bool
    remove_ellipsis: bool
    hashtags: HashtagMode
    hashtag_token: str
    laughter: bool
    max_char_run: int
    emoji: EmojiMode
    emoji_wrapper: str
    lowercase: bool
    collapse_whitespace: bool

    def __post_init__(self) -> None:
        _check_rule_values(self, skip_none=False)
        tokens = placeholder_tokens(self)
        check(len(set(tokens)) == len(tokens), "url_token", f"placeholder tokens must differ, got {tokens}")
        if self.lowercase:
            # Placeholders are inserted before lowercasing, which would otherwise change them.
            for name in ("url_token", "user_token", "hashtag_token", "emoji_wrapper"):
                value = getattr(self, name)
                check(value == value.lower(), name, f"must be lower-case when lowercase is on, got {value!r}")


# Why these defaults: every cleaning rule on (none loses meaning a tweet model needs), lowercase as the
# original's tokenizer did (but accents kept: SentencePiece can afford them), emoji as Spanish words so
# the vocabulary shares pieces with text, and hashtags "split": TWilBERT segments are short (<= 40
# tokens per side), so a `hashtag` marker per tag (token_split, RoBERTuito's choice) costs real length,
# while the words of the tag carry most of its meaning. token_split stays one switch away.
PRESETS: dict[str, dict[str, object]] = {
    "default": {
        "unicode_nfc": True,
        "html_unescape": True,
        "urls": True,
        "url_token": "url",
        "mentions": True,
        "user_token": "user",
        "remove_rt": True,
        "remove_ellipsis": True,
        "hashtags": "split",
        "hashtag_token": "hashtag",
        "laughter": True,
        "max_char_run": 3,
        "emoji": "name",
        "emoji_wrapper": "",
        "lowercase": True,
        "collapse_whitespace": True,
    },
}


@dataclass(frozen=True, kw_only=True)
class DropRules:
    """The ``normalize.drop`` section: which rows are not worth keeping (inventory §2.1 filters)."""

    placeholder_only: bool = True  # drop a pair when both sides are only placeholder tokens
    max_words: int = 2  # drop a pair when both sides have <= max_words words; 0 = off
    duplicates: bool = True  # drop exact duplicate rows (after normalisation)

    def __post_init__(self) -> None:
        check(isinstance(self.max_words, int) and self.max_words >= 0, "max_words", f"must be >= 0, got {self.max_words!r}")


@dataclass(frozen=True, kw_only=True)
class NormalizeConfig:
    """The ``normalize:`` section of params.yaml."""

    rules: NormalizeRules = field(default_factory=NormalizeRules)
    drop: DropRules = field(default_factory=DropRules)


# --------------------------------------------------------------------------------------------------
# Character classes, shared with the reference implementation (they *are* the rules' definitions)
# --------------------------------------------------------------------------------------------------


def char_class(chars: str) -> str:
    """Body of a ``[...]`` class valid in both Python ``re`` and Rust ``regex``: escape only what needs it
    (Rust reads ``&&``, ``--``, ``~~`` as set operators and rejects ``\\<``; Python accepts these escapes)."""
    return "".join("\\" + c if c in "\\]-[^&~|" else c for c in chars)


# Whitespace exactly as ``str.isspace`` / ``str.split()``; Rust's ``\s`` lacks U+001C..U+001F.
SPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
UPPER = "A-ZÀ-ÖØ-Þ"
LOWER = "a-zß-öø-ÿ"
LETTER = "A-Za-zÀ-ÖØ-öø-ɏ"  # ASCII, Latin-1, Latin Extended-A and -B (U+0100-U+024F)
WORD = LETTER + "0-9_"
# Noncharacters (permanently reserved for internal use): safe in-band markers for the hashtag rule.
_TAG_START, _TAG_BREAK = "\ufdd0", "\ufdd1"
LAUGHTER: tuple[tuple[str, str], ...] = (("aAáÁ", "jaja"), ("eEéÉ", "jeje"), ("iIíÍ", "jiji"), ("oOóÓ", "jojo"))


def _expand_ranges(cls: str) -> str:
    """``"a-c"`` -> ``"abc"`` for the simple class bodies above."""
    out, i = [], 0
    while i < len(cls):
        if i + 2 < len(cls) and cls[i + 1] == "-":
            out.extend(chr(c) for c in range(ord(cls[i]), ord(cls[i + 2]) + 1))
            i += 3
        else:
            out.append(cls[i])
            i += 1
    return "".join(out)


@functools.cache
def emoji_table() -> dict[str, str]:
    """Every emoji sequence of the ``emoji`` package -> its Spanish CLDR name as words."""
    import emoji

    emoji.demojize("", language="es")  # loads the Spanish names into EMOJI_DATA (lazy since emoji 2.13)
    return {e: d["es"][1:-1].replace("_", " ") for e, d in emoji.EMOJI_DATA.items() if "es" in d}


@functools.cache
def char_run_alphabet() -> str:
    """Characters whose runs ``max_char_run`` caps: letters, punctuation and single-code-point emoji.

    Not digits (``1000000``), not whitespace (collapsed separately), not other scripts. A finite
    alphabet because polars' regex has no backreferences: runs are *found* with one alternation over it.
    """
    punct = string.punctuation + "¡¿«»‘’“”–—•·…"
    emoji_chars = "".join(sorted(e for e in emoji_table() if len(e) == 1 and e not in punct))
    return _expand_ranges(LETTER) + punct + emoji_chars


# --------------------------------------------------------------------------------------------------
# Tables and row triggers
# --------------------------------------------------------------------------------------------------


@functools.cache
def _emoji_replacements(mode: str, wrapper: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = emoji_table()
    pats = sorted(names, key=len, reverse=True)  # longest first: ZWJ families and skin tones match whole
    if mode == "name":
        repl = [f" {wrapper} {names[p]} {wrapper} " if wrapper else f" {names[p]} " for p in pats]
    else:
        repl = [" "] * len(pats)
    # As emoji.demojize: variation selectors not part of a known sequence are dropped.
    return tuple(pats) + ("\ufe0f", "\ufe0e"), tuple(repl) + ("", "")


@functools.cache
def _emoji_trigger() -> str:
    """A class of characters one of which every emoji sequence contains (keycaps start with ASCII)."""
    chars = {e[0] for e in emoji_table() if not e[0].isascii()} | {"\ufe0f", "\ufe0e", "\u20e3"}
    return "[" + char_class("".join(sorted(chars))) + "]"


def _ranges_class(codepoints: list[int]) -> str:
    cps, parts, i = sorted(set(codepoints)), [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = chr(cps[i]), chr(cps[j])
        parts.append(char_class(lo) if i == j else f"{char_class(lo)}-{char_class(hi)}")
        i = j + 1
    return "[" + "".join(parts) + "]"


@functools.cache
def _nfc_trigger() -> str:
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
    return _ranges_class(sorted(cps))


# --------------------------------------------------------------------------------------------------
# Steps: each takes and returns a pl.Expr of strings
# --------------------------------------------------------------------------------------------------


def _apply_where(s: pl.Series, hit: pl.Series, fn: Callable[[pl.Series], pl.Series]) -> pl.Series:
    """``fn`` applied to the rows of ``s`` where ``hit`` is true; the other rows unchanged."""
    hit = hit.fill_null(False)
    if not hit.any():
        return s
    idx = hit.arg_true()
    return s.clone().scatter(idx, fn(s.gather(idx)))


def _on_matching_rows(expr: pl.Expr, trigger: str, fn: Callable[[pl.Series], pl.Series]) -> pl.Expr:
    """Apply ``fn`` (a vectorised Series -> Series) only to rows where regex ``trigger`` matches.

    Why: emoji, hashtags, laughter, NFD text and character runs occur in a minority of tweets, and a
    cheap DFA scan for the trigger is several times faster than running the full rule on every row.
    Rows without a match are passed through unchanged (nulls stay null).
    """
    return expr.map_batches(
        lambda s: _apply_where(s, s.str.contains(trigger), fn), return_dtype=pl.String, is_elementwise=True
    )


def _urls(expr: pl.Expr, token: str) -> pl.Expr:
    # Every alternative runs to the end of the non-space run, so a match is always followed by a space
    # (or the end): the left-boundary character one alternative consumes is never needed by another.
    pattern = (
        rf"[Hh][Tt][Tt][Pp][Ss]?:[^{SPACE}]*"  # http://..., https://..., and truncated https:…
        rf"|(^|[^{WORD}])(?:[Ww][Ww][Ww]\.|t\.co/)[^{SPACE}]+"  # www.x.com, bare t.co/abc
        rf"|(^|[^{WORD}])ht(?:tps?|tp|t)?…[^{SPACE}]*"  # a link cut by tweet truncation: ht…, http…
    )
    replace = f"${{1}}${{2}} {_literal(token)} "
    # A pattern that starts with a character class defeats the regex engine's literal prefilter, so
    # only rows with a cheap literal hint run it (every match contains "ht"/"HT"..., "www." or "t.co/").
    return _on_matching_rows(expr, r"[Hh][Tt]|[Ww][Ww][Ww]\.|t\.co/", lambda s: s.str.replace_all(pattern, replace))


def _mentions(expr: pl.Expr, token: str) -> pl.Expr:
    # Glued handles ("@ana@pepe", a missing space) are one mention: the second "@" follows a word
    # character, and leaving it would make the output change again when normalised twice.
    # Handles take any Unicode word character, as the original's ``@+\w+``: real Twitter handles are
    # ASCII, but corpora from elsewhere (and hand-written ones) have "@familia_caótica", and an ASCII
    # class would leave "user ótica" behind.
    pattern, replace = rf"(^|[^{WORD}])@+[{WORD}]+(?:@+[{WORD}]+)*", f"${{1}} {_literal(token)} "
    return _on_matching_rows(expr, "@", lambda s: s.str.replace_all(pattern, replace))


def _remove_rt(expr: pl.Expr) -> pl.Expr:
    # A whitespace-delimited RT (repeated ones in one match: the boundary spaces are consumed).
    return expr.str.replace_all(rf"(?:^|[{SPACE}])RT(?:[{SPACE}]+RT)*(?:[{SPACE}]|$)", " ")


def _hashtags(expr: pl.Expr, mode: str, token: str) -> pl.Expr:
    if mode == "keep":
        return expr
    tag = rf"(^|[^{WORD}&])#+([{WORD}]*[{LETTER}][{WORD}]*)"  # a letter is required: #2024 is no tag
    if mode == "replace":
        return _on_matching_rows(expr, "#", lambda s: s.str.replace_all(tag, f"${{1}} {_literal(token)} "))
    # The "#" becomes a space, never nothing: "@#MesQueUnClub" must not turn into the mention "@Mes".
    start = f" {token} " if mode == "token_split" else " "  # inserted by replace_many: literal, no "$" escape
    # One break per tag per pass: each pass inserts a break marker at the first word boundary after the
    # tag's last marker (the tag's characters before it are all WORD, so the marker's scope is the tag).
    # Boundaries: lower|Upper, Upper|Upper lower (HTML|Parser), digit|letter, letter|digit, and "_".
    boundary = (
        rf"([{_TAG_START}{_TAG_BREAK}][{WORD}]*?)"
        rf"(?:([{LOWER}])([{UPPER}])|([{UPPER}])([{UPPER}][{LOWER}])|([0-9])([{LETTER}])|([{LETTER}])([0-9])|_)"
    )
    boundary_repl = f"${{1}}${{2}}${{4}}${{6}}${{8}}{_TAG_BREAK}${{3}}${{5}}${{7}}${{9}}"

    def split_tags(s: pl.Series) -> pl.Series:
        s = s.str.replace_all(tag, f"${{1}}{_TAG_START}${{2}}")
        active = pl.int_range(len(s), dtype=pl.UInt32, eager=True)
        todo = s
        while len(todo):  # passes = most words in one tag of this batch; each pass only on rows still changing
            nxt = todo.str.replace_all(boundary, boundary_repl)
            changed = (nxt != todo).fill_null(False)
            s = s.scatter(active.filter(changed), nxt.filter(changed))
            active, todo = active.filter(changed), nxt.filter(changed)
        return s.str.replace_many([_TAG_START, _TAG_BREAK], [start, " "])

    return _on_matching_rows(expr, "#", split_tags)


def _laughter(expr: pl.Expr) -> pl.Expr:
    # Whole words only. Rust's regex has no lookarounds, and its Unicode \b disagrees with Python's on
    # a few characters (ZWJ is a word character there), so rows are cut into maximal WORD / non-WORD
    # segments and each segment is matched in full.
    element = pl.element()
    canonical = element
    for vowels, out in LAUGHTER:
        laugh = rf"^[{vowels}]*(?:[jJ]+[{vowels}]+){{2,}}[jJ]*$"
        canonical = pl.when(element.str.contains(laugh)).then(pl.lit(out)).otherwise(canonical)

    def canon(s: pl.Series) -> pl.Series:
        segments = s.str.extract_all(rf"[{WORD}]+|[^{WORD}]+")
        return segments.list.eval(canonical).list.join("")

    vowels = "".join(v for v, _ in LAUGHTER)
    return _on_matching_rows(expr, rf"[jJ][{vowels}]+[jJ]", canon)


@functools.cache
def _alphabet_lookup() -> np.ndarray:
    cps = np.array([ord(c) for c in char_run_alphabet()], dtype=np.int64)
    lut = np.zeros(int(cps.max()) + 1, dtype=bool)
    lut[cps] = True
    return lut


def cap_char_runs(s: pl.Series, max_run: int) -> pl.Series:
    """Cut runs of one alphabet character longer than ``max_run``, for all rows at once in numpy.

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

    lut = _alphabet_lookup()
    idx = np.arange(len(cps))
    run_start = np.ones(len(cps), dtype=bool)
    run_start[1:] = cps[1:] != cps[:-1]
    run_start[char_off[:-1][char_off[:-1] < len(cps)]] = True  # runs never cross rows
    pos_in_run = idx - np.maximum.accumulate(np.where(run_start, idx, 0))
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
def _char_run_trigger(max_run: int) -> str:
    # An alternation of literal runs ("aaaa|bbbb|..."): a DFA finds candidate rows without backreferences.
    return "|".join(pl.escape_regex(c * (max_run + 1)) for c in char_run_alphabet())


def _char_runs(expr: pl.Expr, max_run: int) -> pl.Expr:
    return _on_matching_rows(expr, _char_run_trigger(max_run), lambda s: cap_char_runs(s, max_run))


def _emoji(expr: pl.Expr, mode: str, wrapper: str) -> pl.Expr:
    if mode == "keep":
        return expr
    pats, repl = _emoji_replacements(mode, wrapper)
    return _on_matching_rows(
        expr, _emoji_trigger(), lambda s: s.str.replace_many(list(pats), list(repl), leftmost=True)
    )


# html.unescape's own reference syntax (Lib/html/__init__.py), character for character.
_HTML_REF = r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)"


def _html_unescape(expr: pl.Expr) -> pl.Expr:
    """Exactly ``html.unescape``, vectorised: find every reference of the batch with html's own regex,
    decode each *distinct* one with ``html.unescape`` (a few dozen per batch, not one call per row),
    and substitute them all in one Aho-Corasick pass. Longest first + leftmost reproduces the regex's
    greedy left-to-right matches, since every match of the batch is in the table."""

    def unescape(s: pl.Series) -> pl.Series:
        refs = s.str.extract_all(_HTML_REF).explode().drop_nulls().unique().to_list()
        table = {ref: out for ref in refs if (out := html.unescape(ref)) != ref}
        if not table:
            return s
        pats = sorted(table, key=len, reverse=True)
        return s.str.replace_many(pats, [table[p] for p in pats], leftmost=True)

    return _on_matching_rows(expr, "&", unescape)


def _collapse_whitespace(expr: pl.Expr) -> pl.Expr:
    # Only runs that need a change match (a lone " " does not), which keeps the kernel cheap.
    other_space = SPACE.replace(" ", "")
    return expr.str.replace_all(rf"[{SPACE}]{{2,}}|[{other_space}]", " ").str.strip_chars(" ")


def _literal(token: str) -> str:
    return token.replace("$", "$$")  # "$" starts a group reference in a replacement


def normalize_expr(expr: pl.Expr, rules: EffectiveRules | NormalizeRules) -> pl.Expr:
    """The enabled rules, in the documented order, as one expression over a String column."""
    r = rules.effective() if isinstance(rules, NormalizeRules) else rules
    if r.unicode_nfc:
        expr = _on_matching_rows(expr, _nfc_trigger(), lambda s: s.str.normalize("NFC"))
    if r.html_unescape:
        expr = _html_unescape(expr)
    if r.urls:
        expr = _urls(expr, r.url_token)
    if r.mentions:
        expr = _mentions(expr, r.user_token)
    if r.remove_rt:
        expr = _remove_rt(expr)
    if r.remove_ellipsis:
        expr = expr.str.replace_all("…", " ", literal=True)
    expr = _hashtags(expr, r.hashtags, r.hashtag_token)
    if r.laughter:
        expr = _laughter(expr)
    if r.lowercase:
        expr = expr.str.to_lowercase()
    if r.max_char_run:
        expr = _char_runs(expr, r.max_char_run)
    expr = _emoji(expr, r.emoji, r.emoji_wrapper)
    if r.collapse_whitespace:
        expr = _collapse_whitespace(expr)
    return expr


def normalize_texts(texts: list[str], rules: EffectiveRules | NormalizeRules) -> list[str]:
    """Convenience for tests and notebooks: a list in, a list out (runs the same expression)."""
    lf = pl.LazyFrame({"text": texts}, schema={"text": pl.String})
    return lf.select(normalize_expr(pl.col("text"), rules)).collect(engine="streaming")["text"].to_list()


# --------------------------------------------------------------------------------------------------
# Helpers for the drop rules and the vocabulary
# --------------------------------------------------------------------------------------------------


def placeholder_tokens(rules: EffectiveRules | NormalizeRules) -> list[str]:
    """Tokens the enabled rules insert; the vocab stage makes each one a single SentencePiece piece."""
    r = rules.effective() if isinstance(rules, NormalizeRules) else rules
    tokens = []
    if r.urls:
        tokens.append(r.url_token)
    if r.mentions:
        tokens.append(r.user_token)
    if r.hashtags in ("replace", "token_split"):
        tokens.append(r.hashtag_token)
    if r.emoji == "name" and r.emoji_wrapper:
        tokens.append(r.emoji_wrapper)
    return tokens


def placeholder_only_expr(expr: pl.Expr, rules: EffectiveRules | NormalizeRules) -> pl.Expr:
    """True where a (normalised) text has at least one word and every word is a placeholder token,
    e.g. ``"user user url"`` (inventory §2.1: such pairs carry no language)."""
    tokens = placeholder_tokens(rules)
    if not tokens:
        return expr.is_null() & pl.lit(False)
    alt = "(?:" + "|".join(pl.escape_regex(t) for t in tokens) + ")"
    return expr.str.contains(rf"^[{SPACE}]*(?:{alt}[{SPACE}]+)*{alt}[{SPACE}]*$").fill_null(False)


def word_count_expr(expr: pl.Expr) -> pl.Expr:
    """Number of whitespace-separated words (``len(text.split())``)."""
    return expr.str.count_matches(rf"[^{SPACE}]+")


__all__ = [
    "NormalizeRules",
    "EffectiveRules",
    "DropRules",
    "NormalizeConfig",
    "PRESETS",
    "normalize_expr",
    "normalize_texts",
    "placeholder_tokens",
    "placeholder_only_expr",
    "word_count_expr",
    "cap_char_runs",
    "char_run_alphabet",
    "emoji_table",
]

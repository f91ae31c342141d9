"""The normalisation rules as one table (:data:`TABLE`): one :class:`Rule` entry per rule.

An entry names the rule, its ``normalize.rules`` fields (type, off value, per-preset values), its
place in each rule order, the placeholders it inserts, and its two implementations, written side by
side below: a vectorised one over a polars String column (``(expr, rules) -> expr``) and a per-row
one in plain Python (``(text, rules) -> str``). The per-row twin is the specification by example:
written the natural Python way (lookarounds, back-references, ``\\w``, ``\\b``, ``emoji.demojize``)
so that an equal result is evidence, not an echo; the ``twilbert`` and ``pysentimiento`` styles use
those originals' own regexes verbatim. Both implementations share only the definitions in
:mod:`~twilbert.text.normalize.chars`. A rule runs only when one of its switches differs from its off
value, so neither twin tests for "off". Everything else (the config dataclasses, presets, rule orders
and both step tables) is generated from :data:`TABLE`; docs/normalization.md explains each rule and
how to add one.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from typing import TYPE_CHECKING

import polars as pl

from twilbert.text.normalize.chars import (
    INVISIBLE,
    LAUGHTER,
    LETTER,
    LOWER,
    PYSENTIMIENTO_CHAR_TABLE,
    PYSENTIMIENTO_TLDS,
    SPACE,
    TAG_START,
    UPPER,
    WORD,
    ZWJ,
    ZWJ_KEEP,
    char_class,
    expand_ranges,
    python_word,
)
from twilbert.text.normalize.emojis import (
    emoji_pysentimiento,
    emoji_replacements,
    emoji_trigger,
    replace_emoji,
    zwj_sequences,
)
from twilbert.text.normalize.gating import apply_where, on_every_batch, on_matching_rows
from twilbert.text.normalize.kernels import (
    any_run_triggers,
    cap_char_runs,
    char_run_alphabet,
    char_run_trigger,
    cut_at,
    join_cut,
    nfc,
    nfc_trigger,
    split_tag_words,
)
from twilbert.text.normalize.spec import (
    EMOJI_MODES,
    HASHTAG_MODES,
    ORIGINS,
    CharRunScope,
    EmojiMode,
    HashtagMode,
    OriginStyle,
    Param,
    Placeholder,
    PysentimientoStyle,
    Rule,
    RuleOrder,
    flag_param,
    style_param,
    token_param,
)

if TYPE_CHECKING:
    from twilbert.text.normalize.config import EffectiveRules


def _literal(token: str) -> str:
    return token.replace("$", "$$")  # "$" starts a group reference in a replacement


# --------------------------------------------------------------------------------------------------
# The rules, each as its polars implementation and its per-row twin
# --------------------------------------------------------------------------------------------------


def _nfc_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    return on_matching_rows(e, nfc_trigger(), nfc)


def _nfc_row(t: str, r: EffectiveRules) -> str:
    return unicodedata.normalize("NFC", t)


# html.unescape's own reference syntax (Lib/html/__init__.py), character for character.
_HTML_REF = r"&(?:#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)"


def _html_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
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

    return on_matching_rows(e, "&", unescape)


def _html_row(t: str, r: EffectiveRules) -> str:
    return html.unescape(t)


def _invisible_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    """Delete the :data:`~twilbert.text.normalize.chars.INVISIBLE` characters, and every ZWJ but those
    inside a known emoji ZWJ sequence (marked in one table pass, the others deleted, the marks undone)."""
    seqs = zwj_sequences()
    marked = tuple(q.replace(ZWJ, ZWJ_KEEP) for q in seqs)

    def strip(s: pl.Series) -> pl.Series:
        s = s.str.replace_all(f"[{INVISIBLE}]", "")
        s = replace_emoji(s, seqs, marked).str.replace_all(ZWJ, "", literal=True)
        return s.str.replace_all(ZWJ_KEEP, ZWJ, literal=True)

    return on_matching_rows(e, f"[{INVISIBLE}{ZWJ}]", strip)


_INVISIBLE_RE = re.compile(f"[{INVISIBLE}]")


@functools.cache
def _zwj_sequence_re() -> re.Pattern:
    return re.compile("(" + "|".join(map(re.escape, zwj_sequences())) + ")")


def _invisible_row(t: str, r: EffectiveRules) -> str:
    parts = _zwj_sequence_re().split(_INVISIBLE_RE.sub("", t))  # odd indices: the emoji sequences
    return "".join(p if i % 2 else p.replace(ZWJ, "") for i, p in enumerate(parts))


def _urls_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    token = _literal(r.url_token)
    if r.url_style == "twilbert":
        # The original's r"https?://\S+" -> "url" (bare: "visita:https://x" -> "visita:url").
        pattern = rf"https?://[^{SPACE}]+"
        return on_matching_rows(e, "https?://", lambda s: s.str.replace_all(pattern, token))
    if r.url_style == "pysentimiento":
        return _urls_pysentimiento_expr(e, token)
    # Every alternative runs to the end of the non-space run, so a match is always followed by a space
    # (or the end): the left-boundary character one alternative consumes is never needed by another.
    pattern = (
        rf"[Hh][Tt][Tt][Pp][Ss]?:[^{SPACE}]*"  # http://..., https://..., and truncated https:…
        rf"|(^|[^{WORD}])(?:[Ww][Ww][Ww]\.|t\.co/)[^{SPACE}]+"  # www.x.com, bare t.co/abc
        rf"|(^|[^{WORD}])ht(?:tps?|tp|t)?…[^{SPACE}]*"  # a link cut by tweet truncation: ht…, http…
    )
    replace = f"${{1}}${{2}} {token} "
    # A pattern that starts with a character class defeats the regex engine's literal prefilter, so
    # only rows with a cheap literal hint run it (every match contains "ht"/"HT"..., "www." or "t.co/").
    return on_matching_rows(e, r"[Hh][Tt]|[Ww][Ww][Ww]\.|t\.co/", lambda s: s.str.replace_all(pattern, replace))


def _urls_pysentimiento_expr(e: pl.Expr, token: str) -> pl.Expr:
    """pysentimiento's ``url_regex`` without its lookbehind, which polars' regex engine lacks.

    The original: ``(?<=[^a-zA-Z0-9])(?:https?://|[a-zA-Z0-9]+\\.|\\b)(?:\\w+\\.){1,5}(?:TLD)(?:/[a-zA-Z0-9]+)*``.
    The lookbehind character is consumed here and written back (``${1}${2}``); that is safe because
    a match always ends with an ASCII letter or digit, so the character before the next match never
    belongs to the previous one. Its ``\\b`` (before ``\\w+``, after a non-alphanumeric) holds exactly
    when that character is not a Python word character: a third alternative with its own group, tried
    last, as ``\\b`` is last in the original's alternation. (So a URL at the very start of a text is not
    found, and ``hola.como`` is ``url`` + ``o``: pysentimiento's behaviour, kept on purpose.)
    """
    w, tlds = python_word(), "|".join(PYSENTIMIENTO_TLDS)
    pattern = (
        rf"(?:([^a-zA-Z0-9])(?:https?://|[a-zA-Z0-9]+\.)|([^{w}]))"
        rf"(?:[{w}]+\.){{1,5}}(?:{tlds})(?:/[a-zA-Z0-9]+)*"
    )
    replace = "${1}${2}" + token
    # Every match holds "." + one of the TLDs: a literal alternation the regex engine scans fast.
    return on_matching_rows(e, rf"\.(?:{tlds})", lambda s: s.str.replace_all(pattern, replace))


_URL_ROW = {
    "default": re.compile(
        rf"[Hh][Tt][Tt][Pp][Ss]?:[^{SPACE}]*"
        rf"|(?<![{WORD}])(?:[Ww][Ww][Ww]\.|t\.co/)[^{SPACE}]+"
        rf"|(?<![{WORD}])ht(?:tps?|tp|t)?…[^{SPACE}]*"
    ),
    # The original TWilBERT (Utils.preprocessing, scripts/preprocess_corpora.py).
    "twilbert": re.compile(r"https?://\S+"),
    # pysentimiento 0.7.x preprocessing.py.
    "pysentimiento": re.compile(
        r"((?<=[^a-zA-Z0-9])(?:https?\:\/\/|[a-zA-Z0-9]{1,}\.{1}|\b)(?:\w{1,}\.{1}){1,5}"
        r"(?:" + "|".join(PYSENTIMIENTO_TLDS) + r"){1}(?:\/[a-zA-Z0-9]{1,})*)"
    ),
}


def _urls_row(t: str, r: EffectiveRules) -> str:
    token = r.url_token if r.url_style != "default" else f" {r.url_token} "
    return _URL_ROW[r.url_style].sub(lambda m: token, t)


def _mentions_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    if r.mention_style == "twilbert":
        # The original's r"(@+\w+)" -> "user": no left boundary ("ana@mail.es" -> "anauser.es"), bare.
        pattern, replace = rf"@+[{python_word()}]+", _literal(r.user_token)
    elif r.mention_style == "pysentimiento":
        # pysentimiento's r"@[a-zA-Z0-9_]{0,15}" -> "@usuario": a bare "@" is a handle, and a longer
        # name keeps its tail ("@" + 20 letters -> "@usuario" + 5 letters).
        pattern, replace = r"@[a-zA-Z0-9_]{0,15}", _literal(r.user_token)
    else:
        # Glued handles ("@ana@pepe", a missing space) are one mention: the second "@" follows a word
        # character, and leaving it would make the output change again when normalised twice.
        # Handles take any Unicode word character, as the original's ``@+\w+``: real Twitter handles are
        # ASCII, but corpora from elsewhere (and hand-written ones) have "@familia_caótica", and an ASCII
        # class would leave "user ótica" behind.
        pattern, replace = rf"(^|[^{WORD}])@+[{WORD}]+(?:@+[{WORD}]+)*", f"${{1}} {_literal(r.user_token)} "
    return on_matching_rows(e, "@", lambda s: s.str.replace_all(pattern, replace))


_MENTION_ROW = {
    "default": re.compile(rf"(?<![{WORD}])@+[{WORD}]+(?:@+[{WORD}]+)*"),
    "twilbert": re.compile(r"(@+\w+)"),
    "pysentimiento": re.compile(r"@[a-zA-Z0-9_]{0,15}"),
}


def _mentions_row(t: str, r: EffectiveRules) -> str:
    token = r.user_token if r.mention_style != "default" else f" {r.user_token} "
    return _MENTION_ROW[r.mention_style].sub(lambda m: token, t)


def _rt_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    # A whitespace-delimited RT (repeated ones in one match: the boundary spaces are consumed).
    # Only rows holding "RT" run the regex (a literal scan; ~1 in 30 real tweets has it).
    pattern = rf"(?:^|[{SPACE}])RT(?:[{SPACE}]+RT)*(?:[{SPACE}]|$)"
    return on_matching_rows(e, "RT", lambda s: s.str.replace_all(pattern, " "))


_RT = re.compile(rf"(?<![^{SPACE}])RT(?![^{SPACE}])")


def _rt_row(t: str, r: EffectiveRules) -> str:
    return _RT.sub(" ", t)


def _ellipsis_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    return on_matching_rows(e, "…", lambda s: s.str.replace_all("…", " ", literal=True))


def _ellipsis_row(t: str, r: EffectiveRules) -> str:
    return t.replace("…", " ")


def _hashtags_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    if r.hashtag_style == "pysentimiento":
        return _hashtags_pysentimiento_expr(e, r.hashtags, r.hashtag_token)
    tag = rf"(^|[^{WORD}&])#+([{WORD}]*[{LETTER}][{WORD}]*)"  # a letter is required: #2024 is no tag
    if r.hashtags == "replace":
        return on_matching_rows(e, "#", lambda s: s.str.replace_all(tag, f"${{1}} {_literal(r.hashtag_token)} "))
    # The "#" becomes a space, never nothing: "@#MesQueUnClub" must not turn into the mention "@Mes".
    start = f" {r.hashtag_token} " if r.hashtags == "token_split" else " "

    def split_tags(s: pl.Series) -> pl.Series:
        s = s.str.replace_all(tag, f"${{1}}{TAG_START}${{2}}")
        arr, pieces, idx = cut_at(s, TAG_START)
        cand = pieces.gather(idx)  # (T,) one per tag: its characters, then the rest up to the next tag
        body = cand.str.extract(rf"^([{WORD}]*)", 1)
        rest = cand.str.slice(body.str.len_chars())
        split = pl.select(pl.concat_str(pl.lit(start), pl.lit(split_tag_words(body)), pl.lit(rest))).to_series()
        return join_cut(s.name, arr, pieces.scatter(idx, split))

    return on_matching_rows(e, "#", split_tags)


def _hashtags_pysentimiento_expr(e: pl.Expr, mode: str, token: str) -> pl.Expr:
    """pysentimiento's ``\\B#(\\w*[a-zA-Z]+\\w*)`` -> ``hashtag`` + `` `` + ``camel_to_human(tag)``.

    A tag: one ``#`` not after a Python word character (``\\B``: ``##tag`` -> ``#hashtag tag``,
    ``hola#tag`` is none), then the whole run of word characters, which needs an ASCII letter (``#ñ``,
    ``#2024`` are none). ``camel_to_human``: a space before every run of ``[A-Z]``, strip, lower-case
    (``#HTMLParser`` -> ``htmlparser``, ``#SíSePuede`` -> ``sí se puede``). Only the tag is lower-cased,
    which no regex replacement can do, so rows are cut at every ``#`` into pieces (one flat column for
    the whole batch), each piece after a ``#`` is tested and rewritten as a column, and the pieces
    are joined back through the same list offsets.
    """
    w = python_word()

    def rewrite(s: pl.Series) -> pl.Series:
        arr, pieces, idx = cut_at(s, "#")
        cand = pieces.gather(idx)
        before = pieces.gather(idx - 1).str.slice(-1, 1)  # the character before this "#" ("" = start or "#")
        body = cand.str.extract(rf"^([{w}]*)", 1)
        rest = cand.str.slice(body.str.len_chars())
        is_tag = body.str.contains("[a-zA-Z]") & ~before.str.contains(f"[{w}]")
        human = body.str.replace_all("[A-Z]+", " $0").str.strip_prefix(" ").str.to_lowercase()
        if mode == "replace":
            tag = token + rest
        else:
            tag = (f"{token} " + human if mode == "token_split" else human) + rest
        return join_cut(s.name, arr, pieces.scatter(idx, tag.zip_with(is_tag, "#" + cand)))

    return on_matching_rows(e, "#", rewrite)


_HASHTAG = re.compile(rf"(?<![{WORD}&])#+([{WORD}]*[{LETTER}][{WORD}]*)")
_CAMEL = re.compile(
    rf"(?<=[{LOWER}])(?=[{UPPER}])|(?<=[{UPPER}])(?=[{UPPER}][{LOWER}])|(?<=[0-9])(?=[{LETTER}])|(?<=[{LETTER}])(?=[0-9])"
)
_HASHTAG_PYSENTIMIENTO = re.compile(r"\B#(\w*[a-zA-Z]+\w*)")
_CAMEL_PYSENTIMIENTO = re.compile(r"([A-Z]+)")


def _split_tag(body: str) -> str:
    return _CAMEL.sub(" ", body).replace("_", " ")


def _camel_to_human(body: str) -> str:
    return _CAMEL_PYSENTIMIENTO.sub(r" \1", body).strip().lower()


def _hashtags_row(t: str, r: EffectiveRules) -> str:
    mode, token = r.hashtags, r.hashtag_token
    if r.hashtag_style == "pysentimiento":
        if mode == "replace":
            return _HASHTAG_PYSENTIMIENTO.sub(lambda m: token, t)
        prefix = f"{token} " if mode == "token_split" else ""
        return _HASHTAG_PYSENTIMIENTO.sub(lambda m: prefix + _camel_to_human(m.group(1)), t)
    if mode == "replace":
        return _HASHTAG.sub(lambda m: f" {token} ", t)
    prefix = f" {token} " if mode == "token_split" else " "
    return _HASHTAG.sub(lambda m: prefix + _split_tag(m.group(1)), t)


def _char_table_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    keys = list(PYSENTIMIENTO_CHAR_TABLE)
    values = [PYSENTIMIENTO_CHAR_TABLE[k] for k in keys]
    trigger = "[" + char_class("".join(keys)) + "]"
    return on_matching_rows(e, trigger, lambda s: s.str.replace_many(keys, values))


def _char_table_row(t: str, r: EffectiveRules) -> str:
    return "".join(PYSENTIMIENTO_CHAR_TABLE.get(c, c) for c in t)


def _laughter_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    if r.laughter_style == "pysentimiento":
        # Its Spanish rule as is: anywhere in a word, lower-case only ("JAJAJA" stays).
        return on_matching_rows(e, "aj", lambda s: s.str.replace_all("[ja][ja]+aj[ja]+", "jaja"))
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
    return on_matching_rows(e, rf"[jJ][{vowels}]+[jJ]", canon)


_LAUGHTER = [(re.compile(rf"(?<![{WORD}])[{v}]*(?:[jJ]+[{v}]+){{2,}}[jJ]*(?![{WORD}])"), out) for v, out in LAUGHTER]
_LAUGHTER_PYSENTIMIENTO = re.compile("[ja][ja]+aj[ja]+")


def _laughter_row(t: str, r: EffectiveRules) -> str:
    if r.laughter_style == "pysentimiento":
        return _LAUGHTER_PYSENTIMIENTO.sub("jaja", t)
    for pattern, out in _LAUGHTER:
        t = pattern.sub(out, t)
    return t


def _char_runs_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    n = r.max_char_run
    if r.char_run_scope == "alphabet":
        return on_matching_rows(e, char_run_trigger(n), lambda s: cap_char_runs(s, n))
    runs, rare = any_run_triggers(n)

    def cap(s: pl.Series) -> pl.Series:
        return apply_where(s, s.str.contains(runs) | s.str.contains(rare), lambda t: cap_char_runs(t, n, "any"))

    return on_every_batch(e, cap)


@functools.cache
def _run_pattern(n: int, scope: str) -> re.Pattern:
    chars = "." if scope == "any" else f"[{char_class(char_run_alphabet())}]"  # "." : anything but \n
    return re.compile(rf"({chars})\1{{{n},}}")


def _char_runs_row(t: str, r: EffectiveRules) -> str:
    n = r.max_char_run
    return _run_pattern(n, r.char_run_scope).sub(lambda m: m.group(1) * n, t)


def _emoji_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    if r.emoji_style == "pysentimiento" and r.emoji == "name":
        return on_every_batch(e, functools.partial(emoji_pysentimiento, wrapper=r.emoji_wrapper))
    pats, repl = emoji_replacements(r.emoji, r.emoji_wrapper)
    return on_matching_rows(e, emoji_trigger(), lambda s: replace_emoji(s, pats, repl))


_EMOJI_MARK = re.compile("\ufdd2([^\ufdd3]*)\ufdd3")
_EMOJI_PIPES = re.compile(r"\|([^\|]+)\|")


def _emoji_row(t: str, r: EffectiveRules) -> str:
    import emoji

    wrapper = r.emoji_wrapper
    if r.emoji == "name" and r.emoji_style == "pysentimiento":
        mark = f" {wrapper} ".replace("  ", " ")
        t = emoji.demojize(t, language="es", delimiters=("|", "|"))
        return _EMOJI_PIPES.sub(lambda m: mark + " ".join(m.group(1).split("_")) + mark, t)
    marked = emoji.demojize(t, language="es", delimiters=("\ufdd2", "\ufdd3"))
    if r.emoji == "remove":
        return _EMOJI_MARK.sub(" ", marked)

    def name(m: re.Match) -> str:
        words = m.group(1).replace("_", " ")
        return f" {wrapper} {words} {wrapper} " if wrapper else f" {words} "

    return _EMOJI_MARK.sub(name, marked)


def _lowercase_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    return e.str.to_lowercase()


def _lowercase_row(t: str, r: EffectiveRules) -> str:
    return t.lower()


def _whitespace_expr(e: pl.Expr, r: EffectiveRules) -> pl.Expr:
    if r.collapse_whitespace:
        # Only runs that need a change match (a lone " " does not), which keeps the kernel cheap.
        other_space = SPACE.replace(" ", "")
        return e.str.replace_all(rf"[{SPACE}]{{2,}}|[{other_space}]", " ").str.strip_chars(" ")
    return e.str.strip_chars(expand_ranges(SPACE))  # str.strip(): every str.isspace character


def _whitespace_row(t: str, r: EffectiveRules) -> str:
    return " ".join(t.split()) if r.collapse_whitespace else t.strip()


# --------------------------------------------------------------------------------------------------
# The table. Field order (the order of EffectiveRules, hence of logged rule dicts) follows the entries;
# the order the rules run in is ``order``. Preset values not listed are the ``off`` value.
# --------------------------------------------------------------------------------------------------

_PYS = "pysentimiento"
RULE_ORDER = Param(
    "rule_order", RuleOrder, "default", {"twilbert": "twilbert", _PYS: _PYS},
    kind="choice", choices=ORIGINS, optional=True, doc="whose rule order: ours, TWilBERT's or pysentimiento's",
)

TABLE: tuple[Rule, ...] = (
    Rule(
        "unicode_nfc",
        (flag_param("unicode_nfc", {"default": True}, "compose NFD text (n + U+0303 -> ñ)"),),
        dict(default=10, twilbert=10, pysentimiento=10), _nfc_expr, _nfc_row,
    ),
    Rule(
        "html_unescape",
        (flag_param("html_unescape", {"default": True, "twilbert": True}, "&amp; &lt; &#39; ... -> characters"),),
        dict(default=20, twilbert=60, pysentimiento=20), _html_expr, _html_row,
    ),
    Rule(
        "remove_invisible",
        (flag_param("remove_invisible", {"default": True}, "zero-width, bidi and other invisible format characters", optional=True),),
        dict(default=25, twilbert=65, pysentimiento=25), _invisible_expr, _invisible_row,
    ),
    Rule(
        "urls",
        (
            flag_param("urls", {"default": True, "twilbert": True, _PYS: True}, "URLs -> url_token"),
            style_param("url_style", OriginStyle, {"twilbert": "twilbert", _PYS: _PYS}, "whose URL regex"),
            token_param("url_token", "url"),
        ),
        dict(default=30, twilbert=20, pysentimiento=60), _urls_expr, _urls_row,
        (Placeholder("url_token", lambda r: r.urls, lambda r: r.url_style != "default"),),
    ),
    Rule(
        "mentions",
        (
            flag_param("mentions", {"default": True, "twilbert": True, _PYS: True}, "@handle -> user_token"),
            style_param("mention_style", OriginStyle, {"twilbert": "twilbert", _PYS: _PYS}, "whose handle regex"),
            token_param("user_token", "user", {_PYS: "@usuario"}),
        ),
        dict(default=40, twilbert=30, pysentimiento=50), _mentions_expr, _mentions_row,
        (Placeholder("user_token", lambda r: r.mentions, lambda r: r.mention_style != "default"),),
    ),
    Rule(
        "remove_rt",
        (flag_param("remove_rt", {"default": True, "twilbert": True}, "retweet marker, as a whole token only"),),
        dict(default=50, twilbert=50, pysentimiento=70), _rt_expr, _rt_row,
    ),
    Rule(
        "remove_ellipsis",
        (flag_param("remove_ellipsis", {"default": True, "twilbert": True}, "U+2026 -> space"),),
        dict(default=60, twilbert=40, pysentimiento=80), _ellipsis_expr, _ellipsis_row,
    ),
    Rule(
        "hashtags",
        (
            Param("hashtags", HashtagMode, "keep", {"default": "split", _PYS: "token_split"},
                  kind="choice", choices=HASHTAG_MODES, switch=True, doc="keep | split | replace | token_split"),
            style_param("hashtag_style", PysentimientoStyle, {_PYS: _PYS}, "whose tag regex and camel-case split"),
            token_param("hashtag_token", "hashtag"),
        ),
        dict(default=70, twilbert=70, pysentimiento=30), _hashtags_expr, _hashtags_row,
        (Placeholder("hashtag_token", lambda r: r.hashtags in ("replace", "token_split"), lambda r: r.hashtag_style == _PYS),),
    ),
    Rule(
        "char_table",
        (flag_param("char_table", {_PYS: True}, "pysentimiento's character replacement table", optional=True),),
        dict(default=80, twilbert=80, pysentimiento=40), _char_table_expr, _char_table_row,
    ),
    Rule(
        "laughter",
        (
            flag_param("laughter", {"default": True, _PYS: True}, "jajaja -> jaja (also je/ji/jo)"),
            style_param("laughter_style", PysentimientoStyle, {_PYS: _PYS}, "whole words j+vowel / [ja][ja]+aj[ja]+"),
        ),
        dict(default=90, twilbert=90, pysentimiento=110), _laughter_expr, _laughter_row,
    ),
    Rule(
        "max_char_run",
        (
            Param("max_char_run", int, 0, {"default": 3, _PYS: 3}, kind="count", switch=True,
                  doc="cap runs of one character; 0 = off"),
            Param("char_run_scope", CharRunScope, "alphabet", {_PYS: "any"}, kind="choice", choices=("alphabet", "any"),
                  optional=True, doc="which characters' runs: letters/punct/emoji, or any but \\n"),
        ),
        dict(default=110, twilbert=110, pysentimiento=90), _char_runs_expr, _char_runs_row,
    ),
    Rule(
        "emoji",
        (
            Param("emoji", EmojiMode, "keep", {"default": "name", _PYS: "name"}, kind="choice", choices=EMOJI_MODES,
                  switch=True, doc="keep | name (Spanish CLDR name) | remove"),
            style_param("emoji_style", PysentimientoStyle, {_PYS: _PYS}, "pysentimiento: its |name| delimiters, quirks included"),
            token_param("emoji_wrapper", "", {_PYS: "emoji"}, may_be_empty=True),
        ),
        dict(default=120, twilbert=120, pysentimiento=100), _emoji_expr, _emoji_row,
        (Placeholder("emoji_wrapper", lambda r: r.emoji == "name" and bool(r.emoji_wrapper)),),
    ),
    Rule(
        "lowercase",
        (flag_param("lowercase", {"default": True}, "str.lower; accents and ñ are kept"),),
        dict(default=100, twilbert=100, pysentimiento=120), _lowercase_expr, _lowercase_row,
    ),
    Rule(
        "whitespace",
        (
            flag_param("collapse_whitespace", {"default": True, "twilbert": True}, "whitespace runs -> one space, and strip"),
            flag_param("strip_whitespace", {_PYS: True}, "strip the ends only", optional=True),
        ),
        dict(default=130, twilbert=130, pysentimiento=130), _whitespace_expr, _whitespace_row,
    ),
)

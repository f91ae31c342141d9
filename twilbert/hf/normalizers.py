"""Our tweet rules as ``tokenizers`` normalizers, so an exported tokenizer takes raw tweets.

``twilbert predict`` normalises with polars (``twilbert.text.normalize``), then tokenises; a model
shared through transformers has only its tokenizer, so :func:`tweet_normalizer` rebuilds the rules
there, one function per rule field of :class:`~twilbert.text.normalize.EffectiveRules`, in the rule
order the rules name. ``tokenizers`` can only replace a regex (Oniguruma) match with *fixed* text, so:

* exact: NFC, URLs, mentions, RT, the ellipsis, hashtag ``replace``, the character table, laughter
  (both styles: whole-word lookarounds, one pattern per vowel), lower-casing, character runs (a
  character followed by N copies of itself is deleted: ``(c)(?=\\1{N})``), emoji names (one literal
  replacement per sequence, longest first), whitespace.
  Hashtag splits too: the ``#`` becomes a marker, spaces go in at zero-width matches that look back
  to it (Oniguruma has variable-length lookbehind), then the marker goes.
* approximate (:func:`inexact_rules` names them, the model card gives the measured agreement):
  ``html_unescape`` (named and decimal references of Latin-1 only), pysentimiento's lower-cased tag
  (Latin letters only) and its emoji quirks (literal ``|`` pairing, demojize dead ends).

Measured on 27 564 real tweets of ``../shared/data`` (benchmarks/normalizer_agreement.py): the default
rules give the same normalised text on all, the pysentimiento preset on 99.04 % (every difference a
tweet with a literal ``|``).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

from twilbert.text.normalize import (
    LAUGHTER,
    LETTER,
    LOWER,
    PYSENTIMIENTO_CHAR_TABLE,
    PYSENTIMIENTO_TLDS,
    RULE_ORDERS,
    SPACE,
    UPPER,
    WORD,
    EffectiveRules,
    NormalizeRules,
    char_run_alphabet,
    emoji_table,
    python_word,
)

# html.unescape's named references that give one Latin-1 character ("&amp;", "&amp", "&ntilde;"...).
_HTML_PLAIN = {f"&{name}": ch for name, ch in html.entities.html5.items() if len(ch) == 1 and ord(ch) < 256}


def _replace(pattern: str, content: str, *, regex: bool = True):
    from tokenizers import Regex, normalizers

    return normalizers.Replace(Regex(pattern) if regex else pattern, content)


def _unicode_nfc(r: EffectiveRules) -> list:
    from tokenizers import normalizers

    return [normalizers.NFC()] if r.unicode_nfc else []


def _remove_invisible(r: EffectiveRules) -> list:
    from twilbert.text.normalize.chars import INVISIBLE

    if not r.remove_invisible:
        return []
    # A ZWJ stays between emoji (a ZWJ sequence); elsewhere it goes, like the other invisible characters.
    stray_zwj = r"(?<![\p{Extended_Pictographic}\x{FE0F}\x{1F3FB}-\x{1F3FF}])\x{200D}|\x{200D}(?!\p{Extended_Pictographic})"
    return [_replace(f"[{INVISIBLE}]", ""), _replace(stray_zwj, "")]


def _html_unescape(r: EffectiveRules) -> list:
    if not r.html_unescape:
        return []
    table = {**_HTML_PLAIN, **{f"&#{i};": chr(i) for i in range(32, 256)}}
    return [_replace(ref, table[ref], regex=False) for ref in sorted(table, key=len, reverse=True)]


def _urls(r: EffectiveRules) -> list:
    if not r.urls:
        return []
    space, word = SPACE, WORD
    if r.url_style == "twilbert":
        return [_replace(rf"https?://[^{space}]+", r.url_token)]
    if r.url_style == "pysentimiento":
        w, tlds = python_word(), "|".join(PYSENTIMIENTO_TLDS)
        pattern = rf"(?:(?<=[^a-zA-Z0-9])(?:https?://|[a-zA-Z0-9]+\.)|(?<=[^{w}]))(?:[{w}]+\.){{1,5}}(?:{tlds})(?:/[a-zA-Z0-9]+)*"
        return [_replace(pattern, r.url_token)]
    pattern = (
        rf"[Hh][Tt][Tt][Pp][Ss]?:[^{space}]*"
        rf"|(?<![{word}])(?:[Ww][Ww][Ww]\.|t\.co/)[^{space}]+"
        rf"|(?<![{word}])ht(?:tps?|tp|t)?…[^{space}]*"
    )
    return [_replace(pattern, f" {r.url_token} ")]


def _mentions(r: EffectiveRules) -> list:
    if not r.mentions:
        return []
    if r.mention_style == "twilbert":
        return [_replace(rf"@+[{python_word()}]+", r.user_token)]
    if r.mention_style == "pysentimiento":
        return [_replace(r"@[a-zA-Z0-9_]{0,15}", r.user_token)]
    word = WORD
    return [_replace(rf"(?<![{word}])@+[{word}]+(?:@+[{word}]+)*", f" {r.user_token} ")]


def _remove_rt(r: EffectiveRules) -> list:
    space = SPACE
    return [_replace(rf"(?:\A|[{space}])RT(?:[{space}]+RT)*(?:[{space}]|\z)", " ")] if r.remove_rt else []


def _remove_ellipsis(r: EffectiveRules) -> list:
    return [_replace("…", " ", regex=False)] if r.remove_ellipsis else []


_TAG, _GAP = "\ufdd0", "\ufdd7"  # noncharacters: the start of a tag body, a space inserted in one


def _hashtags(r: EffectiveRules) -> list:
    """A tag's ``#`` becomes a marker, spaces go in at the body's word boundaries (lookbehind to the
    marker, so only inside bodies: one pass over the original string), then the marker goes."""
    if r.hashtags == "keep":
        return []
    lead = {"replace": f" {r.hashtag_token} ", "token_split": f" {r.hashtag_token} ", "split": " "}[r.hashtags]
    if r.hashtag_style == "pysentimiento":
        return _hashtags_pysentimiento(r)
    tag = rf"(?<![{WORD}&])#+(?=[{WORD}]*[{LETTER}])"
    if r.hashtags == "replace":
        return [_replace(tag + rf"[{WORD}]+", lead)]
    body = rf"(?<={_TAG}[{WORD}]*)"
    boundary = (
        rf"{body}(?:_|(?<=[{LOWER}])(?=[{UPPER}])|(?<=[{UPPER}])(?=[{UPPER}][{LOWER}])"
        rf"|(?<=[0-9])(?=[{LETTER}])|(?<=[{LETTER}])(?=[0-9]))"
    )
    return [_replace(tag, lead + _TAG), _replace(boundary, " "), _replace(_TAG, "", regex=False)]


def _hashtags_pysentimiento(r: EffectiveRules) -> list:
    """``hashtag`` + a space before every run of ``[A-Z]`` but the first character, the tag lower-cased
    (per letter: Latin letters up to U+024F; other scripts' capitals stay)."""
    w = python_word()
    tag = rf"(?<![{w}])#(?=[{w}]*[a-zA-Z])"
    if r.hashtags == "replace":
        return [_replace(tag + rf"[{w}]*", r.hashtag_token)]
    lead = f"{r.hashtag_token} " if r.hashtags == "token_split" else ""
    steps = [_replace(tag, lead + _TAG), _replace(rf"(?<={_TAG}[{w}]+)(?<![A-Z])(?=[A-Z])", _GAP)]
    inside = rf"(?<={_TAG}[{w}{_GAP}]*)"
    steps += [_replace(inside + re.escape(c), c.lower()) for c in map(chr, range(0x250)) if c.lower() != c and len(c.lower()) == 1]
    return steps + [_replace(_GAP, " ", regex=False), _replace(_TAG, "", regex=False)]


def _char_table(r: EffectiveRules) -> list:
    if not r.char_table:
        return []
    from tokenizers import normalizers

    # One pass over the characters, as str.translate: no replacement feeds another ("♥" -> "❤️" keeps its "❤").
    marks = {ch: f"\ufdd5{i}\ufdd6" for i, ch in enumerate(PYSENTIMIENTO_CHAR_TABLE)}
    first = [_replace(ch, mark, regex=False) for ch, mark in marks.items()]
    second = [_replace(mark, PYSENTIMIENTO_CHAR_TABLE[ch], regex=False) for ch, mark in marks.items()]
    return [normalizers.Sequence(first + second)]


def _laughter(r: EffectiveRules) -> list:
    if not r.laughter:
        return []
    if r.laughter_style == "pysentimiento":
        return [_replace("[ja][ja]+aj[ja]+", "jaja")]
    word = WORD
    return [_replace(rf"(?<![{word}])[{v}]*(?:[jJ]+[{v}]+){{2,}}[jJ]*(?![{word}])", out) for v, out in LAUGHTER]


def _lowercase(r: EffectiveRules) -> list:
    from tokenizers import normalizers

    return [normalizers.Lowercase()] if r.lowercase else []


def _max_char_run(r: EffectiveRules) -> list:
    if not r.max_char_run:
        return []
    chars = r"[^\n]" if r.char_run_scope == "any" else "[" + "".join(re.escape(c) for c in char_run_alphabet()) + "]"
    return [_replace(rf"({chars})(?=\1{{{r.max_char_run}}})", "")]  # (c)(?=c^N): all but the last N of a run go


def _emoji(r: EffectiveRules) -> list:
    if r.emoji == "keep":
        return []
    from tokenizers import normalizers

    names = emoji_table()
    pats = sorted(names, key=len, reverse=True)  # longest first: ZWJ families and skin tones whole
    if r.emoji == "name":
        wrap = r.emoji_wrapper
        out = [f" {wrap} {names[p]} {wrap} " if wrap else f" {names[p]} " for p in pats]
    else:
        out = [" "] * len(pats)
    steps = [_replace(p, o, regex=False) for p, o in zip(pats, out)]
    steps += [_replace("\ufe0f", "", regex=False), _replace("\ufe0e", "", regex=False)]
    return [normalizers.Sequence(steps)]


def _whitespace(r: EffectiveRules) -> list:
    space = SPACE
    if r.collapse_whitespace:
        return [_replace(rf"[{space}]+", " "), _replace(r"\A | \z", "")]
    if r.strip_whitespace:
        return [_replace(rf"\A[{space}]+|[{space}]+\z", "")]
    return []


# One builder per rule name of RULE_ORDERS (rule fields of EffectiveRules; "whitespace" covers both).
RULES: dict[str, Callable[[EffectiveRules], list]] = {
    "remove_invisible": _remove_invisible,
    "unicode_nfc": _unicode_nfc,
    "html_unescape": _html_unescape,
    "urls": _urls,
    "mentions": _mentions,
    "remove_rt": _remove_rt,
    "remove_ellipsis": _remove_ellipsis,
    "hashtags": _hashtags,
    "char_table": _char_table,
    "laughter": _laughter,
    "lowercase": _lowercase,
    "max_char_run": _max_char_run,
    "emoji": _emoji,
    "whitespace": _whitespace,
}


def effective(rules: EffectiveRules | NormalizeRules | dict[str, Any]) -> EffectiveRules:
    """Concrete rules from a rules object or the dict a model directory stores."""
    if isinstance(rules, dict):
        from twilbert.config import from_dict

        known = {k: v for k, v in rules.items() if k in EffectiveRules.__dataclass_fields__}
        return from_dict(EffectiveRules, known)
    return rules.effective() if isinstance(rules, NormalizeRules) else rules


def tweet_normalizer(rules: EffectiveRules | NormalizeRules | dict[str, Any]):
    """A ``tokenizers`` normaliser applying ``rules`` in their rule order (None when every rule is off)."""
    from tokenizers import normalizers

    r = effective(rules)
    steps = [step for name in RULE_ORDERS[r.rule_order] for step in RULES[name](r)]
    return normalizers.Sequence(steps) if steps else None


def inexact_rules(rules: EffectiveRules | NormalizeRules | dict[str, Any]) -> list[str]:
    """The switched-on rules :func:`tweet_normalizer` only approximates, each with what it misses."""
    r, out = effective(rules), []
    if r.remove_invisible:
        out.append("remove_invisible: a zero-width joiner between two emoji that form no known sequence is kept")
    if r.html_unescape:
        out.append("html_unescape: named and decimal references of Latin-1 only (no hexadecimal, no others)")
    if r.hashtags in ("split", "token_split") and r.hashtag_style == "pysentimiento":
        out.append("hashtags: the tag is lower-cased letter by letter for Latin letters only (up to U+024F)")
    if r.emoji == "name" and r.emoji_style == "pysentimiento":
        out.append("emoji: pysentimiento's quirks (a literal '|' pairing with its delimiters, demojize dead ends) are not reproduced")
    return out

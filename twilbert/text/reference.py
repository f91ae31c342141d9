"""The normalisation rules again, one tweet at a time in plain Python: the original's approach.

``re.sub`` + ``html.unescape`` + ``emoji.demojize`` per row, as TWilBERT (inventory §2) and
pysentimiento do. It is the *specification by example* for :func:`twilbert.text.normalize.normalize_expr`:
tests hold the two equal, and benchmarks use this one as the slow peer. It is deliberately written the
natural Python way -- lookarounds and backreferences, which polars' regex engine lacks -- so that an
equal result is evidence, not an echo. Shared with the vectorised module are only the definitions
(character classes, laughter vowels, the character-run alphabet), not the mechanics.

Known, documented differences (none in the 137k real tweets of ``../shared/data``):
* ``emoji.demojize`` leaves an emoji raw when it begins a longer sequence that is then broken off
  (``❤️`` + ZWJ + a letter, ``🏴`` + half a subdivision-flag tag sequence); the vectorised table
  names it, which is the better reading.
* With ``collapse_whitespace`` off, runs of spaces may differ (``RT`` removal consumes its spaces).
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata

import emoji

from twilbert.text.normalize import (
    LAUGHTER,
    LETTER,
    LOWER,
    SPACE,
    UPPER,
    WORD,
    EffectiveRules,
    NormalizeRules,
    char_class,
    char_run_alphabet,
)

_URL = re.compile(
    rf"[Hh][Tt][Tt][Pp][Ss]?:[^{SPACE}]*"
    rf"|(?<![{WORD}])(?:[Ww][Ww][Ww]\.|t\.co/)[^{SPACE}]+"
    rf"|(?<![{WORD}])ht(?:tps?|tp|t)?…[^{SPACE}]*"
)
_MENTION = re.compile(rf"(?<![{WORD}])@+[{WORD}]+(?:@+[{WORD}]+)*")
_RT = re.compile(rf"(?<![^{SPACE}])RT(?![^{SPACE}])")
_HASHTAG = re.compile(rf"(?<![{WORD}&])#+([{WORD}]*[{LETTER}][{WORD}]*)")
_CAMEL = re.compile(
    rf"(?<=[{LOWER}])(?=[{UPPER}])|(?<=[{UPPER}])(?=[{UPPER}][{LOWER}])|(?<=[0-9])(?=[{LETTER}])|(?<=[{LETTER}])(?=[0-9])"
)
_LAUGHTER = [(re.compile(rf"(?<![{WORD}])[{v}]*(?:[jJ]+[{v}]+){{2,}}[jJ]*(?![{WORD}])"), out) for v, out in LAUGHTER]
_EMOJI_MARK = re.compile("\ufdd2([^\ufdd3]*)\ufdd3")


def _split_tag(body: str) -> str:
    return _CAMEL.sub(" ", body).replace("_", " ")


def _hashtag(text: str, mode: str, token: str) -> str:
    if mode == "keep":
        return text
    if mode == "replace":
        return _HASHTAG.sub(lambda m: f" {token} ", text)
    prefix = f" {token} " if mode == "token_split" else " "
    return _HASHTAG.sub(lambda m: prefix + _split_tag(m.group(1)), text)


@functools.cache
def _run_pattern(n: int) -> re.Pattern:
    return re.compile(rf"([{char_class(char_run_alphabet())}])\1{{{n},}}")


def _cap_runs(text: str, n: int) -> str:
    return _run_pattern(n).sub(lambda m: m.group(1) * n, text)


def _emoji(text: str, mode: str, wrapper: str) -> str:
    if mode == "keep":
        return text
    marked = emoji.demojize(text, language="es", delimiters=("\ufdd2", "\ufdd3"))
    if mode == "remove":
        return _EMOJI_MARK.sub(" ", marked)

    def name(m: re.Match) -> str:
        words = m.group(1).replace("_", " ")
        return f" {wrapper} {words} {wrapper} " if wrapper else f" {words} "

    return _EMOJI_MARK.sub(name, marked)


def normalize_row(text: str, rules: EffectiveRules | NormalizeRules) -> str:
    """One text through the enabled rules, in the same order as ``normalize_expr``."""
    r = rules.effective() if isinstance(rules, NormalizeRules) else rules
    if r.unicode_nfc:
        text = unicodedata.normalize("NFC", text)
    if r.html_unescape:
        text = html.unescape(text)
    if r.urls:
        text = _URL.sub(lambda m: f" {r.url_token} ", text)
    if r.mentions:
        text = _MENTION.sub(lambda m: f" {r.user_token} ", text)
    if r.remove_rt:
        text = _RT.sub(" ", text)
    if r.remove_ellipsis:
        text = text.replace("…", " ")
    text = _hashtag(text, r.hashtags, r.hashtag_token)
    if r.laughter:
        for pattern, out in _LAUGHTER:
            text = pattern.sub(out, text)
    if r.lowercase:
        text = text.lower()
    if r.max_char_run:
        text = _cap_runs(text, r.max_char_run)
    text = _emoji(text, r.emoji, r.emoji_wrapper)
    if r.collapse_whitespace:
        text = " ".join(text.split())
    return text


__all__ = ["normalize_row"]

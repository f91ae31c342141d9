"""The normalisation rules again, one tweet at a time in plain Python: the original's approach.

``re.sub`` + ``html.unescape`` + ``emoji.demojize`` per row, as TWilBERT (inventory §2) and
pysentimiento do. It is the *specification by example* for :func:`twilbert.text.normalize.normalize_expr`:
tests hold the two equal, and benchmarks use this one as the slow peer. It is deliberately written the
natural Python way -- lookarounds, backreferences, ``\\w`` and ``\\b``, which polars' regex engine lacks
or defines differently -- so that an equal result is evidence, not an echo. Shared with the vectorised
module are only the definitions (character classes, laughter vowels, the character-run alphabet,
pysentimiento's character table and TLD list, the rule orders), not the mechanics. The ``twilbert`` and
``pysentimiento`` styles here are those originals' own regexes, verbatim.

Known, documented differences (none in the 137k real tweets of ``../shared/data``):
* Default emoji style: ``emoji.demojize`` leaves an emoji raw when it begins a longer sequence that is
  then broken off (``❤️`` + ZWJ + a letter, ``🏴`` + half a subdivision-flag tag sequence); the
  vectorised table names it, which is the better reading. (The pysentimiento style reproduces
  demojize exactly, dead ends included.)
* With ``collapse_whitespace`` off, runs of spaces may differ (``RT`` removal consumes its spaces).
"""

from __future__ import annotations

import functools
import html
import importlib.metadata
import importlib.util
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import emoji

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

# The original TWilBERT (Utils.preprocessing, scripts/preprocess_corpora.py).
_URL_TWILBERT = re.compile(r"https?://\S+")
_MENTION_TWILBERT = re.compile(r"(@+\w+)")
# pysentimiento 0.7.x preprocessing.py.
_URL_PYSENTIMIENTO = re.compile(
    r"((?<=[^a-zA-Z0-9])(?:https?\:\/\/|[a-zA-Z0-9]{1,}\.{1}|\b)(?:\w{1,}\.{1}){1,5}"
    r"(?:" + "|".join(PYSENTIMIENTO_TLDS) + r"){1}(?:\/[a-zA-Z0-9]{1,})*)"
)
_MENTION_PYSENTIMIENTO = re.compile(r"@[a-zA-Z0-9_]{0,15}")
_HASHTAG_PYSENTIMIENTO = re.compile(r"\B#(\w*[a-zA-Z]+\w*)")
_CAMEL_PYSENTIMIENTO = re.compile(r"([A-Z]+)")
_LAUGHTER_PYSENTIMIENTO = re.compile("[ja][ja]+aj[ja]+")
_EMOJI_PIPES = re.compile(r"\|([^\|]+)\|")

_URLS = {"default": _URL, "twilbert": _URL_TWILBERT, "pysentimiento": _URL_PYSENTIMIENTO}


def _split_tag(body: str) -> str:
    return _CAMEL.sub(" ", body).replace("_", " ")


def _camel_to_human(body: str) -> str:
    return _CAMEL_PYSENTIMIENTO.sub(r" \1", body).strip().lower()


def _hashtag(text: str, mode: str, style: str, token: str) -> str:
    if mode == "keep":
        return text
    if style == "pysentimiento":
        if mode == "replace":
            return _HASHTAG_PYSENTIMIENTO.sub(lambda m: token, text)
        prefix = f"{token} " if mode == "token_split" else ""
        return _HASHTAG_PYSENTIMIENTO.sub(lambda m: prefix + _camel_to_human(m.group(1)), text)
    if mode == "replace":
        return _HASHTAG.sub(lambda m: f" {token} ", text)
    prefix = f" {token} " if mode == "token_split" else " "
    return _HASHTAG.sub(lambda m: prefix + _split_tag(m.group(1)), text)


def _urls(text: str, style: str, token: str) -> str:
    return _URLS[style].sub(lambda m: token if style != "default" else f" {token} ", text)


def _mentions(text: str, style: str, token: str) -> str:
    if style == "twilbert":
        return _MENTION_TWILBERT.sub(lambda m: token, text)
    if style == "pysentimiento":
        return _MENTION_PYSENTIMIENTO.sub(lambda m: token, text)
    return _MENTION.sub(lambda m: f" {token} ", text)


def _laughter(text: str, style: str) -> str:
    if style == "pysentimiento":
        return _LAUGHTER_PYSENTIMIENTO.sub("jaja", text)
    for pattern, out in _LAUGHTER:
        text = pattern.sub(out, text)
    return text


@functools.cache
def _run_pattern(n: int, scope: str) -> re.Pattern:
    chars = "." if scope == "any" else f"[{char_class(char_run_alphabet())}]"  # "." : anything but \n
    return re.compile(rf"({chars})\1{{{n},}}")


def _cap_runs(text: str, n: int, scope: str) -> str:
    return _run_pattern(n, scope).sub(lambda m: m.group(1) * n, text)


def _emoji(text: str, mode: str, style: str, wrapper: str) -> str:
    if mode == "keep":
        return text
    if mode == "name" and style == "pysentimiento":
        mark = f" {wrapper} ".replace("  ", " ")
        text = emoji.demojize(text, language="es", delimiters=("|", "|"))
        return _EMOJI_PIPES.sub(lambda m: mark + " ".join(m.group(1).split("_")) + mark, text)
    marked = emoji.demojize(text, language="es", delimiters=("\ufdd2", "\ufdd3"))
    if mode == "remove":
        return _EMOJI_MARK.sub(" ", marked)

    def name(m: re.Match) -> str:
        words = m.group(1).replace("_", " ")
        return f" {wrapper} {words} {wrapper} " if wrapper else f" {words} "

    return _EMOJI_MARK.sub(name, marked)


def _whitespace(text: str, collapse: bool, strip: bool) -> str:
    if collapse:
        return " ".join(text.split())
    return text.strip() if strip else text


_STEPS: dict[str, Callable[[str, EffectiveRules], str]] = {
    "unicode_nfc": lambda t, r: unicodedata.normalize("NFC", t) if r.unicode_nfc else t,
    "html_unescape": lambda t, r: html.unescape(t) if r.html_unescape else t,
    "urls": lambda t, r: _urls(t, r.url_style, r.url_token) if r.urls else t,
    "mentions": lambda t, r: _mentions(t, r.mention_style, r.user_token) if r.mentions else t,
    "remove_rt": lambda t, r: _RT.sub(" ", t) if r.remove_rt else t,
    "remove_ellipsis": lambda t, r: t.replace("…", " ") if r.remove_ellipsis else t,
    "hashtags": lambda t, r: _hashtag(t, r.hashtags, r.hashtag_style, r.hashtag_token),
    "char_table": lambda t, r: "".join(PYSENTIMIENTO_CHAR_TABLE.get(c, c) for c in t) if r.char_table else t,
    "laughter": lambda t, r: _laughter(t, r.laughter_style) if r.laughter else t,
    "lowercase": lambda t, r: t.lower() if r.lowercase else t,
    "max_char_run": lambda t, r: _cap_runs(t, r.max_char_run, r.char_run_scope) if r.max_char_run else t,
    "emoji": lambda t, r: _emoji(t, r.emoji, r.emoji_style, r.emoji_wrapper),
    "whitespace": lambda t, r: _whitespace(t, r.collapse_whitespace, r.strip_whitespace),
}


def normalize_row(text: str, rules: EffectiveRules | NormalizeRules) -> str:
    """One text through the enabled rules, in the same order as ``normalize_expr``."""
    r = rules.effective() if isinstance(rules, NormalizeRules) else rules
    for step in RULE_ORDERS[r.rule_order]:
        text = _STEPS[step](text, r)
    return text


@functools.cache
def load_pysentimiento_preprocessing() -> ModuleType | None:
    """The real ``pysentimiento.preprocessing`` module (``preprocess_tweet``), or None if not installed.

    Loaded from its file, without the package ``__init__``, which imports transformers and torch: the
    module itself needs only ``re`` and ``emoji``. pysentimiento is a test/benchmark peer, installed
    ``--no-deps`` (see the Makefile), never a dependency of the library.
    """
    try:
        dist = importlib.metadata.distribution("pysentimiento")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("pysentimiento/preprocessing.py")))
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_pysentimiento_preprocessing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__version__ = dist.version
    return module


__all__ = ["normalize_row", "load_pysentimiento_preprocessing"]

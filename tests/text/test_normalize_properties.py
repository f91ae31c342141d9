"""Property tests for the normaliser (hypothesis): no crash, vectorised == per-row reference,
idempotence under the default preset, and placeholders that stay single whitespace-separated tokens.

The golden and differential tests (test_normalize.py, test_presets_*.py) pin what the rules do on
realistic tweets; these look for inputs nobody wrote down. Each property runs a modest number of
examples (the file takes well under 30 s); texts are normalised in small batches so that the polars
path sees several rows at once, as it does in the pipeline.
"""

from __future__ import annotations

import html
import re
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from twilbert.text.normalize import WORD, NormalizeRules, emoji_table, normalize_texts
from twilbert.text.normalize.reference import normalize_row

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# -- strategies --------------------------------------------------------------------------------------

EMOJI = sorted(emoji_table())  # every sequence the emoji rule knows (ZWJ families, flags, keycaps...)
TWEETISH = [
    "@ana", "@Ana_92", "@@doble", "@a@b", "ana@mail.es", "#ReyesMagos", "#COVID19", "#HTMLParser", "C#", "#2024",
    "https://t.co/abc", "http://x.es/a?b=c", "www.ejemplo.es", "t.co/xyz", "https:…", "htt…", "RT", "RT:", "PARTE",
    "jajaja", "JAJAJ", "jajá", "jejeje", "jsjsjs", "&amp;", "&lt;3", "&#128514;", "&quot;", "…", "holaaaaa", "!!!!!",
    "\t", "\n", "\r\n", " ", "   ", "\u00a0", "n\u0303", "😂😂😂😂", "❤️❤️", "¿qué?", "ÑANDÚ", "ß", "ǅ", ":", ".", "(", ")",
]
# The documented idempotence exceptions are left out of the idempotence strategy and assumed away
# below; everything else may appear here (stray variation selectors, keycaps, İ, ...).
ODD = ["\ufe0f", "\ufe0e", "\u200d", "1️⃣", "#️⃣", "İ", "\U000e0067", "🏴"]
# Any code point but lone surrogates and the noncharacters U+FDD0-U+FDD4 that some rules use as in-band
# markers (a documented limit in docs/normalization.md: a text holding them may come out differently).
_any_char = st.characters(blacklist_categories=("Cs",), blacklist_characters="\ufdd0\ufdd1\ufdd2\ufdd3\ufdd4")


def tweets(fragments: list[str], *, chars=_any_char) -> st.SearchStrategy[str]:
    piece = st.one_of(st.text(chars, max_size=8), st.sampled_from(fragments), st.sampled_from(EMOJI))
    return st.lists(piece, max_size=12).map("".join)


any_tweet = tweets(TWEETISH + ODD)
batches = st.lists(any_tweet, min_size=1, max_size=6)

PRESETS = ["default", "twilbert", "pysentimiento", "none"]
VARIANTS = {  # default rules with other modes switched on, so every code path is exercised
    "default": NormalizeRules(),
    "tags-token_split+wrapper": NormalizeRules(hashtags="token_split", emoji_wrapper="emoji"),
    "tags-replace+emoji-remove": NormalizeRules(hashtags="replace", emoji="remove"),
    "keep-all+runs-any": NormalizeRules(hashtags="keep", emoji="keep", char_run_scope="any", collapse_whitespace=False),
}


# -- the documented exceptions, as predicates --------------------------------------------------------

_EMOJI_RE = re.compile("|".join(re.escape(e) for e in sorted(EMOJI, key=len, reverse=True)))
# Characters that only exist as parts of emoji sequences: left over once whole sequences are taken
# out, they are a broken or stray sequence.
_SEQUENCE_PARTS = re.compile("[\ufe0e\ufe0f\u200d\u20e3\U000e0020-\U000e007f]")
_WORD_CHAR = re.compile(f"[{WORD}]")


def _is_word(s: str) -> bool:
    return bool(s) and all(_WORD_CHAR.fullmatch(c) for c in s)


# Letters whose lower-case form is not a single character of the same word class (İ -> i + U+0307,
# Ⱦ -> U+2C66 outside the Latin ranges, the Kelvin sign -> k): lowercasing then changes what a
# mention or hashtag next to them is. 29 code points.
CASE_SHIFT = frozenset(
    chr(c)
    for c in range(sys.maxunicode + 1)
    if not 0xD800 <= c <= 0xDFFF
    and chr(c).lower() != chr(c)
    and (len(chr(c).lower()) != 1 or _is_word(chr(c)) != _is_word(chr(c).lower()))
)


def stray_sequence_parts(text: str) -> bool:
    """A variation selector, ZWJ, keycap mark or tag character that is not inside a whole emoji."""
    return bool(_SEQUENCE_PARTS.search(_EMOJI_RE.sub(" ", text)))


# -- properties --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS) + [f"preset-{p}" for p in PRESETS])
@settings(max_examples=25, **SETTINGS)
@given(texts=batches)
def test_no_crash_on_arbitrary_text(name, texts):
    rules = NormalizeRules(preset=name.removeprefix("preset-")) if name.startswith("preset-") else VARIANTS[name]
    out = normalize_texts(texts, rules)
    assert len(out) == len(texts) and all(isinstance(t, str) for t in out)
    if rules.effective().collapse_whitespace:
        assert all(t == " ".join(t.split()) for t in out)  # single spaces, stripped


@pytest.mark.parametrize("preset", PRESETS)
@settings(max_examples=40, **SETTINGS)
@given(texts=batches)
def test_vectorised_equals_the_per_row_reference(preset, texts):
    # Documented difference (twilbert/text/normalize/reference.py): emoji.demojize leaves an emoji raw when it
    # begins a longer sequence that is then broken off (a heart + ZWJ + a letter, half a subdivision
    # flag); the vectorised table names it. Only broken sequences differ, so only they are set aside.
    assume(not any(stray_sequence_parts(t) for t in texts))
    rules = NormalizeRules(preset=preset).effective()
    assert normalize_texts(texts, rules) == [normalize_row(t, rules) for t in texts]


@settings(max_examples=40, **SETTINGS)
@given(texts=st.lists(tweets(TWEETISH + ODD[:3]), min_size=1, max_size=6))
def test_vectorised_equals_reference_for_each_rule_variant(texts):
    assume(not any(stray_sequence_parts(t) for t in texts))
    for rules in VARIANTS.values():
        r = rules.effective()
        if not r.collapse_whitespace:
            # Documented: with collapse_whitespace off, runs of spaces may differ (RT removal consumes
            # its spaces); compare up to whitespace runs.
            assert [" ".join(t.split()) for t in normalize_texts(texts, r)] == [" ".join(normalize_row(t, r).split()) for t in texts]
        else:
            assert normalize_texts(texts, r) == [normalize_row(t, r) for t in texts]


# The one idempotence exception found by this file that the module docstring does not list yet:
# a hashtag whose split exposes a URL (``#0Www.0`` -> ``0 www.0`` -> ``0 url``; URLs run before
# hashtags). Reported; assumed away here until the docstring (or the rule order) says otherwise.
_TAG_EXPOSES_URL = re.compile(r"#\w*(?:www\.|https?:|t\.co/)", re.IGNORECASE)


@settings(max_examples=200, **SETTINGS)
@given(texts=st.lists(tweets(TWEETISH), min_size=1, max_size=6))
def test_default_preset_is_idempotent(texts):
    """normalize(normalize(x)) == normalize(x), but for the exceptions the module docstring lists."""
    for t in texts:
        assume(not stray_sequence_parts(t))  # "a stray U+FE0F after # ... a keycap glued to a word"
        assume("\u20e3" not in t)  # a keycap glued to a word (jajáj1️⃣): naming it splits the word
        assume(not CASE_SHIFT.intersection(t))  # "İ lower-cased to i + U+0307" and its kin
        assume(not _TAG_EXPOSES_URL.search(t))  # see above: not yet documented
    rules = NormalizeRules().effective()
    once = normalize_texts(texts, rules)
    for t in once:
        assume(html.unescape(t) == t)  # "double-escaped HTML (&amp;quot; -> &quot; -> ")"
    assert normalize_texts(once, rules) == once


def test_the_assumed_exceptions_are_real():
    """Each assumption above excludes a case that does break idempotence (none is a blanket excuse)."""
    rules = NormalizeRules().effective()
    for text in ["&amp;quot;hola&amp;quot;", "#\ufe0fPARTE", "jajáj1\ufe0f\u20e3", "\u0130@ana", "\u023e@0", "#0Www.0"]:
        once = normalize_texts([text], rules)
        assert normalize_texts(once, rules) != once, text


# -- placeholders ------------------------------------------------------------------------------------

PLACEHOLDER_RULES = {
    "default": NormalizeRules(),  # url, user
    "replace": NormalizeRules(hashtags="replace"),  # + hashtag
    "token_split": NormalizeRules(hashtags="token_split", emoji_wrapper="emoji"),  # + hashtag, emoji
}
MENTIONS = ["@ana", "@Ana_92", "@@doble", "@hugo@luis", "@ñoño"]
URLS = ["https://t.co/abc", "http://x.es/a?b=c&d=e", "https:…", "htt…", "www.ejemplo.es", "t.co/xyz", "HTTPS://X.ES"]
TAGS = ["#ReyesMagos", "#COVID19", "#Viva_España", "#Año2024"]
TRIGGERS = MENTIONS + URLS + TAGS
SEPARATORS = ["", " ", "  ", ":", ",", ".", "(", ")", "¡", "!", "?", "\t", "\n", '"', "'", "…", "😂", "-"]
# Neighbours cannot spell a placeholder themselves: no u/h (user, url, hashtag), no & (an entity
# such as &#117; is a "u"), no 🥌 (its Spanish name "piedra de curling" contains "url"), no e/m/o/j
# (the emoji wrapper); everything else goes, emoji names included.
_neighbour_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="uUhHeEmMoOjJ&\U0001f94c")
_neighbour = st.text(_neighbour_chars, max_size=6)


@st.composite
def glued(draw) -> tuple[str, int]:
    """A text of neighbours and placeholder triggers glued by arbitrary separators (often none)."""
    parts, n = [], 0
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(TRIGGERS)))
            n += 1
        else:
            parts.append(draw(_neighbour))
        parts.append(draw(st.sampled_from(SEPARATORS)))
    return "".join(parts), n


@pytest.mark.parametrize("name", list(PLACEHOLDER_RULES))
@settings(max_examples=80, **SETTINGS)
@given(cases=st.lists(glued(), min_size=1, max_size=6))
def test_placeholders_stay_single_whitespace_separated_tokens(name, cases):
    rules = PLACEHOLDER_RULES[name].effective()
    placeholders = ["url", "user"] + (["hashtag"] if rules.hashtags != "split" else []) + ([rules.emoji_wrapper] if rules.emoji_wrapper else [])
    out = normalize_texts([c for c, _ in cases], rules)
    for (text, _), norm in zip(cases, out):
        for token in norm.split(" "):
            for p in placeholders:
                assert p not in token or token == p, (text, norm, token)


# Plain words: no space inside, and none of @ # w W / either, so that no neighbour is itself a
# mention, a tag or a URL (h is out already).
_plain_word = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"), blacklist_characters="uUhHeEmMoOjJ&@#wW/\U0001f94c\x85"), min_size=1, max_size=6)


@pytest.mark.parametrize("name", list(PLACEHOLDER_RULES))
@settings(max_examples=60, **SETTINGS)
@given(words=st.lists(st.one_of(st.sampled_from(TRIGGERS), _plain_word), min_size=1, max_size=8))
def test_each_spaced_trigger_becomes_exactly_one_placeholder(name, words):
    """With spaces around them, every URL and mention (and tag, when replaced) is one placeholder."""
    rules = PLACEHOLDER_RULES[name].effective()
    text = " ".join(words)
    tokens = normalize_texts([text], rules)[0].split(" ")
    expected = {"url": sum(w in URLS for w in words), "user": sum(w in MENTIONS for w in words)}
    if rules.hashtags != "split":
        expected["hashtag"] = sum(w in TAGS for w in words)
    assert {p: tokens.count(p) for p in expected} == expected, (text, tokens)

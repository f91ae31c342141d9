"""Tweet normalisation as one polars expression: URLs, mentions, RT, hashtags, laughter, emoji...

The original TWilBERT normalised in three places with per-row Python (inventory §2): ``re.sub`` for URLs
and mentions, ``html.unescape``, and ``str.replace("RT", " ")``, which also turned ``PARTE`` into
``PA E`` (§2.2 bug). Here every rule is a switch in :class:`NormalizeRules`, and all of them compile to
a single ``pl.Expr`` (:func:`normalize_expr`) that runs on whole columns: regexes and Aho-Corasick
tables in polars' Rust kernels, plus numpy for the one rule regexes cannot express. A per-row
pure-Python twin of exactly the same rules lives in :mod:`twilbert.text.reference`; tests hold the two
equal on hand-written golden tweets and on the real tweets of ``../shared/data``.

Presets (``normalize.rules.preset``; any rule set explicitly overrides the preset's value):

* ``default``       our rules, below: every cleaning rule on, lower-case, emoji as Spanish words.
* ``twilbert``      the original TWilBERT's preprocessing, exactly: its offline corpus cleaning plus the
                    online ``Utils.preprocessing`` (inventory §2.1-§2.2, which is a superset) -- URLs
                    ``https?://\\S+`` -> ``url``, mentions ``@+\\w+`` -> ``user`` (bare, no spaces added),
                    ``…`` -> space, RT, *then* ``html.unescape``, whitespace join. One deliberate
                    deviation: ``RT`` is removed only as a whitespace-delimited token, not as every
                    substring (§2.2 bug: ``PARTE`` -> ``PA E``). Not included: the lower-casing and accent
                    stripping of its WordPiece ``FullTokenizer`` (§2.3) -- they belong to the tokenizer,
                    not the preprocessing, and our SentencePiece vocabularies keep case and accents
                    unless asked; set ``lowercase: true`` for the original's case folding.
* ``pysentimiento`` ``pysentimiento.preprocessing.preprocess_tweet(text, lang="es")`` 0.7.x with its
                    default arguments, exactly (RoBERTuito's preprocessing): hashtags -> ``hashtag`` +
                    camel-case split, lower-cased; its character table; handles -> ``@usuario``; URLs
                    -> ``url``; runs of any character cut to 3; emoji -> `` emoji <Spanish name> emoji ``;
                    laughter -> ``jaja``; strip. Its quirks are reproduced, not fixed (bare ``@`` and
                    ``ana@mail.es`` become handles, ``hola.como`` is a URL, literal ``|`` pairs up
                    with emoji delimiters, bare ``❤`` is deleted), since the point is to feed a model
                    exactly what it was trained on.
* ``none``          every rule off (text passes through unchanged).

The ``twilbert`` and ``pysentimiento`` presets differ from ours not only in switches but in how some
rules are *defined* (the ``*_style`` fields: the original's regex instead of ours) and in the order the
rules run (``rule_order``). Differential tests run both presets against the real implementations on
every real tweet of ``../shared/data`` (tests/text/test_presets_*.py).

Rules, in the order they run under ``rule_order: default`` (each can be switched off):

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
 8. ``char_table``       pysentimiento's character table (``« » “ ”`` -> ``"``, ``… – — ‘ ’ • © °``
                         ... deleted, ``€`` -> ``$``, ``♥`` -> ``❤️``); off in ``default``.
 9. ``laughter``         whole words made of alternating ``j`` and vowel runs with at least two of
                         each: ``jajaja``, ``JAJAJ``, ``jajajjaja``, ``ajajaja``, ``jajá`` -> ``jaja``;
                         likewise ``jejeje`` -> ``jeje``, ``jijiji`` -> ``jiji``, ``jojojo`` -> ``jojo``.
                         Left alone: ``ja``, ``jaj``, mixed ``jajeje``, ``jsjsjs``, ``haha``.
10. ``lowercase``        ``str.lower``; accents and ``ñ`` are kept (SentencePiece can afford them).
11. ``max_char_run``     runs of one character longer than N are cut to N (``holaaaaa`` -> ``holaaa``,
                         ``!!!!!`` -> ``!!!``, ``😂😂😂😂`` -> ``😂😂😂``), for letters, punctuation and
                         single-code-point emoji (:func:`char_run_alphabet`); never digits (``1000000``
                         is a number) nor spaces (rule 13). After lowercasing so ``Aaaaa`` is a run;
                         before emoji naming so a run of one emoji is capped, not its name repeated.
                         (``❤️❤️❤️❤️`` is ``❤`` + U+FE0F repeated, no run: it stays four hearts.)
                         ``char_run_scope: any`` caps every character but newline, as pysentimiento.
12. ``emoji``            ``keep`` | ``name`` (the Spanish CLDR name from the ``emoji`` package, as
                         ``emoji.demojize(language="es")``: ``🤣`` -> `` cara revolviéndose de la risa ``,
                         optionally wrapped: `` emoji ... emoji ``) | ``remove``. Longest sequences
                         first, so ZWJ families, skin tones and flags are one emoji, even glued to a
                         word (``🤣estoy``). Stray variation selectors go, as with ``demojize``. Late, so
                         no other rule touches a name (names are lower-case words).
13. ``collapse_whitespace``  runs of whitespace (``str.isspace``) -> one space, stripped;
                         ``strip_whitespace`` alone only strips the ends (pysentimiento).

``rule_order: twilbert`` moves ``html_unescape`` after RT and ``remove_ellipsis`` before RT (the
original's ``Utils.preprocessing``: ``&#64;ana`` stays ``@ana``); ``rule_order: pysentimiento`` runs
hashtags, char table, mentions, URLs, character runs, emoji, laughter, lowercase (see ``RULE_ORDERS``).

Placeholders (``url``, ``user``, ``hashtag``, the emoji wrapper) are inserted with spaces around them
under the default styles, so after rule 13 each is one whitespace-separated token:
``visita:https://x.co`` -> ``visita: url``. The ``twilbert`` and ``pysentimiento`` styles insert them
bare, as their originals do (``visita:url``).

Deliberate limits (identical in the reference, tested):
* Letter classes are explicit Latin ranges (ASCII, Latin-1, Latin Extended-A/B), not ``\\w``, so polars'
  Rust regex and Python's ``re`` agree character for character. Tags in other scripts are kept as is.
  Where an original uses ``\\w``, its style uses Python's ``\\w`` as an explicit class
  (:func:`python_word`): Rust's own ``\\w`` differs (it includes combining marks and ZWJ).
* The hashtag split (``split``, ``token_split``; U+FDD0) and the ``pysentimiento`` emoji step
  (U+FDD2-U+FDD4) use noncharacters as in-band markers: a text that already contains them may come
  out differently.
* Idempotence, ``normalize(normalize(x)) == normalize(x)``, holds on every real tweet of
  ``../shared/data`` but one under the default preset: double-escaped HTML (``&amp;quot;`` ->
  ``&quot;`` -> ``"``). Contrived inputs can also break it where emoji handling changes what touches
  what: a stray U+FE0F after ``#`` (``#️PARTE`` -> ``#parte``, a tag next time), a keycap glued to a
  word (``jajáj1️⃣``), ``İ`` lower-cased to ``i`` + U+0307 (and 28 other letters whose lower case
  changes word class, e.g. the Kelvin sign), and a hashtag split that exposes a URL
  (``#0Www.0`` -> ``0 www.0``, a URL next time). The hypothesis properties in
  tests/text/test_normalize_properties.py exclude exactly these. The original presets are not idempotent.

Speed: most rules touch a minority of rows (URLs, mentions, NFD text, HTML, hashtags, laughter, runs,
emoji), so each first finds its rows with a cheap scan and runs the full rule on those rows only
(:func:`_on_matching_rows`). On the real tweets of ``../shared/data`` replicated to 1M rows (106 MB),
default preset, 2 cores of a shared AMD EPYC VM (2026-12-02; figures move +-20 % run to run there):
~290-330k tweets/s with ``collect(engine="streaming")`` (batches run in parallel), ~160-185k
single-threaded (eager engine), vs 3.5k for the per-row reference in the same run (an earlier Xeon
machine ran all of these about twice as fast). CPU per 1M tweets: hashtags 1.3 s, whitespace 0.6,
character runs 0.6, lowercase 0.45-0.65, URLs 0.5, NFC 0.5, emoji 0.45, laughter 0.4, mentions 0.35,
the rest < 0.1 each. Every gated rule also costs ~1 ms of Python per batch (the streaming engine calls
it once per ~30k rows).
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
PresetName = Literal["default", "twilbert", "pysentimiento", "none"]
RuleOrder = Literal["default", "twilbert", "pysentimiento"]
OriginStyle = Literal["default", "twilbert", "pysentimiento"]  # whose definition of a rule
PysentimientoStyle = Literal["default", "pysentimiento"]
CharRunScope = Literal["alphabet", "any"]
HASHTAG_MODES: tuple[str, ...] = ("keep", "split", "replace", "token_split")
EMOJI_MODES: tuple[str, ...] = ("keep", "name", "remove")
_ORIGINS = ("default", "twilbert", "pysentimiento")
# Fields with a fixed set of values -> the values (checked in __post_init__; from_dict checks types).
CHOICES: dict[str, tuple[str, ...]] = {
    "rule_order": _ORIGINS,
    "url_style": _ORIGINS,
    "mention_style": _ORIGINS,
    "hashtags": HASHTAG_MODES,
    "hashtag_style": ("default", "pysentimiento"),
    "laughter_style": ("default", "pysentimiento"),
    "char_run_scope": ("alphabet", "any"),
    "emoji": EMOJI_MODES,
    "emoji_style": ("default", "pysentimiento"),
}


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
    for name, allowed in CHOICES.items():
        value = getattr(obj, name)
        if value is not None or not skip_none:
            check(value in allowed, name, f"expected one of {list(allowed)}, got {value!r}")
    run = getattr(obj, "max_char_run")
    if run is not None or not skip_none:
        check(isinstance(run, int) and not isinstance(run, bool), "max_char_run", f"must be an int, got {run!r}")
        # 1 would merge Spanish double letters (llave, perro, acción); 0 switches the rule off.
        check(run >= 0 and run != 1, "max_char_run", f"must be 0 (off) or >= 2, got {run}")


@dataclass(frozen=True, kw_only=True)
class NormalizeRules:
    """The ``normalize.rules`` section of params.yaml. ``null`` (None) takes the preset's value."""

    preset: PresetName = "default"
    rule_order: RuleOrder | None = None  # whose rule order: ours, TWilBERT's or pysentimiento's
    unicode_nfc: bool | None = None  # compose NFD text (n + U+0303 -> ñ)
    html_unescape: bool | None = None  # &amp; &lt; &#39; ... -> characters
    urls: bool | None = None  # URLs -> url_token
    url_style: OriginStyle | None = None  # whose URL regex
    url_token: str | None = None
    mentions: bool | None = None  # @handle -> user_token
    mention_style: OriginStyle | None = None  # whose handle regex: Unicode words / @+\w+ / @[a-zA-Z0-9_]{0,15}
    user_token: str | None = None
    remove_rt: bool | None = None  # retweet marker, as a whole token only
    remove_ellipsis: bool | None = None  # U+2026 -> space
    hashtags: HashtagMode | None = None
    hashtag_style: PysentimientoStyle | None = None  # whose tag regex and camel-case split (+ lower-cased tag)
    hashtag_token: str | None = None
    char_table: bool | None = None  # pysentimiento's character replacement table
    laughter: bool | None = None  # jajaja -> jaja (also je/ji/jo)
    laughter_style: PysentimientoStyle | None = None  # whole words j+vowel / pysentimiento's [ja][ja]+aj[ja]+
    max_char_run: int | None = None  # cap runs of one character; 0 = off
    char_run_scope: CharRunScope | None = None  # which characters' runs: letters/punct/emoji, or any but \n
    emoji: EmojiMode | None = None
    emoji_style: PysentimientoStyle | None = None  # pysentimiento: its "|name|" delimiters, quirks included
    emoji_wrapper: str | None = None  # "emoji" -> " emoji cara llorando de risa emoji "
    lowercase: bool | None = None
    collapse_whitespace: bool | None = None  # whitespace runs -> one space, and strip
    strip_whitespace: bool | None = None  # strip the ends only (collapse_whitespace strips anyway)

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
    """The rules actually applied (logged with every run). Built by :meth:`NormalizeRules.effective`.

    The fields added with the original-compatible presets have defaults that reproduce the behaviour
    from before they existed, so rule dicts saved with older models still load and mean the same."""

    rule_order: RuleOrder = "default"
    unicode_nfc: bool
    html_unescape: bool
    urls: bool
    url_style: OriginStyle = "default"
    url_token: str
    mentions: bool
    mention_style: OriginStyle = "default"
    user_token: str
    remove_rt: bool
    remove_ellipsis: bool
    hashtags: HashtagMode
    hashtag_style: PysentimientoStyle = "default"
    hashtag_token: str
    char_table: bool = False
    laughter: bool
    laughter_style: PysentimientoStyle = "default"
    max_char_run: int
    char_run_scope: CharRunScope = "alphabet"
    emoji: EmojiMode
    emoji_style: PysentimientoStyle = "default"
    emoji_wrapper: str
    lowercase: bool
    collapse_whitespace: bool
    strip_whitespace: bool = False

    def __post_init__(self) -> None:
        _check_rule_values(self, skip_none=False)
        owner: dict[str, str] = {}  # token -> the key that set it first; a clash names the later key
        for key, token in _placeholder_fields(self):
            check(token not in owner, key, f"placeholder tokens must differ: {token!r} is also {owner.get(token)}")
            owner[token] = key
        if self.lowercase:
            # Placeholders are inserted before lowercasing, which would otherwise change them.
            for name in ("url_token", "user_token", "hashtag_token", "emoji_wrapper"):
                value = getattr(self, name)
                check(value == value.lower(), name, f"must be lower-case when lowercase is on, got {value!r}")


_OFF: dict[str, object] = {
    "rule_order": "default",
    "unicode_nfc": False,
    "html_unescape": False,
    "urls": False,
    "url_style": "default",
    "url_token": "url",
    "mentions": False,
    "mention_style": "default",
    "user_token": "user",
    "remove_rt": False,
    "remove_ellipsis": False,
    "hashtags": "keep",
    "hashtag_style": "default",
    "hashtag_token": "hashtag",
    "char_table": False,
    "laughter": False,
    "laughter_style": "default",
    "max_char_run": 0,
    "char_run_scope": "alphabet",
    "emoji": "keep",
    "emoji_style": "default",
    "emoji_wrapper": "",
    "lowercase": False,
    "collapse_whitespace": False,
    "strip_whitespace": False,
}

PRESETS: dict[str, dict[str, object]] = {
    # Why these defaults: every cleaning rule on (none loses meaning a tweet model needs), lowercase as
    # the original's tokenizer did (but accents kept: SentencePiece can afford them), emoji as Spanish
    # words so the vocabulary shares pieces with text, and hashtags "split": TWilBERT segments are short
    # (<= 40 tokens per side), so a `hashtag` marker per tag (token_split, RoBERTuito's choice) costs
    # real length, while the words of the tag carry most of its meaning. token_split stays one switch away.
    "default": _OFF | {
        "unicode_nfc": True,
        "html_unescape": True,
        "urls": True,
        "mentions": True,
        "remove_rt": True,
        "remove_ellipsis": True,
        "hashtags": "split",
        "laughter": True,
        "max_char_run": 3,
        "emoji": "name",
        "lowercase": True,
        "collapse_whitespace": True,
    },
    # The original TWilBERT's scripts/preprocess_corpora.py + Utils.preprocessing (inventory §2.1-2.2).
    # Deviation: RT only as a token (remove_rt), never as a substring. No lowercase: see the module doc.
    "twilbert": _OFF | {
        "rule_order": "twilbert",
        "html_unescape": True,
        "urls": True,
        "url_style": "twilbert",
        "mentions": True,
        "mention_style": "twilbert",
        "remove_rt": True,
        "remove_ellipsis": True,
        "collapse_whitespace": True,
    },
    # pysentimiento 0.7.x preprocess_tweet(text, lang="es") with default arguments (RoBERTuito).
    "pysentimiento": _OFF | {
        "rule_order": "pysentimiento",
        "urls": True,
        "url_style": "pysentimiento",
        "mentions": True,
        "mention_style": "pysentimiento",
        "user_token": "@usuario",
        "hashtags": "token_split",
        "hashtag_style": "pysentimiento",
        "char_table": True,
        "laughter": True,
        "laughter_style": "pysentimiento",
        "max_char_run": 3,
        "char_run_scope": "any",
        "emoji": "name",
        "emoji_style": "pysentimiento",
        "emoji_wrapper": "emoji",
        "strip_whitespace": True,
    },
    "none": dict(_OFF),
}

# The order the rules run in, per ``rule_order``. "whitespace" is collapse_whitespace/strip_whitespace.
RULE_ORDERS: dict[str, tuple[str, ...]] = {
    "default": (
        "unicode_nfc", "html_unescape", "urls", "mentions", "remove_rt", "remove_ellipsis", "hashtags",
        "char_table", "laughter", "lowercase", "max_char_run", "emoji", "whitespace",
    ),
    # Utils.preprocessing: url, mention, "…", RT, html.unescape, join. So "RT…" is a token RT (the "…"
    # is a space by then) and "&#64;ana" stays "@ana" (unescaped after the mention rule).
    "twilbert": (
        "unicode_nfc", "urls", "mentions", "remove_ellipsis", "remove_rt", "html_unescape", "hashtags",
        "char_table", "laughter", "lowercase", "max_char_run", "emoji", "whitespace",
    ),
    # preprocess_tweet: hashtags, char table, handles, URLs, shorten, demojize, laughter, strip. Lowercase
    # last, where RoBERTuito's uncased tokenizer applies it (so its case-sensitive laughter rule still sees "JAJA").
    "pysentimiento": (
        "unicode_nfc", "html_unescape", "hashtags", "char_table", "mentions", "urls", "remove_rt",
        "remove_ellipsis", "max_char_run", "emoji", "laughter", "lowercase", "whitespace",
    ),
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
_TAG_START = "\ufdd0"
_EMO_START, _EMO_END, _DEAD_END = "\ufdd2", "\ufdd3", "\ufdd4"  # pysentimiento emoji spans
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
def emoji_codes() -> dict[str, str]:
    """Every emoji sequence of the ``emoji`` package -> its Spanish CLDR short name, as ``demojize``
    writes it between its delimiters (``"😂"`` -> ``"cara_llorando_de_risa"``)."""
    import emoji

    emoji.demojize("", language="es")  # loads the Spanish names into EMOJI_DATA (lazy since emoji 2.13)
    return {e: d["es"][1:-1] for e, d in emoji.EMOJI_DATA.items() if "es" in d}


@functools.cache
def emoji_table() -> dict[str, str]:
    """Every emoji sequence of the ``emoji`` package -> its Spanish CLDR name as words."""
    return {e: name.replace("_", " ") for e, name in emoji_codes().items()}


@functools.cache
def python_word() -> str:
    """Python's ``\\w`` (``str.isalnum()`` or ``_``) as the body of an explicit class (734 ranges).

    The original TWilBERT and pysentimiento use ``\\w``; polars' Rust regex has a ``\\w`` too, but by
    Unicode's definition (it adds combining marks, ZWJ, ...), so their rules use this class instead."""
    return _ranges_body([cp for cp in range(0x110000) if chr(cp).isalnum() or cp == 0x5F])


# pysentimiento 0.7.x preprocessing.replacements, transcribed (None -> ""): applied per character, once.
# Note "❤" (U+2764) is deleted while "♥"/"♡" become "❤️" (U+2764 U+FE0F); tests compare with the original.
PYSENTIMIENTO_CHAR_TABLE: dict[str, str] = {
    "~": "", "£": "", "¥": "", "¨": '"', "©": "", "«": '"', "°": "", "´": "", "¶": "", "·": "", "º": "",
    "»": '"', "×": "", "ا": "", "–": "", "—": "", "‘": "", "’": "", "“": '"', "”": '"', "•": "", "…": "",
    "‼": "!", "€": "$", "™": "", "●": "", "☠": "", "☹": "", "☺": "", "☻": "😃", "♀": "", "♂": "",
    "♡": "❤️", "♥": "❤️", "⚰": "", "⛱": "", "⛹": "", "✈": "", "✓": "", "❤": "", "ー": "", "🕯": "",
    "🛰": "",
}
# The top-level domains of pysentimiento's url_regex, in its order (alternation order matters: com|co).
PYSENTIMIENTO_TLDS: tuple[str, ...] = (
    "com", "co", "org", "edu", "gov", "uk", "net", "ca", "de", "jp", "fr", "au", "us", "ru", "ch", "it",
    "nl", "se", "no", "es", "mil", "iq", "io", "ac", "ly", "sm",
)


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


def _ranges_body(codepoints: list[int]) -> str:
    """Body of a ``[...]`` class for these code points, as ranges."""
    cps, parts, i = sorted(set(codepoints) - set(range(0xD800, 0xE000))), [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = chr(cps[i]), chr(cps[j])
        parts.append(char_class(lo) if i == j else f"{char_class(lo)}-{char_class(hi)}")
        i = j + 1
    return "".join(parts)


def _ranges_class(codepoints: list[int]) -> str:
    return "[" + _ranges_body(codepoints) + "]"


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


def _nfc(s: pl.Series) -> pl.Series:
    """NFC of rows that hold a trigger character. Decomposed Spanish text (a fifth of the real tweets of
    ../shared/data are NFD) only needs letter + mark pairs composed: one Aho-Corasick pass does that,
    and only rows where a trigger character remains afterwards run polars' full ``normalize("NFC")``,
    about five times slower per row. Exact: the pass keeps the text canonically equivalent, and a text
    with no trigger character is already NFC (:func:`_nfc_trigger`)."""
    pats, comps = _nfc_pairs()
    composed = s.str.replace_many(list(pats), list(comps))
    return _apply_where(composed, composed.str.contains(_nfc_trigger()), lambda t: t.str.normalize("NFC"))


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


def _urls(expr: pl.Expr, style: str, token: str) -> pl.Expr:
    if style == "twilbert":
        # The original's r"https?://\S+" -> "url" (bare: "visita:https://x" -> "visita:url").
        pattern = rf"https?://[^{SPACE}]+"
        return _on_matching_rows(expr, "https?://", lambda s: s.str.replace_all(pattern, _literal(token)))
    if style == "pysentimiento":
        return _urls_pysentimiento(expr, token)
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


def _urls_pysentimiento(expr: pl.Expr, token: str) -> pl.Expr:
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
    replace = "${1}${2}" + _literal(token)
    # Every match holds "." + one of the TLDs: a literal alternation the regex engine scans fast.
    return _on_matching_rows(expr, rf"\.(?:{tlds})", lambda s: s.str.replace_all(pattern, replace))


def _mentions(expr: pl.Expr, style: str, token: str) -> pl.Expr:
    if style == "twilbert":
        # The original's r"(@+\w+)" -> "user": no left boundary ("ana@mail.es" -> "anauser.es"), bare.
        pattern, replace = rf"@+[{python_word()}]+", _literal(token)
    elif style == "pysentimiento":
        # pysentimiento's r"@[a-zA-Z0-9_]{0,15}" -> "@usuario": a bare "@" is a handle, and a longer
        # name keeps its tail ("@" + 20 letters -> "@usuario" + 5 letters).
        pattern, replace = r"@[a-zA-Z0-9_]{0,15}", _literal(token)
    else:
        # Glued handles ("@ana@pepe", a missing space) are one mention: the second "@" follows a word
        # character, and leaving it would make the output change again when normalised twice.
        # Handles take any Unicode word character, as the original's ``@+\w+``: real Twitter handles are
        # ASCII, but corpora from elsewhere (and hand-written ones) have "@familia_caótica", and an ASCII
        # class would leave "user ótica" behind.
        pattern, replace = rf"(^|[^{WORD}])@+[{WORD}]+(?:@+[{WORD}]+)*", f"${{1}} {_literal(token)} "
    return _on_matching_rows(expr, "@", lambda s: s.str.replace_all(pattern, replace))


def _remove_rt(expr: pl.Expr) -> pl.Expr:
    # A whitespace-delimited RT (repeated ones in one match: the boundary spaces are consumed).
    # Only rows holding "RT" run the regex (a literal scan; ~1 in 30 real tweets has it).
    pattern = rf"(?:^|[{SPACE}])RT(?:[{SPACE}]+RT)*(?:[{SPACE}]|$)"
    return _on_matching_rows(expr, "RT", lambda s: s.str.replace_all(pattern, " "))


def _cut_at(s: pl.Series, sep: str) -> tuple[pa.ListArray, pl.Series, pl.Series]:
    """Rows (no nulls) cut at every literal ``sep``, as one flat column of pieces for the whole batch.

    Returns the list array (its offsets say which pieces make which row), the pieces ``(P,)``, row
    after row, and the indices ``(T,)`` of the pieces that follow a ``sep`` (every piece but a row's
    first), so a rule can rewrite those as one column and :func:`_join_cut` put the rows back."""
    arr = s.str.split(sep, literal=True).to_arrow()
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    pieces = pl.Series(arr.values)  # (P,)
    offsets = np.asarray(arr.offsets)  # (n+1,)
    after = np.ones(len(pieces), dtype=bool)
    after[offsets[:-1][offsets[:-1] < len(pieces)]] = False  # a row's first piece has no sep before it
    return arr, pieces, pl.Series(np.flatnonzero(after).astype(np.uint32))


def _join_cut(name: str, arr: pa.ListArray, pieces: pl.Series) -> pl.Series:
    """The rows of :func:`_cut_at`'s ``arr`` with their pieces replaced by ``pieces``, joined back."""
    return pl.Series(name, type(arr).from_arrays(arr.offsets, pieces.to_arrow())).list.join("")


@functools.cache
def _tag_char_flags() -> np.ndarray:
    """Code point (< U+0800: one or two UTF-8 bytes) -> bit flags 1 lower, 2 upper, 4 digit, 8 letter, 16 "_"."""
    flags = np.zeros(0x800, dtype=np.uint8)
    for bit, cls in ((1, LOWER), (2, UPPER), (4, "0-9"), (8, LETTER)):
        flags[[ord(c) for c in _expand_ranges(cls)]] |= bit
    flags[ord("_")] |= 16
    return flags


def split_tag_words(body: pl.Series) -> pl.Series:
    """Hashtag bodies (WORD characters only) split into words: a space at every lower|Upper,
    Upper|Upper-lower (``HTML|Parser``), digit|letter and letter|digit boundary, and for every ``_``.

    Each boundary depends only on the two or three characters around it (the reference's lookarounds,
    :data:`twilbert.text.reference._CAMEL`), so it is found for all bodies at once with numpy over
    their UTF-8 bytes. Why not a regex: polars' regex has no lookarounds, and the loop of
    one-boundary-per-pass replacements with capture groups that stood in for them cost ~2 us per tag
    and pass (0.9 s per 1M real tweets; this is ~0.1 s). WORD characters are below U+0250, so each
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


def _hashtags(expr: pl.Expr, mode: str, style: str, token: str) -> pl.Expr:
    if mode == "keep":
        return expr
    if style == "pysentimiento":
        return _hashtags_pysentimiento(expr, mode, token)
    tag = rf"(^|[^{WORD}&])#+([{WORD}]*[{LETTER}][{WORD}]*)"  # a letter is required: #2024 is no tag
    if mode == "replace":
        return _on_matching_rows(expr, "#", lambda s: s.str.replace_all(tag, f"${{1}} {_literal(token)} "))
    # The "#" becomes a space, never nothing: "@#MesQueUnClub" must not turn into the mention "@Mes".
    start = f" {token} " if mode == "token_split" else " "

    def split_tags(s: pl.Series) -> pl.Series:
        s = s.str.replace_all(tag, f"${{1}}{_TAG_START}${{2}}")
        arr, pieces, idx = _cut_at(s, _TAG_START)
        cand = pieces.gather(idx)  # (T,) one per tag: its characters, then the rest up to the next tag
        body = cand.str.extract(rf"^([{WORD}]*)", 1)
        rest = cand.str.slice(body.str.len_chars())
        split = pl.select(pl.concat_str(pl.lit(start), pl.lit(split_tag_words(body)), pl.lit(rest))).to_series()
        return _join_cut(s.name, arr, pieces.scatter(idx, split))

    return _on_matching_rows(expr, "#", split_tags)


def _hashtags_pysentimiento(expr: pl.Expr, mode: str, token: str) -> pl.Expr:
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
        arr, pieces, idx = _cut_at(s, "#")
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
        return _join_cut(s.name, arr, pieces.scatter(idx, tag.zip_with(is_tag, "#" + cand)))

    return _on_matching_rows(expr, "#", rewrite)


def _char_table(expr: pl.Expr) -> pl.Expr:
    keys = list(PYSENTIMIENTO_CHAR_TABLE)
    values = [PYSENTIMIENTO_CHAR_TABLE[k] for k in keys]
    trigger = "[" + char_class("".join(keys)) + "]"
    return _on_matching_rows(expr, trigger, lambda s: s.str.replace_many(keys, values))


def _laughter(expr: pl.Expr, style: str) -> pl.Expr:
    if style == "pysentimiento":
        # Its Spanish rule as is: anywhere in a word, lower-case only ("JAJAJA" stays).
        return _on_matching_rows(expr, "aj", lambda s: s.str.replace_all("[ja][ja]+aj[ja]+", "jaja"))
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


def cap_char_runs(s: pl.Series, max_run: int, scope: CharRunScope = "alphabet") -> pl.Series:
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
def _char_run_trigger(max_run: int) -> str:
    # An alternation of literal runs ("aaaa|bbbb|..."): a DFA finds candidate rows without backreferences.
    return "|".join(pl.escape_regex(c * (max_run + 1)) for c in char_run_alphabet())


@functools.cache
def _any_run_triggers(max_run: int) -> tuple[str, str]:
    """Row triggers for ``char_run_scope: any``: literal runs of the common characters (the alphabet,
    digits, spaces, Latin-1, combining accents, general punctuation, arrows, regional indicators, emoji
    joiners), and a class for every other character -- rows holding one (0.3 % of real tweets) go to
    the exact numpy pass whether or not they have a run. Two scans: one regex holding both is far slower."""
    span = lambda a, b: "".join(chr(c) for c in range(a, b + 1))  # noqa: E731
    common = char_run_alphabet() + "0123456789" + _expand_ranges(SPACE).replace("\n", "") + "\u200d\ufe0f\ufe0e\u20e3"
    common += span(0x80, 0xFF) + span(0x300, 0x36F) + span(0x2000, 0x206F) + span(0x2190, 0x21FF) + span(0x1F1E6, 0x1F1FF)
    common = "".join(dict.fromkeys(common))
    runs = "|".join(pl.escape_regex(c * (max_run + 1)) for c in common)
    return runs, f"[^{char_class(common)}\n]"


def _char_runs(expr: pl.Expr, max_run: int, scope: str) -> pl.Expr:
    if scope == "alphabet":
        return _on_matching_rows(expr, _char_run_trigger(max_run), lambda s: cap_char_runs(s, max_run))
    runs, rare = _any_run_triggers(max_run)

    def cap(s: pl.Series) -> pl.Series:
        return _apply_where(s, s.str.contains(runs) | s.str.contains(rare), lambda t: cap_char_runs(t, max_run, "any"))

    return expr.map_batches(cap, return_dtype=pl.String, is_elementwise=True)


@functools.cache
def _emoji_dead_ends() -> tuple[str, ...]:
    """Prefixes of longer emoji sequences that are no emoji themselves but start with one
    (``🕵️`` + ZWJ, of ``🕵️‍♂️``). ``emoji.demojize`` walks its trie as deep as the text allows and,
    stopping at such a node, leaves the first character raw (``🕵️‍`` + ``x`` -> ``🕵‍x``), where a
    longest-match table names the shorter emoji. Matched first (longest), they flag those rows."""
    codes = emoji_codes()
    prefixes = {e[:k] for e in codes for k in range(2, len(e))}
    return tuple(sorted(p for p in prefixes if p not in codes and any(p[:k] in codes for k in range(1, len(p)))))


@functools.cache
def _emoji_pattern_frame(pats: tuple[str, ...], repl: tuple[str, ...]) -> pl.DataFrame:
    """An emoji replacement table as a frame, in its order, with each pattern's first character."""
    first = pl.Series(pats, dtype=pl.String).str.slice(0, 1)
    return pl.DataFrame({"pat": pats, "repl": repl, "first": first, "ascii": first.str.len_bytes() == 1})


def _replace_emoji(s: pl.Series, pats: tuple[str, ...], repl: tuple[str, ...]) -> pl.Series:
    """``s.str.replace_many(pats, repl, leftmost=True)`` for an emoji table (or one that starts with
    emoji prefixes), building the automaton only from the patterns that can match in ``s``.

    Why: building it for all ~5250 sequences cost 15 ms per call, i.e. per streaming batch, more than
    the matching itself. A pattern can only match where its first character occurs; every first
    character is ASCII (keycaps, always kept) or in :func:`_emoji_trigger`, whose occurrences are
    collected. The kept patterns keep their order, so the leftmost-first matches are the same."""
    present = s.str.extract_all(_emoji_trigger()).explode().drop_nulls().unique()
    table = _emoji_pattern_frame(pats, repl)
    sub = table.filter(pl.col("ascii") | pl.col("first").is_in(present.implode()))
    return s.str.replace_many(sub["pat"].implode(), sub["repl"].implode(), leftmost=True)


def _emoji(expr: pl.Expr, mode: str, style: str, wrapper: str) -> pl.Expr:
    if mode == "keep":
        return expr
    pats, repl = _emoji_replacements(mode, wrapper)
    if style != "pysentimiento" or mode != "name":
        return _on_matching_rows(expr, _emoji_trigger(), lambda s: _replace_emoji(s, pats, repl))
    return expr.map_batches(functools.partial(_emoji_pysentimiento, wrapper=wrapper), return_dtype=pl.String, is_elementwise=True)


def _emoji_pysentimiento(s: pl.Series, wrapper: str) -> pl.Series:
    """pysentimiento's ``demojize(text, language="es", delimiters=("|", "|"))`` followed by
    ``re.sub(r"\\|([^\\|]+)\\|", " emoji " + words + " emoji ")``, exactly.

    * Rows with no ``|`` and no demojize dead end (nearly all): the ``|...|`` spans are exactly the
      emoji names, so one table pass writes the wrapped words directly.
    * Rows with a literal ``|`` (even without emoji): literal pipes pair up with the delimiters
      (``a|b 😂`` -> ``a emoji b emoji cara_llorando_de_risa|``), so the two steps are replayed:
      the table writes ``|name|``, then the span regex marks spans with noncharacters and the
      underscores inside spans (and only there) become spaces.
    * Rows where demojize would stop at a dead end (:func:`_emoji_dead_ends`, 1 in 137k real tweets):
      ``emoji.demojize`` itself, one call per such row, then the same span step.
    """
    pats, repl = _emoji_replacements("name", wrapper)
    dead = _emoji_dead_ends()
    table = dead + pats  # dead ends are longer than the emoji they start with: matched first
    codes = emoji_codes()
    hit = (s.str.contains(_emoji_trigger()) | s.str.contains("|", literal=True)).fill_null(False)
    if not hit.any():
        return s
    rows = hit.arg_true()
    texts = s.gather(rows)
    out = _replace_emoji(texts, table, (_DEAD_END,) * len(dead) + repl)
    slow = out.str.contains(_DEAD_END, literal=True) | texts.str.contains("|", literal=True)
    if slow.any():
        idx = slow.arg_true()
        slow_texts = texts.gather(idx)
        pipe_repl = (_DEAD_END,) * len(dead) + tuple(f"|{codes[p]}|" if p in codes else r for p, r in zip(pats, repl))
        marked = _replace_emoji(slow_texts, table, pipe_repl)
        dead_rows = marked.str.contains(_DEAD_END, literal=True).arg_true()
        if len(dead_rows):
            import emoji

            redo = [emoji.demojize(t, language="es", delimiters=("|", "|")) for t in slow_texts.gather(dead_rows)]
            marked = marked.scatter(dead_rows, pl.Series(redo, dtype=pl.String))
        out = out.scatter(idx, _pipe_spans(marked, wrapper))
    return s.clone().scatter(rows, out)


def _pipe_spans(s: pl.Series, wrapper: str) -> pl.Series:
    """``re.sub(r"\\|([^\\|]+)\\|", lambda m: w + " ".join(m[1].split("_")) + w, text)``, w = `` emoji ``."""
    mark = f" {wrapper} ".replace("  ", " ")
    s = s.str.replace_all(r"\|([^|]+)\|", f"{_EMO_START}${{1}}{_EMO_END}")
    parts = s.str.extract_all(f"{_EMO_START}[^{_EMO_END}]*{_EMO_END}|[^{_EMO_START}]+")
    element = pl.element()
    span = pl.when(element.str.starts_with(_EMO_START)).then(element.str.replace_all("_", " ", literal=True))
    s = parts.list.eval(span.otherwise(element)).list.join("")
    return s.str.replace_many([_EMO_START, _EMO_END], [mark, mark])


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


def _whitespace(expr: pl.Expr, collapse: bool, strip: bool) -> pl.Expr:
    if collapse:
        # Only runs that need a change match (a lone " " does not), which keeps the kernel cheap.
        other_space = SPACE.replace(" ", "")
        return expr.str.replace_all(rf"[{SPACE}]{{2,}}|[{other_space}]", " ").str.strip_chars(" ")
    if strip:
        return expr.str.strip_chars(_expand_ranges(SPACE))  # str.strip(): every str.isspace character
    return expr


def _literal(token: str) -> str:
    return token.replace("$", "$$")  # "$" starts a group reference in a replacement


# One function per rule name of RULE_ORDERS: (expr, rules) -> expr, a no-op when the rule is off.
_STEPS: dict[str, Callable[[pl.Expr, EffectiveRules], pl.Expr]] = {
    "unicode_nfc": lambda e, r: _on_matching_rows(e, _nfc_trigger(), _nfc) if r.unicode_nfc else e,
    "html_unescape": lambda e, r: _html_unescape(e) if r.html_unescape else e,
    "urls": lambda e, r: _urls(e, r.url_style, r.url_token) if r.urls else e,
    "mentions": lambda e, r: _mentions(e, r.mention_style, r.user_token) if r.mentions else e,
    "remove_rt": lambda e, r: _remove_rt(e) if r.remove_rt else e,
    "remove_ellipsis": lambda e, r: _on_matching_rows(e, "…", lambda s: s.str.replace_all("…", " ", literal=True))
    if r.remove_ellipsis
    else e,
    "hashtags": lambda e, r: _hashtags(e, r.hashtags, r.hashtag_style, r.hashtag_token),
    "char_table": lambda e, r: _char_table(e) if r.char_table else e,
    "laughter": lambda e, r: _laughter(e, r.laughter_style) if r.laughter else e,
    "lowercase": lambda e, r: e.str.to_lowercase() if r.lowercase else e,
    "max_char_run": lambda e, r: _char_runs(e, r.max_char_run, r.char_run_scope) if r.max_char_run else e,
    "emoji": lambda e, r: _emoji(e, r.emoji, r.emoji_style, r.emoji_wrapper),
    "whitespace": lambda e, r: _whitespace(e, r.collapse_whitespace, r.strip_whitespace),
}


def normalize_expr(expr: pl.Expr, rules: EffectiveRules | NormalizeRules) -> pl.Expr:
    """The enabled rules, in the order of ``RULE_ORDERS[rules.rule_order]``, as one expression over a
    String column."""
    r = rules.effective() if isinstance(rules, NormalizeRules) else rules
    for step in RULE_ORDERS[r.rule_order]:
        expr = _STEPS[step](expr, r)
    return expr


def normalize_texts(texts: list[str], rules: EffectiveRules | NormalizeRules) -> list[str]:
    """Convenience for tests and notebooks: a list in, a list out (runs the same expression)."""
    lf = pl.LazyFrame({"text": texts}, schema={"text": pl.String})
    return lf.select(normalize_expr(pl.col("text"), rules)).collect(engine="streaming")["text"].to_list()


# --------------------------------------------------------------------------------------------------
# Helpers for the drop rules and the vocabulary
# --------------------------------------------------------------------------------------------------


def _placeholder_fields(r: EffectiveRules) -> list[tuple[str, str]]:
    """(key, token) of every placeholder the enabled rules insert, in rule order."""
    fields_ = []
    if r.urls:
        fields_.append(("url_token", r.url_token))
    if r.mentions:
        fields_.append(("user_token", r.user_token))
    if r.hashtags in ("replace", "token_split"):
        fields_.append(("hashtag_token", r.hashtag_token))
    if r.emoji == "name" and r.emoji_wrapper:
        fields_.append(("emoji_wrapper", r.emoji_wrapper))
    return fields_


def placeholder_keys(rules: EffectiveRules | NormalizeRules) -> list[tuple[str, str]]:
    """``(normalize.rules key, token)`` of every placeholder the enabled rules insert (messages name the key)."""
    return _placeholder_fields(rules.effective() if isinstance(rules, NormalizeRules) else rules)


def placeholder_tokens(rules: EffectiveRules | NormalizeRules) -> list[str]:
    """Tokens the enabled rules insert; the vocab stage makes each one a single SentencePiece piece."""
    r = rules.effective() if isinstance(rules, NormalizeRules) else rules
    return [token for _, token in _placeholder_fields(r)]


def glued_placeholder_tokens(rules: EffectiveRules | NormalizeRules) -> list[str]:
    """The placeholders (of :func:`placeholder_tokens`) that the rules may insert right after a
    non-space character, as the originals' styles do (``visita:url``, ``ana@usuario``, ``(hashtag``).

    Why it matters: SentencePiece matches a user-defined piece anywhere, even inside a word. The vocab
    stage therefore registers a bare piece ``p`` (besides ``▁p``) only for these. Under our default
    styles every placeholder is inserted with spaces around it, so it is always ``▁p`` and the bare
    piece would only split words: ``burla`` -> ``▁b url a`` (about 150 words of the *burla* family
    in the 137k real tweets of ../shared/data, counted; tests/text/test_vocab.py shows the split)."""
    r = rules.effective() if isinstance(rules, NormalizeRules) else rules
    glued = {
        "url_token": r.url_style != "default",
        "user_token": r.mention_style != "default",
        "hashtag_token": r.hashtag_style == "pysentimiento",
        "emoji_wrapper": False,  # " emoji name emoji " with spaces in every style
    }
    return [token for key, token in _placeholder_fields(r) if glued[key]]


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
    "RULE_ORDERS",
    "PYSENTIMIENTO_CHAR_TABLE",
    "PYSENTIMIENTO_TLDS",
    "normalize_expr",
    "normalize_texts",
    "placeholder_keys",
    "placeholder_tokens",
    "glued_placeholder_tokens",
    "placeholder_only_expr",
    "word_count_expr",
    "cap_char_runs",
    "char_run_alphabet",
    "emoji_codes",
    "emoji_table",
    "python_word",
]

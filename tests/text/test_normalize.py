"""Tests for the tweet normaliser (twilbert.text.normalize) against hand-written expectations, against
the per-row Python reference (twilbert.text.normalize.reference), and against plain-Python recomputations."""

from __future__ import annotations

import dataclasses
import html
import itertools
import random
import re
import unicodedata

import emoji
import polars as pl
import pytest

from tests.conftest import SHARED_DATA
from tests.text.golden_tweets import GOLDEN
from twilbert.config import ConfigError, from_dict, to_dict
from twilbert.text.normalize import (
    PRESETS,
    DropRules,
    EffectiveRules,
    NormalizeConfig,
    NormalizeRules,
    cap_char_runs,
    char_run_alphabet,
    normalize_expr,
    normalize_texts,
    placeholder_only_expr,
    placeholder_tokens,
    glued_placeholder_tokens,
    split_tag_words,
    word_count_expr,
)
from twilbert.text.normalize.chars import INVISIBLE, ZWJ
from twilbert.text.normalize.reference import normalize_row
from twilbert.text.normalize.rules import _split_tag

DEFAULT = NormalizeRules().effective()
RAW = [raw for raw, _ in GOLDEN]

# Configurations the differential tests run (besides the default): every mode of every switch.
VARIANTS = {
    "token_split+remove": NormalizeRules(hashtags="token_split", emoji="remove", max_char_run=2),
    "replace+wrapper+cased": NormalizeRules(hashtags="replace", emoji_wrapper="emoji", lowercase=False, laughter=False),
    "keep+raw": NormalizeRules(hashtags="keep", emoji="keep", unicode_nfc=False, html_unescape=False, max_char_run=0),
    "no-placeholders": NormalizeRules(urls=False, mentions=False, remove_rt=False, remove_ellipsis=False),
    "custom-tokens": NormalizeRules(url_token="$1url", user_token="@usuario", hashtag_token="${1}tag", hashtags="token_split"),
    "custom-replace": NormalizeRules(hashtag_token="$tag", hashtags="replace", emoji_wrapper="$emo"),
}


@pytest.fixture(scope="module")
def golden_out() -> list[str]:
    return normalize_texts(RAW, DEFAULT)


# --------------------------------------------------------------------------------------------------
# Golden tweets
# --------------------------------------------------------------------------------------------------


def test_golden_set_is_large_enough():
    assert len(GOLDEN) >= 30
    assert len(set(RAW)) == len(RAW)


@pytest.mark.parametrize("i", range(len(GOLDEN)), ids=[raw[:30] for raw in RAW])
def test_golden_vectorised(golden_out, i):
    assert golden_out[i] == GOLDEN[i][1]


@pytest.mark.parametrize("i", range(len(GOLDEN)), ids=[raw[:30] for raw in RAW])
def test_golden_reference(i):
    assert normalize_row(GOLDEN[i][0], DEFAULT) == GOLDEN[i][1]


# --------------------------------------------------------------------------------------------------
# One switch at a time
# --------------------------------------------------------------------------------------------------

SWITCHES = [
    ({"urls": False}, "mira https://t.co/abc", "mira https://t.co/abc"),
    ({"url_token": "enlace"}, "mira https://t.co/abc", "mira enlace"),
    ({"mentions": False}, "@Pepe hola", "@pepe hola"),
    ({"user_token": "usuario"}, "@Pepe hola", "usuario hola"),
    ({"html_unescape": False}, "a &amp; b", "a &amp; b"),
    ({"remove_ellipsis": False}, "no sé…", "no sé…"),
    ({"remove_rt": False}, "RT @x: hola", "rt user : hola"),
    ({"hashtags": "keep"}, "Feliz #ReyesMagos", "feliz #reyesmagos"),
    ({"hashtags": "replace"}, "Feliz #ReyesMagos", "feliz hashtag"),
    ({"hashtags": "token_split"}, "Feliz #ReyesMagos", "feliz hashtag reyes magos"),
    ({"hashtags": "replace", "hashtag_token": "etiqueta"}, "Feliz #ReyesMagos", "feliz etiqueta"),
    ({"hashtags": "token_split", "lowercase": False}, "#SíSePuede", "hashtag Sí Se Puede"),
    ({"laughter": False}, "JAJAJAJA", "jajajaja"),
    ({"max_char_run": 0}, "holaaaaa", "holaaaaa"),
    ({"max_char_run": 2}, "holaaaa!!! lleeeeno", "holaa!! lleeno"),
    ({"max_char_run": 3, "lowercase": False}, "AAAAaaaa", "AAAaaa"),
    ({"emoji": "keep"}, "hola 😂😂", "hola 😂😂"),
    ({"emoji": "remove"}, "hola 😂😂 adiós", "hola adiós"),
    ({"emoji_wrapper": "emoji"}, "hola 😂", "hola emoji cara llorando de risa emoji"),
    ({"lowercase": False}, "Hola MUNDO @Pepe", "Hola MUNDO user"),
    ({"collapse_whitespace": False}, "a  b @x", "a  b  user "),
    ({"unicode_nfc": False}, "Ca\u0301diz", "ca\u0301diz"),
]


@pytest.mark.parametrize("overrides,raw,expected", SWITCHES, ids=[str(s[0]) for s in SWITCHES])
def test_switch(overrides, raw, expected):
    rules = NormalizeRules(**overrides).effective()
    assert normalize_texts([raw], rules) == [expected]
    assert normalize_row(raw, rules) == expected


# For each switch: an independent test of "could this rule touch this text at all?". Switching the rule
# off must leave every other golden output unchanged, and must change at least one relevant output.
RELEVANT = {
    "unicode_nfc": (False, lambda t: not unicodedata.is_normalized("NFC", t)),
    "html_unescape": (False, lambda t: html.unescape(t) != t),
    "urls": (False, lambda t: re.search(r"(?i)ht|www\.|t\.co/", t) is not None),
    "mentions": (False, lambda t: "@" in t),
    "remove_rt": (False, lambda t: "RT" in t),
    "remove_ellipsis": (False, lambda t: "…" in t),
    "hashtags": ("keep", lambda t: "#" in html.unescape(t)),
    "laughter": (False, lambda t: re.search(r"(?i)j[aeioáéíó]+j", t) is not None),
    "lowercase": (False, lambda t: t != t.lower()),
    "max_char_run": (0, lambda t: re.search(r"(.)\1{3}", t.lower()) is not None),
    "emoji": ("keep", lambda t: emoji.emoji_count(html.unescape(t)) > 0 or "\ufe0f" in t),
    "remove_invisible": (False, lambda t: re.search(f"[{INVISIBLE}{ZWJ}]", t) is not None),
}


@pytest.mark.parametrize("rule", list(RELEVANT))
def test_switch_changes_only_relevant_texts(golden_out, rule):
    off_value, relevant = RELEVANT[rule]
    out = normalize_texts(RAW, dataclasses.replace(DEFAULT, **{rule: off_value}))
    changed = [raw for raw, a, b in zip(RAW, golden_out, out) if a != b]
    assert changed, f"switching {rule} off changed no golden tweet"
    assert all(relevant(raw) for raw in changed), [raw for raw in changed if not relevant(raw)]


# --------------------------------------------------------------------------------------------------
# Vectorised == reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(VARIANTS))
def test_golden_vectorised_equals_reference(name):
    rules = VARIANTS[name].effective()
    assert normalize_texts(RAW, rules) == [normalize_row(t, rules) for t in RAW]


# Tweet-like fragments, glued at random: boundaries between rules are where implementations diverge.
# Only well-formed emoji: emoji.demojize leaves a broken ZWJ/tag sequence's first emoji raw (e.g. ❤️ +
# ZWJ + a letter), where the vectorised table names it -- a documented reference quirk.
PIECES = [
    "RT", " ", "  ", "\t", "\n", "@", "@ana_1", "#", "##", "#Hola", "#ReyesMagos2024", "Mundo", "mundo", "_", "1", "23",
    "ja", "JA", "j", "a", "á", "je", "jo", "ji", "https://t.co/x", "http:", "www.", "t.co/", "ht…", "…", "&amp;",
    "&lt;", "&#39;", "&#128514;", "&ampx", "&", ";", "#x27;", "😂", "🤣", "❤", "\ufe0f", "\u200d", "👨", "👩", "🏽",
    "🇪", "🇸", "1\ufe0f\u20e3", "\u20e3", "a\u0301", "n\u0303", "©", "!", "¿", "?", ".", "aaaa", "!!!!", "ñ", "Ñ",
    "É", "PARTE", "RTVE", "\u3000", "\xa0", "ß", "İ", "ǅ", "Ω", "\u212b", "x", "Y", "Z9", "ɏ", "ĀĀĀĀ", "ª", "🏴",
    "\U000e007f", "j\u0301a", "\x1c", "\u200b", "\u202e", "\u2066", "\ufeff", "\xad", "❤\ufe0f\u200d🔥",
]


def _fuzz_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 12))) for _ in range(n)]


@pytest.mark.parametrize("name", ["default", *VARIANTS])
def test_fuzz_vectorised_equals_reference(name):
    rules = DEFAULT if name == "default" else VARIANTS[name].effective()
    texts = _fuzz_texts(seed=len(name), n=1500)
    out = normalize_texts(texts, rules)
    bad = [(t, o) for t, o in zip(texts, out) if o != normalize_row(t, rules)]
    assert not bad, bad[:5]


def _read_texts(path) -> list[str]:
    df = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)
    return df["TEXT"].to_list()


@pytest.mark.parametrize(
    "files,rules",
    [
        # Raw tweets: real URLs, mentions, RT, emoji, hashtags, HTML escapes.
        (["news_opinion_authors_es/train.tsv", "emoevent_es/train.tsv"], DEFAULT),
        # NFD-decomposed text (emojispace) and aggressive Mexican Spanish, under the other modes.
        (["emojispace_emoji_es/test.tsv", "mexa3t2020_aggressiveness_es/dev.tsv"], VARIANTS["token_split+remove"].effective()),
    ],
    ids=["news+emoevent/default", "emojispace+mexa3t/token_split"],
)
def test_real_tweets_vectorised_equals_reference(files, rules):
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    texts = [t for f in files for t in _read_texts(SHARED_DATA / f)]
    out = normalize_texts(texts, rules)
    bad = [(t, o) for t, o in zip(texts, out) if o != normalize_row(t, rules)]
    assert not bad, f"{len(bad)}/{len(texts)} differ, e.g. {bad[:3]}"


# --------------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------------


def test_idempotent_on_golden(golden_out):
    assert normalize_texts(golden_out, DEFAULT) == golden_out


def test_idempotent_on_real_tweets():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    texts = _read_texts(SHARED_DATA / "news_opinion_authors_es/dev.tsv") + _read_texts(SHARED_DATA / "haha2021_humor_es/dev.tsv")
    once = normalize_texts(texts, DEFAULT)
    twice = normalize_texts(once, DEFAULT)
    # The one documented exception: double-escaped HTML ("&amp;quot;") unescapes one level per pass.
    bad = [(t, a, b) for t, a, b in zip(texts, once, twice) if a != b and not re.search(r"&amp;\S+;", t)]
    assert not bad, bad[:3]


def test_not_idempotent_on_double_escaped_html():
    once = normalize_texts(["dijo &amp;quot;hola&amp;quot;"], DEFAULT)
    assert once == ["dijo &quot;hola&quot;"]
    assert normalize_texts(once, DEFAULT) == ['dijo "hola"']


@pytest.mark.parametrize(
    "raw,token",
    [
        ("visita:https://t.co/abc", "url"), ("(www.ejemplo.com)", "url"), ("¿viste?http://x.es/a…", "url"),
        ("😂https://t.co/x", "url"), ("gracias,@ana!", "user"), ("(@pepe_01)", "user"), ("¡@ana@pepe!", "user"),
        ("😂@ana😂", "user"), ("RT @ana: hola", "user"),
    ],
)
def test_placeholders_are_single_tokens(raw, token):
    out = normalize_texts([raw], DEFAULT)[0]
    assert out.split().count(token) == 1, out
    assert all(w == token or token not in w for w in out.split()), out


def test_placeholders_single_tokens_fuzz():
    rng = random.Random(7)
    glue = ["", "(", ":", "¡", "😂", "\n", ",", "«", "…"]
    texts, expected = [], []
    for _ in range(500):
        k = rng.randint(1, 4)
        parts = [rng.choice(["https://t.co/Ab1", "@usuario_1"]) for _ in range(k)]
        # A URL runs to the next space, so only a space may follow one; glued handles ("@a@b") are one.
        texts.append("".join(rng.choice(glue) + p + (" " if p.startswith("http") else rng.choice(glue[1:])) for p in parts))
        expected.append((sum(p.startswith("http") for p in parts), sum(p.startswith("@") for p in parts)))
    for text, (n_url, n_user), out in zip(texts, expected, normalize_texts(texts, DEFAULT)):
        words = out.split()
        assert (words.count("url"), words.count("user")) == (n_url, n_user), (text, out)


# --------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------


def _cap_python(text: str, n: int, alphabet: set[str]) -> str:
    out = []
    for ch, grp in itertools.groupby(text):
        run = len(list(grp))
        out.append(ch * (min(run, n) if ch in alphabet else run))
    return "".join(out)


def test_cap_char_runs_matches_python():
    alphabet = set(char_run_alphabet())
    rng = random.Random(3)
    chars = ["a", "A", "!", "😂", "ñ", "1", " ", "é", "\u0301", "中"]
    texts = ["".join(rng.choice(chars) * rng.choice([1, 2, 3, 4, 9]) for _ in range(rng.randint(0, 20))) for _ in range(400)]
    texts += ["a" * 5000, "😂" * 1000 + "x", "", "1111111", "…" * 7]
    s = pl.Series("t", ["pad", *texts, "pad"])[1:-1]  # a sliced Series: Arrow offset != 0
    for n in (2, 3, 5):
        assert cap_char_runs(s, n).to_list() == [_cap_python(t, n, alphabet) for t in texts]
    assert cap_char_runs(pl.Series(["aaaaa", None, "bbbbb"]), 2).to_list() == ["aa", None, "bb"]


def test_char_run_alphabet_excludes_digits_and_spaces():
    alphabet = char_run_alphabet()
    assert not any(c.isdigit() or c.isspace() for c in alphabet)
    assert {"a", "Z", "ñ", "É", "!", "?", "¿", ".", "😂", "❤"} <= set(alphabet)


@pytest.mark.parametrize(
    "raw",
    [
        "&amp;&lt;&gt;&quot;&#39;&#x27;&#X27;&#039;", "&#39 sin punto y coma", "AT&T y P&G", "&ampx &notin; &notit; &nota",
        "&#128514;&#x1F602;&#0;&#128;&#xD800;&#1114112;", "&copy2024 &NotEqualTilde; &amp;amp;", "&#99999999999;", "&",
    ],
)
def test_html_unescape_is_exactly_html_unescape(raw):
    switches = ("unicode_nfc", "urls", "mentions", "remove_rt", "remove_ellipsis", "laughter", "lowercase", "collapse_whitespace")
    only_html = dataclasses.replace(DEFAULT, **{k: False for k in switches}, hashtags="keep", emoji="keep", max_char_run=0)
    assert normalize_texts([raw], only_html) == [html.unescape(raw)]


def test_unicode_nfc_is_exactly_unicodedata_nfc():
    """The NFC rule composes letter + mark pairs in one pass and runs full NFC only where a trigger
    character is left: it must equal ``unicodedata.normalize("NFC")`` on pairs, stacked marks in either
    order (reordering), marks with no base, singletons, Hangul jamo and text that is already NFC."""
    marks = ["\u0301", "\u0303", "\u0308", "\u0300", "\u0323", "\u0327", "\u0307", "\u030c", "\u0336"]
    bases = ["a", "e", "i", "n", "u", "A", "N", "o", "s", "ǖ", "\u03b1", "\u0438", "ñ", "x", " ", "😂", "1"]
    others = ["\u212b", "\u2126", "\u1100\u1161\u11a8", "\u1100\u1161", "\uac00\u11a8", "\u0344", "\u0958", "hola", "\ufb2c"]
    rng = random.Random(7)
    texts = [b + m for b in bases for m in marks] + others
    texts += ["".join(rng.choice(bases + marks + others) for _ in range(rng.randint(1, 10))) for _ in range(3000)]
    switches = ("html_unescape", "urls", "mentions", "remove_rt", "remove_ellipsis", "laughter", "lowercase", "collapse_whitespace")
    only_nfc = dataclasses.replace(DEFAULT, **{k: False for k in switches}, hashtags="keep", emoji="keep", max_char_run=0)
    got = normalize_texts(texts, only_nfc)
    bad = [(t, g) for t, g in zip(texts, got) if g != unicodedata.normalize("NFC", t)]
    assert not bad, bad[:5]
    assert sum(not unicodedata.is_normalized("NFC", t) for t in texts) > 1000  # the fast and the full path both ran


def test_nulls_and_other_columns_pass_through():
    df = pl.DataFrame({"id": [1, 2, 3], "text": ["Hola @ana", None, ""]})
    out = df.with_columns(normalize_expr(pl.col("text"), DEFAULT))
    assert out.columns == ["id", "text"]
    assert out["text"].to_list() == ["hola user", None, ""]
    lazy = df.lazy().select(normalize_expr(pl.col("text"), DEFAULT).alias("n")).collect(engine="streaming")
    assert lazy["n"].to_list() == ["hola user", None, ""]


def test_accepts_unresolved_rules():
    assert normalize_texts(["JAJAJA"], NormalizeRules(laughter=False)) == ["jajaja"]
    assert placeholder_tokens(NormalizeRules()) == ["url", "user"]


# --------------------------------------------------------------------------------------------------
# Drop-rule helpers and placeholders
# --------------------------------------------------------------------------------------------------


def test_placeholder_tokens():
    assert placeholder_tokens(DEFAULT) == ["url", "user"]
    r = NormalizeRules(hashtags="token_split", emoji_wrapper="emoji", url_token="enlace").effective()
    assert placeholder_tokens(r) == ["enlace", "user", "hashtag", "emoji"]
    assert placeholder_tokens(NormalizeRules(urls=False, mentions=False, hashtags="replace").effective()) == ["hashtag"]
    assert placeholder_tokens(NormalizeRules(emoji="remove", emoji_wrapper="emoji").effective()) == ["url", "user"]


def test_glued_placeholder_tokens():
    assert glued_placeholder_tokens(DEFAULT) == []
    assert glued_placeholder_tokens(NormalizeRules(hashtags="token_split", emoji_wrapper="emoji")) == []
    assert glued_placeholder_tokens(NormalizeRules(preset="twilbert")) == ["url", "user"]
    pys = NormalizeRules(preset="pysentimiento").effective()
    assert glued_placeholder_tokens(pys) == [pys.url_token, pys.user_token, pys.hashtag_token]
    assert glued_placeholder_tokens(NormalizeRules(preset="twilbert", urls=False)) == ["user"]


@pytest.mark.parametrize("preset", ["default", "twilbert", "pysentimiento"])
def test_only_glued_placeholders_follow_a_non_space_character(preset):
    """What the vocab stage relies on: a placeholder not in ``glued_placeholder_tokens`` is always
    inserted after a space (or at the start), so it needs no bare SentencePiece piece."""
    rules = NormalizeRules(preset=preset, hashtags="token_split", emoji_wrapper="emoji").effective()
    texts = ["visita:https://t.co/x", "(@ana) dice", "mira:@pepe", "(#ReyesMagos)", "hola#Tag y:#Otro",
             "«@ana»", "ver:www.ejemplo.com", "¡😂!", "x😂y", "“#tag”", "@ana:@pepe", "RT @x:hola http://a.es"]
    glued = set(glued_placeholder_tokens(rules))
    for text, out in zip(texts, normalize_texts(texts, rules)):
        for token in set(placeholder_tokens(rules)) - glued:
            for m in re.finditer(re.escape(token), out):
                assert m.start() == 0 or out[m.start() - 1].isspace(), (preset, text, out, token)


def test_placeholder_only_expr():
    texts = ["user url", "user", "", "user hola", "url  user", " url ", "urls", "user_user", None]
    got = pl.select(placeholder_only_expr(pl.Series(texts, dtype=pl.String), DEFAULT)).to_series().to_list()
    tokens = {"url", "user"}
    assert got == [bool(t and t.split()) and set(t.split()) <= tokens for t in texts]
    none = NormalizeRules(urls=False, mentions=False).effective()
    assert pl.select(placeholder_only_expr(pl.Series(["url", "user"]), none)).to_series().to_list() == [False, False]


def test_word_count_expr():
    texts = ["", "hola", " hola  mundo ", "a\tb\nc\u3000d\xa0e\x1cf", "😂 url"] + [o for _, o in GOLDEN]
    got = pl.select(word_count_expr(pl.Series(texts))).to_series().to_list()
    assert got == [len(t.split()) for t in texts]


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def test_presets_cover_every_rule():
    for name, values in PRESETS.items():
        assert set(values) == {f.name for f in dataclasses.fields(EffectiveRules)}, name
        EffectiveRules(**values)  # valid


def test_effective_fills_unset_fields_from_preset():
    r = NormalizeRules(hashtags="keep", max_char_run=0).effective()
    assert r.hashtags == "keep" and r.max_char_run == 0
    assert dataclasses.replace(r, hashtags=PRESETS["default"]["hashtags"], max_char_run=3) == DEFAULT
    assert NormalizeRules(lowercase=False).effective().lowercase is False  # False is a value, not "unset"


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"max_char_run": 1}, "max_char_run"),
        ({"max_char_run": -2}, "max_char_run"),
        ({"url_token": ""}, "url_token"),
        ({"user_token": "us er"}, "user_token"),
        ({"emoji_wrapper": "e moji"}, "emoji_wrapper"),
        ({"hashtags": "camel"}, "hashtags"),
        ({"emoji": "demojize"}, "emoji"),
        ({"preset": "roberta"}, "preset"),
    ],
)
def test_invalid_rules_name_the_field(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        NormalizeRules(**overrides)


@pytest.mark.parametrize(
    "overrides,key",
    [
        ({"url_token": "URL"}, "url_token"),
        ({"user_token": "url"}, "user_token"),  # a clash names the later key (it used to always say url_token)
        ({"emoji_wrapper": "user", "emoji": "name"}, "emoji_wrapper"),
        ({"emoji_wrapper": "Emoji"}, "emoji_wrapper"),
    ],
)
def test_invalid_combinations_fail_on_effective(overrides, key):
    with pytest.raises(ConfigError, match=rf"^{key}:"):
        NormalizeRules(**overrides).effective()
    if "URL" in str(overrides.values()):
        NormalizeRules(**overrides, lowercase=False).effective()  # fine when nothing lower-cases it


def test_drop_rules_validation():
    assert DropRules() == DropRules(placeholder_only=True, max_words=2, duplicates=True)
    with pytest.raises(ConfigError, match="^max_words:"):
        DropRules(max_words=-1)


def test_params_section_round_trip():
    section = {
        "rules": {"preset": "default", "hashtags": "token_split", "emoji": "name", "emoji_wrapper": "", "max_char_run": 3},
        "drop": {"placeholder_only": True, "max_words": 2, "duplicates": False},
    }
    cfg = from_dict(NormalizeConfig, section, prefix="normalize")
    assert cfg.rules.hashtags == "token_split" and cfg.rules.urls is None and cfg.drop.duplicates is False
    assert from_dict(NormalizeConfig, to_dict(cfg), prefix="normalize") == cfg
    assert from_dict(NormalizeConfig, {}) == NormalizeConfig()
    with pytest.raises(ConfigError, match=r"normalize\.rules\.hashtag: unknown key \(did you mean 'hashtags'"):
        from_dict(NormalizeConfig, {"rules": {"hashtag": "split"}}, prefix="normalize")
    with pytest.raises(ConfigError, match=r"normalize\.rules\.max_char_run: must be 0"):
        from_dict(NormalizeConfig, {"rules": {"max_char_run": 1}}, prefix="normalize")
    with pytest.raises(ConfigError, match=r"normalize\.rules\.lowercase: expected bool"):
        from_dict(NormalizeConfig, {"rules": {"lowercase": "yes"}}, prefix="normalize")


HASH_RUNS = [
    "C##Tag", "C###TagDos", "##tag", "x ##", "&#tag", "#a#b", "#a,#b", "a#", "#2024", "hola#Tag", "@#MesQueUnClub",
    "# hola", "#_", "#Reyes_Magos #COVID19 #HTMLParser", "##", "#ñandúFeliz", "¡#SíSePuede!", "😂#Hola😂", "#a##b",
]


@pytest.mark.parametrize("mode", ["split", "token_split"])
def test_hashtag_runs_match_the_reference_regex(mode):
    """The pieces-based split (no regex with a left-context group) against the per-row reference, on the
    cases where that group decides: runs of ``#``, a word or ``&`` before the ``#``, tags in a row."""
    rules = NormalizeRules(hashtags=mode).effective()
    assert normalize_texts(HASH_RUNS, rules) == [normalize_row(t, rules) for t in HASH_RUNS]
    assert normalize_texts(["C##Tag"], NormalizeRules(hashtags=mode, lowercase=False).effective())[0] == (
        "C# Tag" if mode == "split" else "C# hashtag Tag"
    )


def test_split_tag_words_equals_the_reference_lookarounds():
    """The numpy hashtag split against the reference's zero-width lookaround regex, on random bodies
    of ASCII and two-byte Latin letters (cases, digits, "_"), batched so bodies sit next to each other
    (a boundary must never reach across two bodies) and with empty and one-character bodies."""
    alphabet = "aAbBzZ09_ñÑáÁßÿÀÞøØɏĀ"
    rng = random.Random(3)
    bodies = ["", "a", "_", "A", "Ñ", "aB", "HTMLParser", "COVID19", "a1b2", "Reyes_Magos", "ÁéÍ", "ñandúFeliz"]
    bodies += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14))) for _ in range(5000)]
    got = split_tag_words(pl.Series(bodies)).to_list()
    assert got == [_split_tag(b) for b in bodies]
    assert split_tag_words(pl.Series(["x", "AB", "Cd"])).to_list() == ["x", "AB", "Cd"]  # no boundary across bodies
    assert split_tag_words(pl.Series([], dtype=pl.String)).to_list() == []

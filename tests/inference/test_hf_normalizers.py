"""``twilbert.hf.normalizers``: the tweet rules as ``tokenizers`` normalizers equal the polars rules.

On the hand-written golden tweets (every rule, default preset) and on real tweets of ../shared/data
(default, pysentimiento and twilbert presets); where a rule is only approximated, ``inexact_rules``
says so and the real-tweet agreement is bounded here (benchmarks/normalizer_agreement.py measures it).
"""

from __future__ import annotations

import re

import pytest

pytest.importorskip("tokenizers")

from tests.conftest import SHARED_DATA  # noqa: E402
from tests.text.golden_tweets import GOLDEN  # noqa: E402
from twilbert.hf.normalizers import RULES, inexact_rules, tweet_normalizer  # noqa: E402
from twilbert.text.normalize import RULE_ORDERS, NormalizeRules, normalize_texts  # noqa: E402

EXTRA = [
    "RT @ana_b: JAJAJA holaaaaa!!!!! mira https://t.co/xyz #ReyesMagos #HTMLParser #COVID19 #mi_tag 😂😂😂😂 &amp; …",
    "Sí se puede #SíSePuede ♥ «hola» 🤣estoy ##Tag C# #2024 a#b @a@b jijiji JEJEJE jajá",
    "visita:https://x.co y www.google.com.mx/a/b hola.como 👍🏽👨‍👩‍👧",
]


def _stray_zwj_between_emoji(raw: str) -> bool:
    """A zero-width joiner between two emoji that form no known ZWJ sequence (``😂‍😂``)."""
    import emoji

    from twilbert.text.normalize.emojis import zwj_sequences

    for seq in zwj_sequences():
        raw = raw.replace(seq, "")
    return any(emoji.is_emoji(raw[i - 1]) and emoji.is_emoji(raw[i + 1]) for i in range(1, len(raw) - 1) if raw[i] == "\u200d")


def approximated(raw: str) -> bool:
    """The documented approximations: HTML references past Latin-1 or hexadecimal, pysentimiento's
    emoji delimiters meeting a literal ``|``, and a stray ZWJ between two emoji."""
    return (
        "|" in raw
        or any(m[0] or int(m[1]) > 255 for m in re.findall(r"&#([xX])?([0-9]+)", raw))
        or _stray_zwj_between_emoji(raw)
    )


def test_one_builder_per_rule_of_the_rule_orders():
    assert set(RULES) == {name for order in RULE_ORDERS.values() for name in order}


def test_golden_tweets_normalise_as_the_default_preset():
    n = tweet_normalizer(NormalizeRules())
    for raw, want in GOLDEN:
        if not approximated(raw):
            assert n.normalize_str(raw) == want, raw


@pytest.mark.parametrize("preset", ["default", "pysentimiento", "twilbert"])
def test_equal_to_the_polars_rules_on_hand_picked_tweets(preset):
    rules = NormalizeRules(preset=preset).effective()
    n = tweet_normalizer(rules)
    texts = [raw for raw, _ in GOLDEN] + EXTRA
    for raw, want in zip(texts, normalize_texts(texts, rules)):
        if not approximated(raw):
            assert n.normalize_str(raw) == want, raw


def test_no_rules_no_normalizer_and_the_approximations_are_named():
    assert tweet_normalizer(NormalizeRules(preset="none")) is None
    assert inexact_rules(NormalizeRules(preset="none")) == []
    assert any(r.startswith("html_unescape") for r in inexact_rules(NormalizeRules()))
    assert any(r.startswith("emoji: pysentimiento") for r in inexact_rules(NormalizeRules(preset="pysentimiento")))
    stored = {"lowercase": True, "collapse_whitespace": True, **{k: v for k, v in NormalizeRules().effective().__dict__.items()}}
    assert tweet_normalizer(stored).normalize_str("Hola   MUNDO ") == "hola mundo"  # the dict a model directory stores


@pytest.mark.parametrize("preset, at_least", [("default", 0.999), ("pysentimiento", 0.98), ("twilbert", 0.999)])
def test_agreement_on_real_tweets(preset, at_least):
    import polars as pl

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    texts = []
    for f in sorted(SHARED_DATA.glob("*/dev.tsv")):
        texts += pl.read_csv(f, separator="\t", quote_char=None, infer_schema=False)["TEXT"].head(150).to_list()
    rules = NormalizeRules(preset=preset).effective()
    n = tweet_normalizer(rules)
    same = sum(n.normalize_str(t) == w for t, w in zip(texts, normalize_texts(texts, rules)))
    assert same >= at_least * len(texts), (same, len(texts))

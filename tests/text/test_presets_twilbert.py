"""Differential test: ``normalize.rules.preset: twilbert`` against the original TWilBERT's rules.

The peer is :mod:`tests.text.original_twilbert_rules`, a per-row transcription of the original's
``Utils.preprocessing``, which applies to every fine-tuning and evaluation input and is a superset of
the offline corpus cleaning. The preset deviates in one documented way (see docs/deviations.md): the
original's ``r.replace("RT", " ")`` removed every upper-case ``RT`` substring (``PARTE`` -> ``PA E``);
the preset removes ``RT`` only as a token. So the preset is compared with the transcription
with that one line fixed (``rt_bug=False``), and the texts where the bug fires are counted apart.
"""

from __future__ import annotations

import polars as pl
import pytest

from tests.text.original_twilbert_rules import preprocess_corpora, utils_preprocessing
from tests.text.test_presets_data import real_texts_or_skip, text_key
from twilbert.text.normalize import NormalizeRules, normalize_expr
from twilbert.text.normalize.reference import normalize_row

RULES = NormalizeRules(preset="twilbert").effective()
KNOWN_DIFFERENCES: dict[str, str] = {}  # text_key -> reason; empty: no real text differs


def vectorised(texts: list[str]) -> list[str]:
    return pl.DataFrame({"t": texts}, schema={"t": pl.String}).select(normalize_expr(pl.col("t"), RULES))["t"].to_list()


HAND_PICKED = [
    "RT @usuario: mira https://t.co/x1 &amp; más…",
    "LA PARTE DEL ARTE de RTVE es RT",
    "ana@mail.es y @@doble_user y @ suelto",
    "&#64;escapado no es mención &lt;3",
    "https://ejemplo.es/a?b=c…cortado",
    "Hola   mundo\tcon\ttabs",
    "😂😂 emoji se queda, #Hashtag también",
    "",
]


@pytest.mark.parametrize("text", HAND_PICKED)
def test_hand_picked_tweets_match_the_original(text):
    want = utils_preprocessing(text, rt_bug=False)
    assert vectorised([text]) == [want]
    assert normalize_row(text, RULES) == want


def test_the_one_deviation_is_the_rt_substring_bug():
    text = "LA PARTE DEL ARTE: RT"
    assert utils_preprocessing(text, rt_bug=True) == "LA PA E DEL A E:"  # the original's bug
    assert vectorised([text]) == ["LA PARTE DEL ARTE:"]


def test_online_rules_are_a_superset_of_the_offline_cleaning():
    """On texts without ``RT`` the offline corpus script and the online rules agree except in order
    (unescape after RT); the preset follows the online one, which every fine-tuning input saw."""
    text = "@ana mira https://x.es &amp; más…"
    assert preprocess_corpora(text) == utils_preprocessing(text, rt_bug=False) == vectorised([text])[0]


def test_every_real_tweet_matches_the_original():
    texts = real_texts_or_skip()
    raw = [t for _, t in texts]
    got = vectorised(raw)
    differences = []
    bug_fires = 0
    for (where, text), mine in zip(texts, got):
        want = utils_preprocessing(text, rt_bug=False)
        bug_fires += utils_preprocessing(text, rt_bug=True) != want
        if mine != want and text_key(text) not in KNOWN_DIFFERENCES:
            differences.append((where, text, mine, want))
    agreement = 1 - len(differences) / len(raw)
    print(f"twilbert preset: {len(raw) - len(differences)}/{len(raw)} identical ({agreement:.4%}); "
          f"the original's RT-substring bug would change {bug_fires} of them")
    assert agreement >= 0.999, differences[:20]
    assert not differences, f"{len(differences)} unlisted differences: {differences[:10]}"
    assert bug_fires > 0  # the real data does hit the bug the preset fixes

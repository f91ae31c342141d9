"""Differential test: ``normalize.rules.preset: pysentimiento`` against pysentimiento itself.

The peer is the real ``pysentimiento.preprocessing.preprocess_tweet(text, lang="es")`` of
pysentimiento 0.7.3 with its default arguments, loaded from its file without the package's model
dependencies (:func:`twilbert.text.normalize.reference.load_pysentimiento_preprocessing`; the Makefile installs
it ``--no-deps``). Its emoji names come from the ``emoji`` package, pinned in constraints.txt: emoji
renames CLDR names between releases, so both sides must use the same one.

Every real text of ``../shared/data`` goes through both. Target (issue): identical on >= 99.9%.
Measured: identical on all of them; ``KNOWN_DIFFERENCES`` lists any text allowed to differ, with why.
"""

from __future__ import annotations

import polars as pl
import pytest

from tests.text.test_presets_data import real_texts_or_skip, text_key
from twilbert.text.normalize import NormalizeRules, normalize_expr
from twilbert.text.normalize.reference import load_pysentimiento_preprocessing, normalize_row

PEER = load_pysentimiento_preprocessing()
pytestmark = pytest.mark.skipif(PEER is None, reason="pysentimiento is not installed (make test installs it --no-deps)")

# text_key(raw text) -> reason. Empty: no real text differs. A new entry needs a reason a reader can check.
KNOWN_DIFFERENCES: dict[str, str] = {}

RULES = NormalizeRules(preset="pysentimiento").effective()


def peer(text: str) -> str:
    return PEER.preprocess_tweet(text, lang="es")


def vectorised(texts: list[str]) -> list[str]:
    return pl.DataFrame({"t": texts}, schema={"t": pl.String}).select(normalize_expr(pl.col("t"), RULES))["t"].to_list()


def test_peer_is_the_pinned_release():
    assert PEER.__version__ == "0.7.3"


# Hand-picked inputs that exercise every step and its quirks; checked against the peer itself, so
# they need no expected strings written by us (which could share our misreading of its code).
HAND_PICKED = [
    "@usuario1 mira esto https://t.co/abc123 #FelizNavidad 😂😂😂😂",
    "JAJAJAJAJA no puede ser!!!!!! 🤣🤣",
    "Hoooolaaaaa a todos 👋🏽 #BuenosDías #COVID19",
    "«Esto» es “muy” interesante… ¿verdad? — dijo él",
    "escríbeme a ana@mail.es o visita hola.como y www.ejemplo.es/ruta",
    "❤ bare heart, ❤️ with selector, 👨‍👩‍👧 family, 🇪🇸 flag",
    "literal | pipe | and 😀 emoji",
    "ajajajaja jejeje jijiji jajá jsjsjs",
    "el precio es 100€ y el 50% ° ©",
    "RT @Medio: ÚLTIMA HORA el #PP y el #PSOE...",
    "@ suelto y @@doble y @nombre_muy_largo_de_usuario_123",
    "",
    "   espacios   al   borde   ",
]


@pytest.mark.parametrize("text", HAND_PICKED)
def test_hand_picked_tweets_match_the_peer(text):
    want = peer(text)
    assert vectorised([text]) == [want]
    assert normalize_row(text, RULES) == want  # the per-row twin too


def test_every_real_tweet_matches_the_peer():
    texts = real_texts_or_skip()
    raw = [t for _, t in texts]
    got = vectorised(raw)
    differences = [
        (where, text, mine, theirs)
        for (where, text), mine in zip(texts, got)
        if mine != (theirs := peer(text)) and text_key(text) not in KNOWN_DIFFERENCES
    ]
    agreement = 1 - len(differences) / len(raw)
    print(f"pysentimiento preset: {len(raw) - len(differences)}/{len(raw)} identical ({agreement:.4%})")
    assert agreement >= 0.999, differences[:20]
    assert not differences, f"{len(differences)} unlisted differences (add them to KNOWN_DIFFERENCES with a reason): {differences[:10]}"


def test_explicit_switch_overrides_the_preset():
    """A rule set in params wins over the preset's value (and the rest of the preset stays)."""
    rules = NormalizeRules(preset="pysentimiento", max_char_run=0).effective()
    assert rules.max_char_run == 0 and rules.char_table is True and rules.user_token == RULES.user_token
    text = "Holaaaaa #BuenosDias @ana"
    out = pl.DataFrame({"t": [text]}).select(normalize_expr(pl.col("t"), rules))["t"].item()
    assert peer(text) == "Holaaa hashtag buenos dias @usuario"
    assert out == "Holaaaaa hashtag buenos dias @usuario"

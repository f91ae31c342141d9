"""Tweet normalisation: URLs, mentions, RT, hashtags, laughter, emoji... as one polars expression.

Every rule is one entry of a table (:mod:`.rules`): its ``normalize.rules`` fields with their off and
per-preset values, its place in each rule order, the placeholders it inserts, and two implementations
side by side, a vectorised one over polars columns and a per-row one in plain Python. Tests hold the
two equal on hand-written golden tweets and on the real tweets of ``../shared/data``, and hold the
``twilbert`` and ``pysentimiento`` presets equal to those originals' own code.

* :mod:`.rules`      the table and the rule implementations (:mod:`.spec`: the shape of an entry)
* :mod:`.config`     NormalizeRules, EffectiveRules, PRESETS, RULE_ORDERS and the step tables, generated
* :mod:`.chars`      character classes and tables both implementations share
* :mod:`.emojis`     emoji names and their vectorised replacement
* :mod:`.kernels`    numpy/Arrow kernels for what regexes cannot express (NFC, tag split, runs)
* :mod:`.gating`     running a rule only on the rows it can change
* :mod:`.apply`      :func:`normalize_expr` (polars) and :mod:`.reference` :func:`normalize_row` (per row)
* :mod:`.drop`       DropRules and their expressions

Presets: ``default`` (ours: every cleaning rule on, lower-case, emoji as Spanish words), ``twilbert``
(the original TWilBERT's preprocessing; one deviation, see docs/deviations.md), ``pysentimiento``
(``preprocess_tweet(text, lang="es")``, RoBERTuito's, quirks included) and ``none``. What each rule
does, the orders, placeholders, limits and how to add a rule: docs/normalization.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twilbert.text.normalize.apply import normalize_expr, normalize_texts
from twilbert.text.normalize.chars import (
    LAUGHTER,
    LETTER,
    LOWER,
    PYSENTIMIENTO_CHAR_TABLE,
    PYSENTIMIENTO_TLDS,
    SPACE,
    UPPER,
    WORD,
    char_class,
    python_word,
)
from twilbert.text.normalize.config import (
    CHOICES,
    PRESETS,
    RULE_ORDERS,
    EffectiveRules,
    NormalizeRules,
    glued_placeholder_tokens,
    placeholder_keys,
    placeholder_tokens,
)
from twilbert.text.normalize.drop import DropRules, few_words_expr, placeholder_only_expr, word_count_expr
from twilbert.text.normalize.emojis import emoji_codes, emoji_table
from twilbert.text.normalize.kernels import cap_char_runs, char_run_alphabet, split_tag_words
from twilbert.text.normalize.rules import TABLE
from twilbert.text.normalize.spec import (
    EMOJI_MODES,
    HASHTAG_MODES,
    CharRunScope,
    EmojiMode,
    HashtagMode,
    OriginStyle,
    PresetName,
    PysentimientoStyle,
    RuleOrder,
)


@dataclass(frozen=True, kw_only=True)
class NormalizeConfig:
    """The ``normalize:`` section of params.yaml."""

    rules: NormalizeRules = field(default_factory=NormalizeRules)
    drop: DropRules = field(default_factory=DropRules)


__all__ = [
    "NormalizeRules",
    "EffectiveRules",
    "DropRules",
    "NormalizeConfig",
    "PRESETS",
    "RULE_ORDERS",
    "CHOICES",
    "TABLE",
    "HASHTAG_MODES",
    "EMOJI_MODES",
    "HashtagMode",
    "EmojiMode",
    "PresetName",
    "RuleOrder",
    "OriginStyle",
    "PysentimientoStyle",
    "CharRunScope",
    "PYSENTIMIENTO_CHAR_TABLE",
    "PYSENTIMIENTO_TLDS",
    "SPACE",
    "UPPER",
    "LOWER",
    "LETTER",
    "WORD",
    "LAUGHTER",
    "char_class",
    "normalize_expr",
    "normalize_texts",
    "placeholder_keys",
    "placeholder_tokens",
    "glued_placeholder_tokens",
    "placeholder_only_expr",
    "word_count_expr",
    "few_words_expr",
    "cap_char_runs",
    "char_run_alphabet",
    "split_tag_words",
    "emoji_codes",
    "emoji_table",
    "python_word",
]

"""The rule table (twilbert.text.normalize.rules.TABLE) and what config.py generates from it.

The differential tests (test_normalize.py, test_presets_*.py) pin what the rules do; these pin the
generation: field order, presets, rule orders, step tables, placeholders and loading old rule dicts.
"""

from __future__ import annotations

import dataclasses

import pytest

from twilbert.config import from_dict, to_dict
from twilbert.text.normalize import PRESETS, RULE_ORDERS, TABLE, EffectiveRules, NormalizeRules, normalize_texts
from twilbert.text.normalize.config import PARAMS, POLARS_STEPS, ROW_STEPS, RULES
from twilbert.text.normalize.reference import normalize_row

# The field order of EffectiveRules is the key order of every logged and saved rule dict.
FIELDS = (
    "rule_order", "unicode_nfc", "html_unescape", "urls", "url_style", "url_token", "mentions", "mention_style",
    "user_token", "remove_rt", "remove_ellipsis", "hashtags", "hashtag_style", "hashtag_token", "char_table",
    "laughter", "laughter_style", "max_char_run", "char_run_scope", "emoji", "emoji_style", "emoji_wrapper",
    "lowercase", "collapse_whitespace", "strip_whitespace",
)
ORDERS = {
    "default": (
        "unicode_nfc", "html_unescape", "urls", "mentions", "remove_rt", "remove_ellipsis", "hashtags",
        "char_table", "laughter", "lowercase", "max_char_run", "emoji", "whitespace",
    ),
    "twilbert": (
        "unicode_nfc", "urls", "mentions", "remove_ellipsis", "remove_rt", "html_unescape", "hashtags",
        "char_table", "laughter", "lowercase", "max_char_run", "emoji", "whitespace",
    ),
    "pysentimiento": (
        "unicode_nfc", "html_unescape", "hashtags", "char_table", "mentions", "urls", "remove_rt",
        "remove_ellipsis", "max_char_run", "emoji", "laughter", "lowercase", "whitespace",
    ),
}


def _known(names, known) -> tuple[str, ...]:
    """``names`` without those of rules added after these pins (a new rule needs no edit here)."""
    return tuple(n for n in names if n in known)


def test_fields_follow_the_table():
    assert _known((f.name for f in dataclasses.fields(EffectiveRules)), FIELDS) == FIELDS
    assert tuple(f.name for f in dataclasses.fields(NormalizeRules)) == ("preset", *(p.name for p in PARAMS))
    assert all(f.default is None for f in dataclasses.fields(NormalizeRules)[1:])
    assert tuple(f.name for f in dataclasses.fields(EffectiveRules)) == tuple(p.name for p in PARAMS)
    assert len({rule.name for rule in TABLE}) == len(TABLE)


def test_rule_orders_are_generated_permutations_of_the_table():
    assert {order: _known(names, ORDERS[order]) for order, names in RULE_ORDERS.items()} == ORDERS
    for order, names in RULE_ORDERS.items():
        assert sorted(names) == sorted(rule.name for rule in TABLE)
        assert len({rule.order[order] for rule in TABLE}) == len(TABLE), f"{order}: two rules at one position"


def test_step_tables_cover_every_rule():
    assert set(POLARS_STEPS) == set(ROW_STEPS) == set(RULES) == {rule.name for rule in TABLE}


def test_presets_are_off_values_plus_the_entries_overrides():
    off = {p.name: p.off for p in PARAMS}
    assert PRESETS["none"] == off
    assert list(PRESETS) == ["default", "twilbert", "pysentimiento", "none"]
    for preset, values in PRESETS.items():
        assert list(values) == [p.name for p in PARAMS]
        changed = {k for k, v in values.items() if v != off[k]}
        assert changed == {p.name for p in PARAMS if preset in p.presets and p.presets[preset] != p.off}
    assert PRESETS["default"]["hashtags"] == "split" and PRESETS["pysentimiento"]["user_token"] == "@usuario"


def test_no_rule_runs_under_preset_none():
    r = NormalizeRules(preset="none").effective()
    assert not any(rule.enabled(r) for rule in TABLE)
    texts = ["RT @ana: hola &amp; #ReyesMagos jajaja 😂😂😂😂 https://t.co/x …", "  A  b\u00a0"]
    assert normalize_texts(texts, r) == texts == [normalize_row(t, r) for t in texts]


def test_each_switch_enables_only_its_rule():
    none = NormalizeRules(preset="none").effective()
    for p in PARAMS:
        if not p.kind == "flag":
            continue
        r = dataclasses.replace(none, **{p.name: True})
        assert {rule.name for rule in TABLE if rule.enabled(r)} == {rule.name for rule in TABLE if p in rule.params}


def test_placeholders_are_token_fields_of_their_rule():
    for rule in TABLE:
        for ph in rule.placeholders:
            assert ph.key in {p.name for p in rule.params if p.kind == "token"}, (rule.name, ph.key)


def test_rule_dicts_without_optional_fields_still_load():
    saved = to_dict(NormalizeRules().effective())
    optional = [p.name for p in PARAMS if p.optional]
    assert "char_table" in optional and "rule_order" in optional and "url_token" not in optional
    old = {k: v for k, v in saved.items() if k not in optional}
    # A field missing from a saved dict takes its off value (what a dict saved before the rule meant);
    # remove_invisible is the one optional field on in `default`.
    assert "remove_invisible" in optional and NormalizeRules().effective().remove_invisible
    assert from_dict(EffectiveRules, old) == dataclasses.replace(NormalizeRules().effective(), remove_invisible=False)
    with pytest.raises(TypeError):
        EffectiveRules(**{k: v for k, v in old.items() if k != "url_token"})

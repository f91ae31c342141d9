"""``normalize.rules`` as frozen dataclasses, the presets, the rule orders and both step tables, all
generated from the rule table (:data:`twilbert.text.normalize.rules.TABLE`).

:class:`NormalizeRules` is the params section: every field ``None`` (= take the preset's value) but
``preset``. :class:`EffectiveRules` is what runs and is logged: every field concrete, in table order.
Fields marked ``optional`` in the table have defaults (their off value) in EffectiveRules, so rule
dicts saved without them still load and mean the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field, fields, make_dataclass

from twilbert.config import check
from twilbert.text.normalize.rules import RULE_ORDER, TABLE
from twilbert.text.normalize.spec import ORIGINS, PRESET_NAMES, Param, PresetName, Rule

PARAMS: tuple[Param, ...] = (RULE_ORDER, *(p for rule in TABLE for p in rule.params))
RULES: dict[str, Rule] = {rule.name: rule for rule in TABLE}
# Fields with a fixed set of values -> the values (checked in __post_init__; from_dict checks types).
CHOICES: dict[str, tuple[str, ...]] = {p.name: p.choices for p in PARAMS if p.kind == "choice"}
PRESETS: dict[str, dict[str, object]] = {
    preset: {p.name: p.presets.get(preset, p.off) for p in PARAMS} for preset in PRESET_NAMES
}
# The order the rules run in, per ``rule_order``. "whitespace" is collapse_whitespace/strip_whitespace.
RULE_ORDERS: dict[str, tuple[str, ...]] = {
    order: tuple(rule.name for rule in sorted(TABLE, key=lambda rule: rule.order[order])) for order in ORIGINS
}


def _when_enabled(rule: Rule, step: Callable) -> Callable:
    return lambda x, r: step(x, r) if rule.enabled(r) else x


# Rule name -> (expr, rules) -> expr, and (text, rules) -> text; each a no-op when its rule is off.
POLARS_STEPS: dict[str, Callable] = {rule.name: _when_enabled(rule, rule.polars) for rule in TABLE}
ROW_STEPS: dict[str, Callable] = {rule.name: _when_enabled(rule, rule.row) for rule in TABLE}


def _check_token(value: str, key: str, *, allow_empty: bool = False) -> None:
    check(isinstance(value, str), key, f"must be a string, got {value!r}")
    check(allow_empty or value != "", key, "must not be empty")
    check(not any(c.isspace() for c in value), key, f"must not contain whitespace, got {value!r}")


def _check_count(run: object, key: str) -> None:
    check(isinstance(run, int) and not isinstance(run, bool), key, f"must be an int, got {run!r}")
    # 1 would merge Spanish double letters (llave, perro, acción); 0 switches the rule off.
    check(run >= 0 and run != 1, key, f"must be 0 (off) or >= 2, got {run}")


def _check_rule_values(obj: object, *, skip_none: bool) -> None:
    """Per-field checks shared by NormalizeRules (None = unset, skipped) and EffectiveRules."""
    for kind in ("token", "choice", "count"):
        for p in PARAMS:
            value = getattr(obj, p.name)
            if p.kind != kind or (value is None and skip_none):
                continue
            if kind == "token":
                _check_token(value, p.name, allow_empty=p.may_be_empty)
            elif kind == "choice":
                check(value in p.choices, p.name, f"expected one of {list(p.choices)}, got {value!r}")
            else:
                _check_count(value, p.name)


def _rules_post_init(self: NormalizeRules) -> None:
    check(self.preset in PRESETS, "preset", f"expected one of {list(PRESETS)}, got {self.preset!r}")
    _check_rule_values(self, skip_none=True)


def _effective(self: NormalizeRules) -> EffectiveRules:
    """Every rule concrete: unset fields filled from ``PRESETS[preset]``."""
    base = PRESETS[self.preset]
    values = {f.name: getattr(self, f.name) for f in fields(EffectiveRules)}
    return EffectiveRules(**{k: base[k] if v is None else v for k, v in values.items()})


def _effective_post_init(self: EffectiveRules) -> None:
    _check_rule_values(self, skip_none=False)
    owner: dict[str, str] = {}  # token -> the key that set it first; a clash names the later key
    for key, token in _placeholder_fields(self):
        check(token not in owner, key, f"placeholder tokens must differ: {token!r} is also {owner.get(token)}")
        owner[token] = key
    if self.lowercase:
        # Placeholders are inserted before lowercasing, which would otherwise change them.
        for p in PARAMS:
            value = getattr(self, p.name)
            if p.kind == "token":
                check(value == value.lower(), p.name, f"must be lower-case when lowercase is on, got {value!r}")


def _doc(head: str) -> str:
    return head + "\n\n" + "\n".join(f"* ``{p.name}``: {p.doc}" for p in PARAMS if p.doc)


def _generate(name: str, specs: list, namespace: dict) -> type:
    cls = make_dataclass(name, specs, namespace=namespace, frozen=True, kw_only=True)
    cls.__module__ = __name__
    return cls


NormalizeRules = _generate(
    "NormalizeRules",
    [("preset", PresetName, field(default="default"))] + [(p.name, p.type | None, field(default=None)) for p in PARAMS],
    {
        "__doc__": _doc('The ``normalize.rules`` section of params.yaml. ``null`` (None) takes the preset\'s value.'),
        "__post_init__": _rules_post_init,
        "effective": _effective,
    },
)
EffectiveRules = _generate(
    "EffectiveRules",
    [(p.name, p.type, field(default=p.off) if p.optional else field()) for p in PARAMS],
    {
        "__doc__": "The rules actually applied (logged with every run). Built by :meth:`NormalizeRules.effective`.",
        "__post_init__": _effective_post_init,
    },
)


def as_effective(rules: EffectiveRules | NormalizeRules) -> EffectiveRules:
    return rules.effective() if isinstance(rules, NormalizeRules) else rules


def _placeholder_fields(r: EffectiveRules) -> list[tuple[str, str]]:
    """(key, token) of every placeholder the enabled rules insert, in table order."""
    return [(ph.key, getattr(r, ph.key)) for rule in TABLE for ph in rule.placeholders if ph.inserted(r)]


def placeholder_keys(rules: EffectiveRules | NormalizeRules) -> list[tuple[str, str]]:
    """``(normalize.rules key, token)`` of every placeholder the enabled rules insert (messages name the key)."""
    return _placeholder_fields(as_effective(rules))


def placeholder_tokens(rules: EffectiveRules | NormalizeRules) -> list[str]:
    """Tokens the enabled rules insert; the vocab stage makes each one a single SentencePiece piece."""
    return [token for _, token in _placeholder_fields(as_effective(rules))]


def glued_placeholder_tokens(rules: EffectiveRules | NormalizeRules) -> list[str]:
    """The placeholders (of :func:`placeholder_tokens`) that the rules may insert right after a
    non-space character, as the originals' styles do (``visita:url``, ``ana@usuario``, ``(hashtag``).

    Why it matters: SentencePiece matches a user-defined piece anywhere, even inside a word. The vocab
    stage therefore registers a bare piece ``p`` (besides ``▁p``) only for these. Under our default
    styles every placeholder is inserted with spaces around it, so it is always ``▁p`` and the bare
    piece would only split words: ``burla`` -> ``▁b url a`` (about 150 words of the *burla* family
    in the 137k real tweets of ../shared/data, counted; tests/text/test_vocab.py shows the split)."""
    r = as_effective(rules)
    return [getattr(r, ph.key) for rule in TABLE for ph in rule.placeholders if ph.inserted(r) and ph.glued(r)]

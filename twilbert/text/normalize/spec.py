"""The shape of a rule-table entry (:class:`Rule`, :class:`Param`, :class:`Placeholder`) and the
value types of ``normalize.rules``. The table itself is :data:`twilbert.text.normalize.rules.TABLE`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import polars as pl

    from twilbert.text.normalize.config import EffectiveRules

HashtagMode = Literal["keep", "split", "replace", "token_split"]
EmojiMode = Literal["keep", "name", "remove"]
PresetName = Literal["default", "twilbert", "pysentimiento", "none"]
RuleOrder = Literal["default", "twilbert", "pysentimiento"]
OriginStyle = Literal["default", "twilbert", "pysentimiento"]  # whose definition of a rule
PysentimientoStyle = Literal["default", "pysentimiento"]
CharRunScope = Literal["alphabet", "any"]
PRESET_NAMES: tuple[str, ...] = ("default", "twilbert", "pysentimiento", "none")  # "none": every field off
ORIGINS: tuple[str, ...] = ("default", "twilbert", "pysentimiento")
HASHTAG_MODES: tuple[str, ...] = ("keep", "split", "replace", "token_split")
EMOJI_MODES: tuple[str, ...] = ("keep", "name", "remove")


@dataclass(frozen=True)
class Param:
    """One field of ``normalize.rules``.

    ``kind``: ``flag`` (bool), ``choice`` (one of ``choices``), ``token`` (a placeholder: no
    whitespace; empty only if ``may_be_empty``) or ``count`` (``max_char_run``: 0 = off, else >= 2).
    ``switch``: the owning rule runs when a switch differs from ``off``. ``optional``: rule dicts saved
    without this key still load (as ``off``, which is what they meant)."""

    name: str
    type: object
    off: object
    presets: Mapping[str, object] = field(default_factory=dict)  # preset -> value, where not ``off``
    kind: Literal["flag", "choice", "token", "count"] = "flag"
    choices: tuple[str, ...] = ()
    switch: bool = False
    optional: bool = False
    may_be_empty: bool = False
    doc: str = ""


@dataclass(frozen=True)
class Placeholder:
    """A token a rule inserts: the field holding it, when it is inserted, and when it may come glued
    to the preceding character (the originals' styles: ``visita:url``), which the vocabulary needs."""

    key: str
    inserted: Callable[[EffectiveRules], bool]
    glued: Callable[[EffectiveRules], bool] = lambda r: False


@dataclass(frozen=True)
class Rule:
    name: str
    params: tuple[Param, ...]
    order: Mapping[str, int]  # rule_order -> position (ascending; gaps of 10 leave room)
    polars: Callable[[pl.Expr, EffectiveRules], pl.Expr]
    row: Callable[[str, EffectiveRules], str]
    placeholders: tuple[Placeholder, ...] = ()

    def enabled(self, r: EffectiveRules) -> bool:
        return any(getattr(r, p.name) != p.off for p in self.params if p.switch)


def flag_param(name: str, presets: Mapping[str, object], doc: str, *, optional: bool = False) -> Param:
    return Param(name, bool, False, presets, switch=True, optional=optional, doc=doc)


def style_param(name: str, tp: object, presets: Mapping[str, object], doc: str) -> Param:
    return Param(name, tp, "default", presets, kind="choice", choices=get_args(tp), optional=True, doc=doc)


def token_param(
    name: str, off: str, presets: Mapping[str, object] | None = None, *, may_be_empty: bool = False, optional: bool = False
) -> Param:
    return Param(name, str, off, presets or {}, kind="token", may_be_empty=may_be_empty, optional=optional, doc="placeholder inserted")

"""Typed configuration: frozen dataclasses built from plain dicts, strictly.

Why this exists: the original TWilBERT read JSON configs with ``config["model"]["x"]`` lookups, so a
typo'd key was silently ignored and a wrong type failed deep inside Keras (docs/deviations.md#strict-config). Here a
config *is* a tree of frozen dataclasses, and ``from_dict`` refuses anything it does not understand:

* unknown keys -> ``ConfigError("model.n_encoder: unknown key (did you mean 'n_encoders'?)")``;
* wrong types  -> ``ConfigError("training.batch_size: expected int, got float 1.5")``;
* impossible values are checked by each dataclass's ``__post_init__``, which raises
  ``ConfigError`` via :func:`check` naming the field; ``from_dict`` prefixes the full key path.

Some checks hold for every config, so they live here rather than in each dataclass: floats are finite
(``lr: .inf`` would pass "must be > 0"), ints fit 64 bits (numpy/torch overflow past that), and every
int under a key named ``seed``/``seeds`` (``*_seed``) fits ``[0, 2**32 - 1]``. Upper bounds on sizes are tables of dotted
keys checked by :func:`check_bounds` (the table is the caller's: ``pipeline/params.py``).

The core library (``twilbert/``) owns its own config dataclasses (model, masking, optimiser...);
``pipeline/params.py`` composes them into the ``params.yaml`` tree. Nothing here knows about YAML,
DVC or MLflow.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
import types
import typing
from typing import Any, Literal, Mapping, Union, get_args, get_origin, get_type_hints


_SCI_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # numpy and torch hold ints in 64 bits
SEED_MAX = 2**32 - 1  # numpy's RandomState and most seeders take 32-bit seeds


class ConfigError(ValueError):
    """A config value that cannot be accepted. The message starts with the dotted key path."""


def check(condition: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("key: message")`` unless ``condition``; for use in ``__post_init__``."""
    if not condition:
        raise ConfigError(f"{key}: {message}")


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value against a type hint. Only lossless conversions are made."""
    origin = get_origin(tp)

    if tp is Any:
        return value
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: expected one of {list(allowed)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: may not be null (expected {_type_name(tp)})")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append((arg, exc))
        fitting = [exc for arg, exc in errors if _same_kind(value, arg)]
        if len(fitting) == 1:  # the value is of one member's kind: its error says what is wrong (which item, not finite)
            raise fitting[0]
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items)  # frozen configs hold tuples, so they stay hashable
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        args = get_args(tp)
        ktp, vtp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            ck = _convert(k, ktp, f"{key}.{_key_text(k)}") if ktp is not str else str(k)
            out[ck] = _convert(v, vtp, f"{key}.{_key_text(k)}")
        return types.MappingProxyType(out)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected int, got {type(value).__name__} {_short(value)}")
        if _is_seed(key.rsplit(".", 1)[-1].split("[")[0]):  # a seed field, or an item of seeds
            _check_seed(value, key)
        if not INT_MIN <= value <= INT_MAX:
            raise ConfigError(f"{key}: {_short(value)} does not fit a 64-bit integer")
        return value
    if tp is float:
        if isinstance(value, str) and _SCI_FLOAT.fullmatch(value.strip()):
            # PyYAML follows YAML 1.1, where `1e-4` (no dot) is a *string*; every user writes it.
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int literal past 1e308
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{key}: must be a finite number, got {_short(value)}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: cannot read {type(value).__name__} {value!r} as {_type_name(tp)}")


def _same_kind(value: Any, tp: Any) -> bool:
    """``value`` is of the kind ``tp`` wants (a mapping for a dict or dataclass, a list for a list, a
    number for int/float), so that type's own error (which item, "not finite") is the one to show."""
    origin = get_origin(tp) or tp
    if isinstance(value, dict):
        return origin is dict or dataclasses.is_dataclass(tp)
    if isinstance(value, (list, tuple)):
        return origin in (list, tuple)
    if isinstance(value, bool):
        return tp is bool
    if isinstance(value, (int, float)):
        return tp is float or (tp is int and isinstance(value, int))
    return False


def _key_text(key: Any) -> str:
    """A mapping key for a one-line message: as written when printable, else its repr."""
    text = str(key)
    return text if text.isprintable() else repr(text)


def _short(value: Any, limit: int = 40) -> str:
    """``repr`` cut to ``limit`` characters, so a 10,000-digit int still gives a one-line error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_seed(value: int, key: str) -> None:
    """Fields named ``seed`` (and the items of ``seeds``) fit every generator they are given to."""
    if not 0 <= value <= SEED_MAX:
        raise ConfigError(f"{key}: a seed must be in [0, {SEED_MAX}] (2**32 - 1), got {_short(value)}")


def _is_seed(name: str) -> bool:
    return name in ("seed", "seeds") or name.endswith(("_seed", "_seeds"))


_NOTED: set[str] = set()


def note_deprecated(key: str, use: str) -> None:
    """One line on stderr, once per process and key: ``key`` still works, ``use`` is what to write."""
    if key not in _NOTED:
        _NOTED.add(key)
        print(f"note: {key} is deprecated; write {use} instead", file=sys.stderr, flush=True)


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; missing keys take the dataclass defaults.

    Raises ConfigError naming the full dotted key for unknown keys, wrong types, missing required
    keys, and for any ConfigError raised by ``__post_init__`` validation.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    path = (prefix + ".") if prefix else ""
    if hasattr(cls, "upgrade_keys"):  # a config that still reads keys it has replaced
        data = cls.upgrade_keys(dict(data), prefix)
    for k in data:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(fields)})"
            raise ConfigError(f"{path}{_key_text(k)}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], f"{path}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}{name}: required key is missing")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        # __post_init__ names fields relative to its own dataclass; make the path absolute.
        raise ConfigError(f"{path}{msg}" if path and not msg.startswith(path) else msg) from None


def check_bounds(config: Any, bounds: Mapping[str, tuple[float, float]], prefix: str = "") -> None:
    """Check ``{dotted key: (lo, hi)}`` on a config tree; raise ConfigError naming the first key out of range.

    ``*`` in a key stands for every key of a mapping (``tasks.*.finetuning.batch_size``). A null value,
    or a key absent from a mapping (an override not given), is skipped; a key a dataclass does not have
    is a bug in the table and raises ``KeyError``, so a renamed knob cannot leave its bound unchecked.
    """
    for pattern, (lo, hi) in bounds.items():
        for key, value in _select(config, pattern.split("."), prefix):
            if value is not None and not lo <= value <= hi:
                raise ConfigError(f"{key}: must be in [{lo}, {hi}], got {_short(value)}")


def _select(node: Any, parts: list[str], path: str) -> typing.Iterator[tuple[str, Any]]:
    if not parts:
        yield path, node
        return
    head, rest = parts[0], parts[1:]
    join = (lambda k: f"{path}.{k}") if path else str
    if isinstance(node, (dict, types.MappingProxyType)):
        keys = list(node) if head == "*" else [head] if head in node else []
        for k in keys:
            yield from _select(node[k], rest, join(k))
    elif dataclasses.is_dataclass(node):
        if not any(f.name == head for f in dataclasses.fields(node)):
            raise KeyError(f"bounds table: {join(head)} is not a config key")
        yield from _select(getattr(node, head), rest, join(head))


def to_dict(obj: Any) -> Any:
    """Inverse of ``from_dict``: plain dicts/lists, ready for YAML/JSON (and for MLflow params)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, (dict, types.MappingProxyType)):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"n_encoders": 6}}`` -> ``{"model.n_encoders": 6}`` (lists kept as values)."""
    tree = to_dict(tree)
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = v
    else:
        out[prefix] = tree
    return out


__all__ = ["ConfigError", "SEED_MAX", "check", "check_bounds", "from_dict", "note_deprecated", "to_dict", "flatten", "typing"]

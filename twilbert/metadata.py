"""One way to read back the JSON files the project writes (checksums, run and trainer state, model
``config.json``, ``pretrain.json``, shard manifests, vocab stats).

Why one loader: each reader used to call ``json.loads(path.read_text())`` and index the result, so a
damaged file gave whatever the first failing step raised (``UnicodeDecodeError`` for binary bytes,
``TypeError`` for ``123``, ``KeyError`` for a missing key): a traceback, and for a checkpoint one
that blocked every resume instead of falling back to the previous checkpoint. Here every problem,
whether decoding (not UTF-8, truncated, not JSON, ``NaN``), type (valid JSON that is not an object)
or schema (missing keys, wrong types, values out of range), becomes the caller's own error type
with one line ``<path>: <problem>``. Callers that fall back on an unusable checkpoint catch that type.

``schema`` is a frozen config dataclass (validated with :func:`twilbert.config.from_dict`), a
callable that raises on a bad dict (``ConfigError``/``ValueError``/``TypeError``/``KeyError``), or
:func:`fields` for plain ``{key: type}`` checks. Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from twilbert.config import ConfigError, from_dict

Schema = type | Callable[[dict], Any] | None


class MetadataError(ValueError):
    """The default error of :func:`read_json`: a metadata file that cannot be used."""


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed here (non-finite number)")


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_json(raw: bytes | str, where: str, *, schema: Schema = None, error: type[Exception] = MetadataError,
               allow_nan: bool = False, kind: type | tuple[type, ...] = dict) -> Any:
    """Decode ``raw`` (bytes or text; ``where`` names it in messages) as a JSON value of type ``kind``
    (an object unless told otherwise) and check it against ``schema``; raise ``error`` in one line."""
    if not isinstance(raw, (bytes, str)):
        raise error(f"{where}: expected JSON text, got {type(raw).__name__}")
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise error(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); damaged or not a JSON file") from None
    if not raw.strip():
        raise error(f"{where}: empty; expected JSON (an interrupted write?)")
    try:
        data = json.loads(raw, parse_constant=None if allow_nan else _reject_constant)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); truncated or damaged") from None
    except (ValueError, RecursionError) as exc:
        raise error(f"{where}: {_one_line(exc)}") from None
    if not _is(data, kind):
        raise error(f"{where}: expected {_kind_name(kind)}, got {_json_type(data)} {_one_line(repr(data), 40)}")
    return validate(data, where, schema, error=error)


def validate(data: Any, where: str, schema: Schema, *, error: type[Exception] = MetadataError) -> Any:
    """Check decoded ``data`` against ``schema`` (see the module docstring); return it unchanged."""
    if schema is None:
        return data
    try:
        if dataclasses.is_dataclass(schema) and isinstance(schema, type):
            from_dict(schema, data)
        else:
            schema(data)
    except error:
        raise
    except (ConfigError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        message = f"missing key {exc}" if type(exc) is KeyError else _one_line(exc)
        raise error(f"{where}: {message}") from None
    return data


def read_json(path: str | os.PathLike, *, schema: Schema = None, error: type[Exception] = MetadataError,
              allow_nan: bool = False, kind: type | tuple[type, ...] = dict) -> Any:
    """The JSON object in ``path``, checked (see :func:`parse_json`); a missing or unreadable file is
    ``error`` too, naming the cause (no such file, permission denied, a directory...)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_json(raw, str(path), schema=schema, error=error, allow_nan=allow_nan, kind=kind)


def fields(required: Mapping[str, Any] | None = None, optional: Mapping[str, Any] | None = None,
           extra: bool = True) -> Callable[[dict], None]:
    """A schema for plain dicts: ``{key: type or tuple of types}``, each required key present and each
    present key of its type (``bool`` is not an ``int`` here; ``float`` accepts ints); ``extra=False``
    also refuses keys not listed."""
    required, optional = dict(required or {}), dict(optional or {})

    def check(data: dict) -> None:
        for key in required:
            if key not in data:
                raise ConfigError(f"{key}: required key is missing")
        for key, value in data.items():
            tp = required.get(key, optional.get(key))
            if tp is None:
                if not extra and key not in optional:
                    raise ConfigError(f"{key}: unknown key (known: {', '.join([*required, *optional])})")
                continue
            if not _is(value, tp):
                raise ConfigError(f"{key}: expected {_kind_name(tp)}, got {_json_type(value)} {_one_line(repr(value), 40)}")

    return check


def _is(value: Any, tp: Any) -> bool:
    types = tp if isinstance(tp, tuple) else (tp,)
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, tuple(t for t in types if t is not None)) or (value is None and (None in types or type(None) in types))


_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "an integer", float: "a number", bool: "true/false"}


def _kind_name(kind: Any) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k in (None, type(None)) else _NAMES.get(k, getattr(k, "__name__", str(k))) for k in kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}.get(type(value), type(value).__name__)


__all__ = ["MetadataError", "fields", "parse_json", "read_json", "validate"]

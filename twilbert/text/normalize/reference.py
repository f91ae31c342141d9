"""The normalisation rules again, one tweet at a time in plain Python: the original's approach.

``re.sub`` + ``html.unescape`` + ``emoji.demojize`` per row, as TWilBERT and pysentimiento do. It is
the specification by example for :func:`~twilbert.text.normalize.apply.normalize_expr`: tests hold
the two equal, and benchmarks use this one as the slow peer. The per-row twins are the ``row``
implementations of the rule table (:mod:`~twilbert.text.normalize.rules`).

Known, documented differences (none in the 137k real tweets of ``../shared/data``):
* Default emoji style: ``emoji.demojize`` leaves an emoji raw when it begins a longer sequence that is
  then broken off (``❤️`` + ZWJ + a letter, ``🏴`` + half a subdivision-flag tag sequence); the
  vectorised table names it, which is the better reading. (The pysentimiento style reproduces
  demojize exactly, dead ends included.)
* With ``collapse_whitespace`` off, runs of spaces may differ (``RT`` removal consumes its spaces).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType

from twilbert.text.normalize.config import ROW_STEPS, RULE_ORDERS, EffectiveRules, NormalizeRules, as_effective


def normalize_row(text: str, rules: EffectiveRules | NormalizeRules) -> str:
    """One text through the enabled rules, in the same order as ``normalize_expr``."""
    r = as_effective(rules)
    for step in RULE_ORDERS[r.rule_order]:
        text = ROW_STEPS[step](text, r)
    return text


@functools.cache
def load_pysentimiento_preprocessing() -> ModuleType | None:
    """The real ``pysentimiento.preprocessing`` module (``preprocess_tweet``), or None if not installed.

    Loaded from its file, without the package ``__init__``, which imports transformers and torch: the
    module itself needs only ``re`` and ``emoji``. pysentimiento is a test/benchmark peer, installed
    ``--no-deps`` (see the Makefile), never a dependency of the library.
    """
    try:
        dist = importlib.metadata.distribution("pysentimiento")
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file("pysentimiento/preprocessing.py")))
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("_pysentimiento_preprocessing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.__version__ = dist.version
    return module

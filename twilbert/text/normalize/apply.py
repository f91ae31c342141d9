"""The enabled rules, in their order, as one polars expression over a String column.

Every rule compiles to column operations (regexes and Aho-Corasick tables in polars' Rust kernels,
numpy for what regexes cannot express), most of them gated to the rows they can change
(:mod:`~twilbert.text.normalize.gating`). The per-row twin is :mod:`~twilbert.text.normalize.reference`.
"""

from __future__ import annotations

import polars as pl

from twilbert.text.normalize.config import POLARS_STEPS, RULE_ORDERS, EffectiveRules, NormalizeRules, as_effective


def normalize_expr(expr: pl.Expr, rules: EffectiveRules | NormalizeRules) -> pl.Expr:
    """The enabled rules, in the order of ``RULE_ORDERS[rules.rule_order]``, as one expression over a
    String column."""
    r = as_effective(rules)
    for step in RULE_ORDERS[r.rule_order]:
        expr = POLARS_STEPS[step](expr, r)
    return expr


def normalize_texts(texts: list[str], rules: EffectiveRules | NormalizeRules) -> list[str]:
    """Convenience for tests and notebooks: a list in, a list out (runs the same expression)."""
    lf = pl.LazyFrame({"text": texts}, schema={"text": pl.String})
    return lf.select(normalize_expr(pl.col("text"), rules)).collect(engine="streaming")["text"].to_list()

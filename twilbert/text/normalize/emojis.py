"""Emoji as data: the ``emoji`` package's Spanish CLDR names, and their vectorised replacement.

Longest sequences first, so ZWJ families, skin tones and flags are one emoji even glued to a word;
the automaton is built per batch only from the patterns that can match there. pysentimiento's emoji
step (``demojize`` with ``|`` delimiters, quirks included) is reproduced here column-wise too.
"""

from __future__ import annotations

import functools

import polars as pl

from twilbert.text.normalize.chars import DEAD_END, EMO_END, EMO_START, ZWJ, char_class

@functools.cache
def emoji_codes() -> dict[str, str]:
    """Every emoji sequence of the ``emoji`` package -> its Spanish CLDR short name, as ``demojize``
    writes it between its delimiters (``"😂"`` -> ``"cara_llorando_de_risa"``)."""
    import emoji

    emoji.demojize("", language="es")  # loads the Spanish names into EMOJI_DATA (lazy since emoji 2.13)
    return {e: d["es"][1:-1] for e, d in emoji.EMOJI_DATA.items() if "es" in d}


@functools.cache
def emoji_table() -> dict[str, str]:
    """Every emoji sequence of the ``emoji`` package -> its Spanish CLDR name as words."""
    return {e: name.replace("_", " ") for e, name in emoji_codes().items()}



@functools.cache
def zwj_sequences() -> tuple[str, ...]:
    """The emoji sequences joined by ZWJ (families, professions, ``❤️‍🔥``), longest first."""
    return tuple(sorted((e for e in emoji_codes() if ZWJ in e), key=len, reverse=True))


@functools.cache
def emoji_replacements(mode: str, wrapper: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = emoji_table()
    pats = sorted(names, key=len, reverse=True)  # longest first: ZWJ families and skin tones match whole
    if mode == "name":
        repl = [f" {wrapper} {names[p]} {wrapper} " if wrapper else f" {names[p]} " for p in pats]
    else:
        repl = [" "] * len(pats)
    # As emoji.demojize: variation selectors not part of a known sequence are dropped.
    return tuple(pats) + ("\ufe0f", "\ufe0e"), tuple(repl) + ("", "")


@functools.cache
def emoji_trigger() -> str:
    """A class of characters one of which every emoji sequence contains (keycaps start with ASCII)."""
    chars = {e[0] for e in emoji_table() if not e[0].isascii()} | {"\ufe0f", "\ufe0e", "\u20e3"}
    return "[" + char_class("".join(sorted(chars))) + "]"


@functools.cache
def _emoji_dead_ends() -> tuple[str, ...]:
    """Prefixes of longer emoji sequences that are no emoji themselves but start with one
    (``🕵️`` + ZWJ, of ``🕵️‍♂️``). ``emoji.demojize`` walks its trie as deep as the text allows and,
    stopping at such a node, leaves the first character raw (``🕵️‍`` + ``x`` -> ``🕵‍x``), where a
    longest-match table names the shorter emoji. Matched first (longest), they flag those rows."""
    codes = emoji_codes()
    prefixes = {e[:k] for e in codes for k in range(2, len(e))}
    return tuple(sorted(p for p in prefixes if p not in codes and any(p[:k] in codes for k in range(1, len(p)))))


@functools.cache
def _emoji_pattern_frame(pats: tuple[str, ...], repl: tuple[str, ...]) -> pl.DataFrame:
    """An emoji replacement table as a frame, in its order, with each pattern's first character."""
    first = pl.Series(pats, dtype=pl.String).str.slice(0, 1)
    return pl.DataFrame({"pat": pats, "repl": repl, "first": first, "ascii": first.str.len_bytes() == 1})


def replace_emoji(s: pl.Series, pats: tuple[str, ...], repl: tuple[str, ...]) -> pl.Series:
    """``s.str.replace_many(pats, repl, leftmost=True)`` for an emoji table (or one that starts with
    emoji prefixes), building the automaton only from the patterns that can match in ``s``.

    Why: building it for all ~5250 sequences cost 15 ms per call, i.e. per streaming batch, more than
    the matching itself. A pattern can only match where its first character occurs; every first
    character is ASCII (keycaps, always kept) or in :func:`emoji_trigger`, whose occurrences are
    collected. The kept patterns keep their order, so the leftmost-first matches are the same."""
    present = s.str.extract_all(emoji_trigger()).explode().drop_nulls().unique()
    table = _emoji_pattern_frame(pats, repl)
    sub = table.filter(pl.col("ascii") | pl.col("first").is_in(present.implode()))
    return s.str.replace_many(sub["pat"].implode(), sub["repl"].implode(), leftmost=True)


def emoji_pysentimiento(s: pl.Series, wrapper: str) -> pl.Series:
    """pysentimiento's ``demojize(text, language="es", delimiters=("|", "|"))`` followed by
    ``re.sub(r"\\|([^\\|]+)\\|", " emoji " + words + " emoji ")``, exactly.

    * Rows with no ``|`` and no demojize dead end (nearly all): the ``|...|`` spans are exactly the
      emoji names, so one table pass writes the wrapped words directly.
    * Rows with a literal ``|`` (even without emoji): literal pipes pair up with the delimiters
      (``a|b 😂`` -> ``a emoji b emoji cara_llorando_de_risa|``), so the two steps are replayed:
      the table writes ``|name|``, then the span regex marks spans with noncharacters and the
      underscores inside spans (and only there) become spaces.
    * Rows where demojize would stop at a dead end (:func:`_emoji_dead_ends`, 1 in 137k real tweets):
      ``emoji.demojize`` itself, one call per such row, then the same span step.
    """
    pats, repl = emoji_replacements("name", wrapper)
    dead = _emoji_dead_ends()
    table = dead + pats  # dead ends are longer than the emoji they start with: matched first
    codes = emoji_codes()
    hit = (s.str.contains(emoji_trigger()) | s.str.contains("|", literal=True)).fill_null(False)
    if not hit.any():
        return s
    rows = hit.arg_true()
    texts = s.gather(rows)
    out = replace_emoji(texts, table, (DEAD_END,) * len(dead) + repl)
    slow = out.str.contains(DEAD_END, literal=True) | texts.str.contains("|", literal=True)
    if slow.any():
        idx = slow.arg_true()
        slow_texts = texts.gather(idx)
        pipe_repl = (DEAD_END,) * len(dead) + tuple(f"|{codes[p]}|" if p in codes else r for p, r in zip(pats, repl))
        marked = replace_emoji(slow_texts, table, pipe_repl)
        dead_rows = marked.str.contains(DEAD_END, literal=True).arg_true()
        if len(dead_rows):
            import emoji

            redo = [emoji.demojize(t, language="es", delimiters=("|", "|")) for t in slow_texts.gather(dead_rows)]
            marked = marked.scatter(dead_rows, pl.Series(redo, dtype=pl.String))
        out = out.scatter(idx, _pipe_spans(marked, wrapper))
    return s.clone().scatter(rows, out)


def _pipe_spans(s: pl.Series, wrapper: str) -> pl.Series:
    """``re.sub(r"\\|([^\\|]+)\\|", lambda m: w + " ".join(m[1].split("_")) + w, text)``, w = `` emoji ``."""
    mark = f" {wrapper} ".replace("  ", " ")
    s = s.str.replace_all(r"\|([^|]+)\|", f"{EMO_START}${{1}}{EMO_END}")
    parts = s.str.extract_all(f"{EMO_START}[^{EMO_END}]*{EMO_END}|[^{EMO_START}]+")
    element = pl.element()
    span = pl.when(element.str.starts_with(EMO_START)).then(element.str.replace_all("_", " ", literal=True))
    s = parts.list.eval(span.otherwise(element)).list.join("")
    return s.str.replace_many([EMO_START, EMO_END], [mark, mark])

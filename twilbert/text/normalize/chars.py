"""Character classes and tables shared by the vectorised rules and their per-row twins.

They *are* the rules' definitions, so both implementations read them from here; only the mechanics
differ. Letter classes are explicit Latin ranges (ASCII, Latin-1, Latin Extended-A/B), not ``\\w``, so
polars' Rust regex and Python's ``re`` agree character for character (docs/normalization.md).
"""

from __future__ import annotations

import functools


def char_class(chars: str) -> str:
    """Body of a ``[...]`` class valid in both Python ``re`` and Rust ``regex``: escape only what needs it
    (Rust reads ``&&``, ``--``, ``~~`` as set operators and rejects ``\\<``; Python accepts these escapes)."""
    return "".join("\\" + c if c in "\\]-[^&~|" else c for c in chars)


# Whitespace exactly as ``str.isspace`` / ``str.split()``; Rust's ``\s`` lacks U+001C..U+001F.
SPACE = "\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
# Invisible format characters (Unicode Cf) that carry nothing in Spanish text: soft hyphen, Arabic
# letter mark, Mongolian vowel separator, zero-width space / non-joiner, LRM/RLM, bidi embeddings,
# overrides and isolates, word joiner and invisible operators, deprecated format controls, an inner BOM,
# interlinear annotation. ZWJ (U+200D) apart: it stays inside emoji ZWJ sequences. The tag characters
# (U+E0020-U+E007F) are not here: subdivision flags (England) are built from them.
INVISIBLE = "\xad\u061c\u180e\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
ZWJ = "\u200d"
UPPER = "A-ZÀ-ÖØ-Þ"
LOWER = "a-zß-öø-ÿ"
LETTER = "A-Za-zÀ-ÖØ-öø-ɏ"  # ASCII, Latin-1, Latin Extended-A and -B (U+0100-U+024F)
WORD = LETTER + "0-9_"
# Noncharacters (permanently reserved for internal use): safe in-band markers for the hashtag rule
# and the pysentimiento emoji spans. A text that already holds them may come out differently.
TAG_START = "\ufdd0"
ZWJ_KEEP = "\ufdd1"  # a ZWJ inside an emoji sequence, while the stray ones are removed
EMO_START, EMO_END, DEAD_END = "\ufdd2", "\ufdd3", "\ufdd4"
LAUGHTER: tuple[tuple[str, str], ...] = (("aAáÁ", "jaja"), ("eEéÉ", "jeje"), ("iIíÍ", "jiji"), ("oOóÓ", "jojo"))


def expand_ranges(cls: str) -> str:
    """``"a-c"`` -> ``"abc"`` for the simple class bodies above."""
    out, i = [], 0
    while i < len(cls):
        if i + 2 < len(cls) and cls[i + 1] == "-":
            out.extend(chr(c) for c in range(ord(cls[i]), ord(cls[i + 2]) + 1))
            i += 3
        else:
            out.append(cls[i])
            i += 1
    return "".join(out)


def ranges_body(codepoints: list[int]) -> str:
    """Body of a ``[...]`` class for these code points, as ranges."""
    cps, parts, i = sorted(set(codepoints) - set(range(0xD800, 0xE000))), [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        lo, hi = chr(cps[i]), chr(cps[j])
        parts.append(char_class(lo) if i == j else f"{char_class(lo)}-{char_class(hi)}")
        i = j + 1
    return "".join(parts)


def ranges_class(codepoints: list[int]) -> str:
    return "[" + ranges_body(codepoints) + "]"


@functools.cache
def python_word() -> str:
    """Python's ``\\w`` (``str.isalnum()`` or ``_``) as the body of an explicit class (734 ranges).

    The original TWilBERT and pysentimiento use ``\\w``; polars' Rust regex has a ``\\w`` too, but by
    Unicode's definition (it adds combining marks, ZWJ, ...), so their rules use this class instead."""
    return ranges_body([cp for cp in range(0x110000) if chr(cp).isalnum() or cp == 0x5F])


# pysentimiento 0.7.x preprocessing.replacements, transcribed (None -> ""): applied per character, once.
# Note "❤" (U+2764) is deleted while "♥"/"♡" become "❤️" (U+2764 U+FE0F); tests compare with the original.
PYSENTIMIENTO_CHAR_TABLE: dict[str, str] = {
    "~": "", "£": "", "¥": "", "¨": '"', "©": "", "«": '"', "°": "", "´": "", "¶": "", "·": "", "º": "",
    "»": '"', "×": "", "ا": "", "–": "", "—": "", "‘": "", "’": "", "“": '"', "”": '"', "•": "", "…": "",
    "‼": "!", "€": "$", "™": "", "●": "", "☠": "", "☹": "", "☺": "", "☻": "😃", "♀": "", "♂": "",
    "♡": "❤️", "♥": "❤️", "⚰": "", "⛱": "", "⛹": "", "✈": "", "✓": "", "❤": "", "ー": "", "🕯": "",
    "🛰": "",
}
# The top-level domains of pysentimiento's url_regex, in its order (alternation order matters: com|co).
PYSENTIMIENTO_TLDS: tuple[str, ...] = (
    "com", "co", "org", "edu", "gov", "uk", "net", "ca", "de", "jp", "fr", "au", "us", "ru", "ch", "it",
    "nl", "se", "no", "es", "mil", "iq", "io", "ac", "ly", "sm",
)


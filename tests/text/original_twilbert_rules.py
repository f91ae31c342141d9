"""The original TWilBERT's tweet preprocessing, transcribed one function per place it ran.

A faithful per-row transcription of jogonba2/TWilBert (HEAD 1653350f): the same regexes, the same
calls, in the same order. Test fixture only: the ``twilbert`` preset of ``twilbert.text.normalize`` is checked
against :func:`utils_preprocessing` with ``rt_bug=False``.

* :func:`preprocess_corpora` -- ``scripts/preprocess_corpora.py``, the offline cleaning of the
  pre-training pairs, per text (steps 1-5; the pair filters of step 6 are not text rewriting).
* :func:`utils_preprocessing` -- ``Utils.preprocessing()``, the online cleaning of every fine-tuning
  and evaluation input. With ``rt_bug=True`` it is the original line for line, including its bug
  (see docs/deviations.md): ``r.replace("RT", " ")`` removes every upper-case ``RT`` substring
  (``PARTE`` -> ``PA E``). With ``rt_bug=False`` that one line removes ``RT`` only as a
  whitespace-delimited token, the single deviation the ``twilbert`` preset makes.
"""

from __future__ import annotations

import html
import re

# Both scripts compile these two patterns (str patterns: \w and \S are Unicode-aware).
URL_RE = re.compile(r"https?://\S+")
USER_RE = re.compile(r"(@+\w+)")
# The fix: "RT" with whitespace (or the text's ends) on both sides.
RT_TOKEN_RE = re.compile(r"(?<!\S)RT(?!\S)")


def preprocess_corpora(text: str) -> str:
    """scripts/preprocess_corpora.py, for one side of a pair (steps 1-5)."""
    text = URL_RE.sub("url", text)
    text = USER_RE.sub("user", text)
    text = html.unescape(text)
    text = text.replace("…", " ")
    return " ".join(text.split())


def utils_preprocessing(x: str, *, rt_bug: bool = True) -> str:
    """Utils.preprocessing(x), line for line."""
    r = re.sub(r"https?://\S+", "url", x)
    r = re.sub(r"(@+\w+)", "user", r)
    r = r.replace("…", " ")
    if rt_bug:
        r = r.replace("RT", " ").strip()  # [BUG] plain substring, case-sensitive
    else:
        r = RT_TOKEN_RE.sub(" ", r).strip()
    r = html.unescape(r).strip()
    r = " ".join(r.split())
    return r

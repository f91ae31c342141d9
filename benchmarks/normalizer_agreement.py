"""Raw tweets through an exported tokenizer vs ``twilbert predict``'s path, on the real tweets of ../shared/data.

``twilbert export-hf`` puts the model's normalisation rules into ``tokenizer.json`` as ``tokenizers``
normalizers (``twilbert.hf.normalizers``), so ``pipeline("text-classification")`` takes raw tweets.
This measures, per rule set (``default`` and ``pysentimiento`` presets), the share of real tweets on
which that tokenizer gives the token ids ``twilbert predict`` gives (polars rules, then our tokenizer),
and the share whose normalised text is the same, plus the normaliser's cost per tweet. Equal ids give
equal labels, so the id agreement bounds the label agreement from below.

The vocabulary is a SentencePiece model trained on the normalised sample (as the vocab stage would),
exported with ``build_hf_tokenizer`` like ``export-hf`` does. Tweets: every ``--step``-th text of every
``*.tsv`` (one in 5 by default: the emoji step costs ~5k literal replacements per tweet).

Usage: ``python benchmarks/normalizer_agreement.py [--step 5] [--presets default pysentimiento]``
Prints one JSON line per rule set.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_tweets(step: int) -> list[str]:
    import polars as pl

    texts: list[str] = []
    for f in sorted(SHARED.glob("*/*.tsv")):
        df = pl.read_csv(f, separator="\t", quote_char=None, infer_schema=False)
        for col in ("TEXT", "REPLY_TEXT", "TEXT_B"):
            if col in df.columns:
                texts += [t for t in df[col].to_list() if t]
    return texts[::step]


def measure(texts: list[str], preset: str, workdir: Path) -> dict:
    from twilbert.hf.normalizers import inexact_rules, tweet_normalizer
    from twilbert.hf.tokenizer import build_hf_tokenizer
    from twilbert.text.normalize import NormalizeRules, normalize_texts, placeholder_tokens
    from twilbert.text.tokenizer import Tokenizer
    from twilbert.text.vocab import VocabConfig, train_vocab

    rules = NormalizeRules(preset=preset).effective()
    ours = normalize_texts(texts, rules)
    normalizer = tweet_normalizer(rules)
    t0 = time.perf_counter()
    theirs = [normalizer.normalize_str(t) for t in texts]
    seconds = time.perf_counter() - t0
    spm = train_vocab([t for t in ours if t], VocabConfig(vocab_size=4000, input_sentence_size=0, num_threads=2), workdir / preset / "spm",
                      placeholder_tokens(rules))
    tok = Tokenizer.from_file(spm)
    exported = build_hf_tokenizer(spm)
    from tokenizers import normalizers

    exported.normalizer = normalizers.Sequence([normalizer, exported.normalizer])  # as save_hf_tokenizer does
    want = tok.encode_batch(ours)
    got = [e.ids for e in exported.encode_batch(texts, add_special_tokens=False)]
    same_ids = sum(a == b for a, b in zip(want, got))
    same_text = sum(a == b for a, b in zip(ours, theirs))
    examples = [(t, a, b) for t, a, b in zip(texts, ours, theirs) if a != b][:5]
    return {
        "preset": preset,
        "tweets": len(texts),
        "token_id_agreement": round(same_ids / len(texts), 5),
        "text_agreement": round(same_text / len(texts), 5),
        "differing_ids": len(texts) - same_ids,
        "normalizer_ms_per_tweet": round(1000 * seconds / len(texts), 3),
        "inexact_rules": inexact_rules(rules),
        "examples": [{"raw": t, "predict": a, "tokenizer": b} for t, a, b in examples],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step", type=int, default=5, help="every STEP-th real text (1 = all ~180k)")
    ap.add_argument("--presets", nargs="+", default=["default", "pysentimiento"])
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED}: absent")
    texts = real_tweets(args.step)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            print(json.dumps(measure(texts, preset, Path(tmp)), ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()

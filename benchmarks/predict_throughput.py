"""Prediction throughput: ``twilbert predict`` vs a transformers ``pipeline("text-classification")``.

Both systems run the *same fine-tuned model* on the *same real tweets* of ``../shared/data``: a
classifier (``--preset``) is fine-tuned for a few steps on real labelled tweets, exported with
:func:`twilbert.hf.classifier.export_sequence_classifier` to ``BertForSequenceClassification``, then

* **ours**: :meth:`twilbert.inference.Predictor.predict` on the raw tweets, normalisation and
  tokenisation inside the timed region (fp32 eager is the headline; ``--bf16`` and ``--compiled`` add
  those paths);
* **peer**: ``pipeline("text-classification", model=export, top_k=None)`` on the already-normalised
  tweets at each of ``--hf-batch-sizes``; the headline ratio is against the fastest.

``--repeats`` interleaved rounds after one warm-up round each; each figure is the best round. The full
method: benchmarks/RESULTS.md#predict-throughput-method.

Usage: ``python benchmarks/predict_throughput.py [--tweets 2000] [--preset base] [--threads 2]``
Prints a table, then a final JSON line with ``tweets_per_s``, ``hf_tweets_per_s`` (best peer setting)
and ``ratio_vs_hf`` (and ``ratio_vs_hf_by_round``, the same ratio within each round) for what
``twilbert predict`` runs by default, then the bf16 figures (``tweets_per_s_bf16``,
``ratio_vs_hf_bf16``, ``speedup_bf16_vs_fp32``, ``label_agreement_bf16_vs_fp32``) and, with
``--compiled``, the compiled ones. Not a test. Needs ``transformers`` (the ``hf`` extra).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

SIZES = {
    "small": dict(hidden_size=256, embedding_size=256, n_encoders=4, n_heads=4),
    "base": dict(hidden_size=768, embedding_size=768, n_encoders=6, n_heads=6),  # TWilBERT-Base
}
TASK = SHARED / "tass2020_sentiment_es"


def read_tsv(path: Path):
    import polars as pl

    return pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False, has_header=True)


def gemm_rate(tokens: int, hidden: int, repeats: int = 20) -> float:
    """GFLOPS of one fp32 ``linear`` (tokens, hidden) -> (tokens, 4 * hidden): the machine's own ceiling
    for the FFN matmuls that dominate the encoder."""
    x, w = torch.randn(tokens, hidden), torch.randn(4 * hidden, hidden)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return 2 * tokens * hidden * 4 * hidden / best / 1e9


def build_model(args) -> tuple[Path, Path]:
    """A fine-tuned model directory and its transformers export, cached in ``--workdir``."""
    from twilbert.finetune.config import FinetuningConfig, TaskConfig
    from twilbert.finetune.train import finetune_task
    from twilbert.hf.classifier import export_sequence_classifier
    from twilbert.model.config import ModelConfig
    from twilbert.model.twilbert import TWilBERT
    from twilbert.text.normalize import NormalizeRules, normalize_texts, placeholder_tokens
    from twilbert.text.tokenizer import Tokenizer
    from twilbert.text.vocab import VocabConfig, train_vocab
    from twilbert.train.config import ImplConfig

    work = args.workdir / args.preset
    model_dir, hf_dir = work / "finetuned", work / "hf"
    if (model_dir / "config.json").is_file() and (hf_dir / "config.json").is_file():
        return model_dir, hf_dir
    work.mkdir(parents=True, exist_ok=True)
    rules = NormalizeRules()
    spm = args.workdir / "spm.model"
    if not spm.is_file():
        texts = []
        for f in sorted(SHARED.glob("*/*.tsv")):
            df = read_tsv(f)
            texts += [t for t in df["TEXT"].to_list() if t] if "TEXT" in df.columns else []
        texts = [t for t in normalize_texts(texts, rules.effective()) if t]
        train_vocab(texts, VocabConfig(vocab_size=args.vocab_size, input_sentence_size=0), spm.with_suffix(""),
                    placeholder_tokens(rules.effective()))
    # A small real task: 512 training tweets, 128 dev/test, so the model directory is a real one.
    small = work / "task"
    small.mkdir(exist_ok=True)
    for split, src, n in (("train", "train", 512), ("dev", "dev", 128), ("test", "test", 128)):
        read_tsv(TASK / f"{src}.tsv").head(n).write_csv(small / f"{split}.tsv", separator="\t", quote_style="never")
    task = TaskConfig(train_file=str(small / "train.tsv"), dev_file=str(small / "dev.tsv"), test_file=str(small / "test.tsv"),
                      categories={"N": 0, "NEU": 1, "P": 2})
    vocab = Tokenizer.from_file(spm).vocab_size
    mc = ModelConfig(**SIZES[args.preset]).resolved(vocab_size=vocab, max_len=args.max_len)
    torch.manual_seed(0)
    finetune_task(
        "bench", task, FinetuningConfig(epochs=1, batch_size=32, max_len=args.max_len, collapse_mode="cls", lr=1e-4),
        tokenizer_path=spm, rules=rules, model_out=model_dir, report_out=work / "report",
        encoder_factory=lambda: TWilBERT(mc), impl=ImplConfig(device="cpu"), progress=False,
    )
    export_sequence_classifier(model_dir, hf_dir, normalize_tweets=False)  # the peer gets normalised tweets
    return model_dir, hf_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tweets", type=int, default=2000, help="real tweets to classify per round")
    ap.add_argument("--preset", choices=list(SIZES), default="base")
    ap.add_argument("--batch-size", type=int, default=64, help="ours")
    ap.add_argument("--hf-batch-sizes", type=int, nargs="+", default=[1, 8, 64],
                    help="pipeline batch sizes measured (1 = the pipeline's default); the fastest is the headline peer")
    ap.add_argument("--max-len", type=int, default=64, help="tokens per text (both systems truncate here)")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/twilbert-bench-predict"))
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure --precision bf16 against the pipeline under the same autocast")
    ap.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=False,
                    help="also measure --compile (a 30-60 s compilation in the warm-up round)")
    args = ap.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"needs the real tweets in {SHARED}")
    try:
        import transformers
    except ImportError:
        raise SystemExit("needs transformers: pip install -c constraints.txt -e '.[hf]'") from None
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    from twilbert.inference import load
    from twilbert.text.normalize import normalize_texts

    model_dir, hf_dir = build_model(args)
    raw = [t for t in read_tsv(TASK / "test.tsv")["TEXT"].to_list() if t][: args.tweets]
    ours = load(model_dir, device="cpu")
    half = load(model_dir, device="cpu", precision="bf16")
    normalised = normalize_texts(raw, ours.rules)
    hf_sizes = sorted(set(args.hf_batch_sizes))

    def pipe(bs: int | None):
        kw = {} if bs is None else {"batch_size": bs}  # None: the pipeline's default (one text at a time)
        return transformers.pipeline("text-classification", model=str(hf_dir), tokenizer=str(hf_dir), device="cpu",
                                     top_k=None, truncation=True, max_length=args.max_len + 2, **kw)

    def in_bf16(fn):  # the peer gets the same autocast as ours (thread-local, so it reaches the pipeline's forward)
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn()
        return run

    systems = {"ours": lambda: ours.predict(raw, batch_size=args.batch_size)}
    peers = {f"hf_bs{bs}": (lambda p: (lambda: p(normalised)))(pipe(bs)) for bs in hf_sizes}
    systems.update(peers)  # the pipeline runs its forward under no_grad
    bf16_peers = []
    if args.bf16:
        systems["ours_bf16"] = lambda: half.predict(raw, batch_size=args.batch_size)
        for name, run in peers.items():
            bf16_peers.append(f"{name}_bf16")
            systems[f"{name}_bf16"] = in_bf16(run)
    if args.compiled:
        fast = load(model_dir, device="cpu", compile=True)
        systems["ours_compiled"] = lambda: fast.predict(raw, batch_size=args.batch_size)
    times: dict[str, list[float]] = {k: [] for k in systems}
    out = {}
    warmup_s = {}
    for name, fn in systems.items():  # warm-up (for ours_compiled: the one-off compilation)
        t0 = time.perf_counter()
        out[name] = fn()
        warmup_s[name] = time.perf_counter() - t0
    for _ in range(args.repeats):  # interleaved rounds: load from elsewhere falls on every system alike
        for name, fn in systems.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    n = len(raw)
    rate = {k: n / min(v) for k, v in times.items()}
    best_hf = max(peers, key=lambda k: rate[k])  # the strongest peer setting decides the headline ratio
    labels = list(out["ours"][0]["probabilities"])

    def probs(name: str) -> np.ndarray:  # (N, C) in `labels` order, for ours and the pipeline alike
        if name.startswith("ours"):
            return np.array([[r["probabilities"][k] for k in labels] for r in out[name]])
        return np.array([[{d["label"]: d["score"] for d in r}[k] for k in labels] for r in out[name]])

    # How close the fp32 path is to this machine's ceiling: the matmul FLOPs it does (counted by torch's
    # FlopCounterMode on one pass) per second of its best round, next to one GEMM of the FFN's shape
    # (tokens of an average batch x 768 -> 3072) timed here in the same process.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        ours.predict(raw, batch_size=args.batch_size)
    ours_gflops = counter.get_total_flops() / min(times["ours"]) / 1e9
    lengths = ours.encode(raw).lengths
    gemm_gflops = gemm_rate(int(args.batch_size * np.mean(lengths)), ours.hidden_size)

    p_mine, p_theirs = probs("ours"), probs(best_hf)
    agree = float(np.mean(p_mine.argmax(1) == p_theirs.argmax(1)))
    # The headline is what `twilbert predict` runs by default: fp32, eager (bf16 and compile are opt-in).
    result = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "preset": args.preset,
        "tweets": n,
        "batch_size": args.batch_size,
        "mean_tokens": round(float(np.mean(lengths)), 1),
        "tweets_per_s": round(rate["ours"], 1),
        "hf_tweets_per_s": round(rate[best_hf], 1),
        "hf_best_setting": best_hf,
        "hf_tweets_per_s_by_batch_size": {k: round(rate[k], 1) for k in peers},
        "ratio_vs_hf": round(rate["ours"] / rate[best_hf], 2),
        # The same ratio within each round (every system runs once per round, one after another): how far
        # the best-of headline moves with the load of this shared CPU.
        "ratio_vs_hf_by_round": [round(h / o, 2) for o, h in zip(times["ours"], times[best_hf])],
        "ours_matmul_gflops": round(ours_gflops, 1),
        "gemm_gflops_fp32": round(gemm_gflops, 1),
        "label_agreement": round(agree, 4),
        "max_abs_prob_diff": float(np.abs(p_mine - p_theirs).max()),
    }
    if args.bf16:
        best_hf16 = max(bf16_peers, key=lambda k: rate[k])
        p_half = probs("ours_bf16")
        result.update({
            "tweets_per_s_bf16": round(rate["ours_bf16"], 1),
            "hf_tweets_per_s_bf16": round(rate[best_hf16], 1),
            "hf_best_setting_bf16": best_hf16,
            "ratio_vs_hf_bf16": round(rate["ours_bf16"] / rate[best_hf16], 2),
            "ratio_bf16_vs_hf_fp32": round(rate["ours_bf16"] / rate[best_hf], 2),
            "speedup_bf16_vs_fp32": round(rate["ours_bf16"] / rate["ours"], 2),
            "label_agreement_bf16_vs_fp32": round(float(np.mean(p_half.argmax(1) == p_mine.argmax(1))), 4),
            "max_abs_prob_diff_bf16_vs_fp32": float(np.abs(p_half - p_mine).max()),
        })
    if args.compiled:
        result.update({
            "tweets_per_s_compiled": round(rate["ours_compiled"], 1),
            "ratio_vs_hf_compiled": round(rate["ours_compiled"] / rate[best_hf], 2),
            "compile_warmup_s": round(warmup_s["ours_compiled"], 1),
            "max_abs_prob_diff_compiled": float(np.abs(p_mine - probs("ours_compiled")).max()),
        })
    result.update({
        "rounds_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    })
    print(f"{'system':<40}{'tweets/s':>10}", file=sys.stderr)
    for k in systems:
        print(f"{k:<40}{rate[k]:>10.1f}", file=sys.stderr)
    print(f"ratio vs the best HF setting ({best_hf}): {result['ratio_vs_hf']:.2f}x for twilbert predict (fp32, eager); "
          f"same labels on {agree:.2%}", file=sys.stderr)
    print(f"fp32 path: {ours_gflops:.0f} GFLOPS of matmuls, against {gemm_gflops:.0f} GFLOPS for one FFN-shaped GEMM "
          f"here ({ours_gflops / gemm_gflops:.0%})", file=sys.stderr)
    if args.bf16:
        print(f"bf16 (both systems under autocast): {result['ratio_vs_hf_bf16']:.2f}x vs {best_hf16}; "
              f"{result['speedup_bf16_vs_fp32']:.2f}x our fp32; labels as fp32 on "
              f"{result['label_agreement_bf16_vs_fp32']:.2%}", file=sys.stderr)
    if args.compiled:
        print(f"compiled: {result['ratio_vs_hf_compiled']:.2f}x (compilation {result['compile_warmup_s']} s once)", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Prediction throughput: ``twilbert predict`` vs transformers' ``pipeline`` and ONNX Runtime (fp32, int8).

Every system runs the *same fine-tuned model* on the *same raw real tweets* of ``../shared/data``:
``--model DIR`` (a fine-tuned model directory, loaded with ``twilbert.load``; ``--task NAME`` names its
task folder, whose real test split is labelled), or by default a classifier of ``--preset`` fine-tuned
here on TASS 2020. It is exported with :func:`twilbert.hf.classifier.export_sequence_classifier` to
``BertForSequenceClassification``, then

* **ours**: :meth:`twilbert.inference.Predictor.predict` on the raw tweets (fp32 eager is the
  headline; ``--bf16``, ``--int8`` and ``--compiled`` add those paths);
* **peer**: ``pipeline("text-classification", model=export, top_k=None)`` at each of
  ``--hf-batch-sizes``; the headline ratio is against the fastest;
* **ONNX Runtime** (``--ort``, the ``onnx`` extra), as a user deploying on it would run the export:
  ``torch.onnx.export`` of the transformers model, ``ORT_ENABLE_ALL``, fp32 and ``quantize_dynamic``
  (QInt8), the export's fast tokenizer, length-sorted batches of ``--batch-size``; one session with
  ``--threads`` intra-op threads, and (``--ort-parallel``) one intra-op thread with ``--threads``
  batches at once, which is how ours runs on the CPU (``Predictor.workers``).

Same work in the timed region: a deploying user receives raw tweets, so every system gets the raw
tweets and normalises them there, the peers with the model's own rules through the same function
ours uses (:func:`twilbert.finetune.inputs.normalize_column`), before their own tokenizer.

Quality: every system also labels the task's whole real test split once (the warm-up round): macro-F1
against the gold labels and label agreement with our fp32 (what quantisation costs, not only speed).
``--repeats`` timed rounds then run on the first ``--tweets`` of it.

``--repeats`` interleaved rounds after one warm-up round each; each figure is the best round. The full
method: benchmarks/RESULTS.md#predict-throughput-method.

Usage: ``python benchmarks/predict_throughput.py [--tweets 2000] [--preset base] [--threads 2] [--device cuda]``
Prints a table (tweets/s, macro-F1, agreement), then a final JSON line with ``ort_fp32_tweets_per_s``,
``ort_int8_tweets_per_s``, ``best_ours_tweets_per_s`` / ``best_ours_precision``, ``ratio_vs_ort_int8``,
``macro_f1_best_ours_minus_ort_int8`` with its paired-bootstrap ``_ci95``,
``macro_f1`` and ``label_agreement_vs_fp32`` per system, ``tweets_per_s``, ``hf_tweets_per_s`` (best peer setting)
and ``ratio_vs_hf`` (and ``ratio_vs_hf_by_round``, the same ratio within each round) for what
``twilbert predict`` runs by default, then the bf16 figures (``tweets_per_s_bf16``,
``ratio_vs_hf_bf16``, ``speedup_bf16_vs_fp32``, ``label_agreement_bf16_vs_fp32``) and, with
``--compiled``, the compiled ones. Not a test. Needs ``transformers`` (the ``hf`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
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
TASK = "tass2020_sentiment_es"  # under --data-dir: the benchmark's own classifier is fine-tuned on it


def read_tsv(path: Path):
    import polars as pl

    return pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False, has_header=True)


def gemm_rate(tokens: int, hidden: int, device: str = "cpu", repeats: int = 20) -> float:
    """GFLOPS of one fp32 ``linear`` (tokens, hidden) -> (tokens, 4 * hidden): the machine's own ceiling
    for the FFN matmuls that dominate the encoder."""
    x, w = torch.randn(tokens, hidden, device=device), torch.randn(4 * hidden, hidden, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        sync()
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

    work = args.workdir / f"{args.preset}-{args.train_tweets}x{args.epochs}"
    model_dir, hf_dir = work / "finetuned", work / "hf"
    if (model_dir / "config.json").is_file() and (hf_dir / "config.json").is_file():
        return model_dir, hf_dir
    work.mkdir(parents=True, exist_ok=True)
    rules = NormalizeRules()
    spm = args.workdir / "spm.model"
    if not spm.is_file():
        texts = []
        for f in sorted(args.data_dir.glob("*/*.tsv")):
            df = read_tsv(f)
            texts += [t for t in df["TEXT"].to_list() if t] if "TEXT" in df.columns else []
        texts = [t for t in normalize_texts(texts, rules.effective()) if t]
        train_vocab(texts, VocabConfig(vocab_size=args.vocab_size, input_sentence_size=0), spm.with_suffix(""),
                    placeholder_tokens(rules.effective()))
    # A small real task: --train-tweets training tweets, 128 dev/test, so the model directory is a real one.
    small = work / "task"
    small.mkdir(exist_ok=True)
    for split, src, n in (("train", "train", args.train_tweets), ("dev", "dev", 128), ("test", "test", 128)):
        read_tsv(args.data_dir / TASK / f"{src}.tsv").head(n).write_csv(small / f"{split}.tsv", separator="\t", quote_style="never")
    task = TaskConfig(train_file=str(small / "train.tsv"), dev_file=str(small / "dev.tsv"), test_file=str(small / "test.tsv"),
                      categories={"N": 0, "NEU": 1, "P": 2})
    vocab = Tokenizer.from_file(spm).vocab_size
    mc = ModelConfig(**SIZES[args.preset]).resolved(vocab_size=vocab, max_len=args.max_len)
    torch.manual_seed(0)
    finetune_task(
        "bench", task, FinetuningConfig(epochs=args.epochs, batch_size=32, max_len=args.max_len, collapse_mode="cls", lr=1e-4),
        tokenizer_path=spm, rules=rules, model_out=model_dir, report_out=work / "report",
        encoder_factory=lambda: TWilBERT(mc), impl=ImplConfig(device=args.device), progress=False,
    )
    export_sequence_classifier(model_dir, hf_dir, normalize_tweets=False)  # the peer gets normalised tweets
    return model_dir, hf_dir


def export_model(args, model_dir: Path) -> Path:
    """The transformers export of a given ``--model`` directory, cached in ``--workdir`` by its weights' hash."""
    from twilbert.hf.classifier import export_sequence_classifier
    from twilbert.train.checkpoint import MODEL_FILE
    from twilbert.utils import sha256_file

    hf_dir = args.workdir / f"model-{sha256_file(model_dir / MODEL_FILE)[:12]}" / "hf"
    if not (hf_dir / "config.json").is_file():
        export_sequence_classifier(model_dir, hf_dir, normalize_tweets=False)  # the peers normalise as ours does
    return hf_dir


def onnx_peers(args, hf_dir: Path) -> dict[str, Path]:
    """The transformers export as ONNX (fp32) and its dynamic int8 quantisation, cached beside it."""
    import transformers

    from twilbert.onnx_export import quantize_int8, to_onnx

    fp32, int8 = hf_dir.parent / "ort" / "model.onnx", hf_dir.parent / "ort" / "model.int8.onnx"
    if not fp32.is_file():
        fp32.parent.mkdir(exist_ok=True)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(str(hf_dir)).eval()

        class Logits(torch.nn.Module):  # what a user exports: ids, types, mask -> logits, softmax
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, token_type_ids, attention_mask):
                logits = self.m(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits
                return logits, logits.softmax(-1)

        ids = torch.randint(5, 100, (2, 12))
        to_onnx(Logits(model), (ids, torch.zeros_like(ids), torch.ones_like(ids)), fp32)
    if not int8.is_file():
        quantize_int8(fp32, int8)
    return {"ort_fp32": fp32, "ort_int8": int8}


def ort_runner(path: Path, tokenizer, threads: int, batch_size: int, max_len: int, *, parallel: bool = False):
    """texts -> probabilities (N, C): the fast tokenizer, length-sorted padded batches, one ORT session
    (``threads`` intra-op threads; ``parallel``: one intra-op thread, ``threads`` batches at once, as ours)."""
    from concurrent.futures import ThreadPoolExecutor

    from twilbert.onnx_export import run_session, session

    sess = session(path, 1 if parallel else threads)
    pool = ThreadPoolExecutor(threads) if parallel else None  # sess.run releases the GIL; a session is thread-safe

    def run(texts: list[str]) -> np.ndarray:
        enc = tokenizer(texts, truncation=True, max_length=max_len + 2)
        ids, types = enc["input_ids"], enc["token_type_ids"]
        lengths = np.array([len(x) for x in ids])
        order = np.argsort(lengths, kind="stable")
        def one(idx: np.ndarray) -> np.ndarray:
            T = int(lengths[idx].max())
            a = np.zeros((len(idx), T), dtype=np.int64)
            t, m = np.zeros_like(a), np.zeros_like(a)
            for r, j in enumerate(idx):
                n = lengths[j]
                a[r, :n], t[r, :n], m[r, :n] = ids[j], types[j], 1
            return run_session(sess, a, t, m)  # (B, C)

        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        probs = list(pool.map(one, chunks)) if pool else [one(idx) for idx in chunks]
        out = np.zeros((len(texts), probs[0].shape[1]), dtype=np.float32)
        for idx, p in zip(chunks, probs):
            out[idx] = p
        return out

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tweets", type=int, default=2000, help="real tweets to classify per timed round")
    ap.add_argument("--model", type=Path, default=None,
                    help="a fine-tuned model directory to measure (default: fine-tune one of --preset here)")
    ap.add_argument("--task", default=TASK, help="task folder in --data-dir whose test split --model is scored on")
    ap.add_argument("--preset", choices=list(SIZES), default="base")
    ap.add_argument("--train-tweets", type=int, default=1024, help="real training tweets the benchmark's classifier is fine-tuned on")
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs of the benchmark's classifier")
    ap.add_argument("--quality-tweets", type=int, default=0, help="test tweets labelled for macro-F1 / agreement (0: the whole split)")
    ap.add_argument("--batch-size", type=int, default=64, help="ours and ONNX Runtime")
    ap.add_argument("--hf-batch-sizes", type=int, nargs="+", default=[1, 8, 64],
                    help="pipeline batch sizes measured (1 = the pipeline's default); the fastest is the headline peer")
    ap.add_argument("--max-len", type=int, default=64, help="tokens per text (every system truncates here)")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="ours and the pipeline (and the fine-tuning)")
    ap.add_argument("--data-dir", type=Path, default=SHARED, help=f"the tweets, laid out as ../shared/data (needs {TASK}/)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/twilbert-bench-predict"))
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure --precision bf16")
    ap.add_argument("--hf-bf16", action=argparse.BooleanOptionalAction, default=True, help="with --bf16: the pipeline under the same autocast too")
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure --precision int8 (CPU only; default: on with --device cpu)")
    ap.add_argument("--ort", action=argparse.BooleanOptionalAction, default=None,
                    help="also measure ONNX Runtime fp32 and int8 (needs the onnx extra; CPU only; default: on with --device cpu)")
    ap.add_argument("--ort-parallel", action=argparse.BooleanOptionalAction, default=True,
                    help="with --ort: also ONNX Runtime with one intra-op thread and --threads batches at once (ort_*_parallel)")
    ap.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=False,
                    help="also measure --compile (a 30-60 s compilation in the warm-up round)")
    args = ap.parse_args()
    if not (args.data_dir / TASK).is_dir():
        raise SystemExit(f"needs the real tweets in {args.data_dir} (no {TASK}/ there; see --data-dir)")
    on_cpu = args.device == "cpu"
    if not on_cpu and (args.int8 or args.ort):
        # dynamic int8 linears are CPU kernels, and twilbert.onnx_export.session runs the CPU provider
        raise SystemExit("--int8 and --ort measure CPU paths: leave them off with --device cuda")
    if not on_cpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    args.int8 = on_cpu if args.int8 is None else args.int8
    args.ort = on_cpu if args.ort is None else args.ort
    try:
        import transformers
    except ImportError:
        raise SystemExit("needs transformers: pip install -c constraints.txt -e '.[hf]'") from None
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)

    from sklearn.metrics import f1_score

    from twilbert.finetune.inputs import normalize_column
    from twilbert.inference import load

    task_dir = args.data_dir / args.task
    if not (task_dir / "test.tsv").is_file():
        raise SystemExit(f"--task {args.task}: no {task_dir / 'test.tsv'}")
    if args.model is None and args.task != TASK:
        raise SystemExit(f"--task {args.task} needs --model: the benchmark's own classifier is fine-tuned on {TASK}")
    model_dir, hf_dir = (args.model, export_model(args, args.model)) if args.model else build_model(args)
    test = read_tsv(task_dir / "test.tsv").filter(pl_nonempty("TEXT"))
    test = test.head(args.quality_tweets) if args.quality_tweets else test
    raw_all, gold = test["TEXT"].to_list(), test["CLASS"].to_list()
    n = min(args.tweets, len(raw_all))
    ours = load(model_dir, device=args.device)
    labels = ours.labels
    if not ours.is_classifier or ours.task_type != "single_label":
        raise SystemExit(f"{model_dir}: needs a single-label classifier, got {ours.task_type or 'a pre-trained encoder'}")
    if unknown := sorted(set(gold) - set(labels)):
        raise SystemExit(f"{task_dir}: gold labels {unknown[:5]} are not among {model_dir}'s labels {labels}")
    hf_sizes = sorted(set(args.hf_batch_sizes))

    def rows_probs(rows) -> np.ndarray:  # (N, C) in `labels` order
        return np.array([[r["probabilities"][k] for k in labels] for r in rows])

    def ours_system(pred):
        return lambda raw: rows_probs(pred.predict(raw, batch_size=args.batch_size))

    def normalising(fn):  # a peer as deployed: raw tweets in, the model's normalisation timed with it
        return lambda raw: fn(normalize_column(raw, ours.rules))

    def pipe_system(bs: int | None):
        kw = {} if bs is None else {"batch_size": bs}  # None: the pipeline's default (one text at a time)
        p = transformers.pipeline("text-classification", model=str(hf_dir), tokenizer=str(hf_dir), device=args.device,
                                  top_k=None, truncation=True, max_length=ours.max_len + 2, **kw)
        return normalising(lambda norm: np.array([[{d["label"]: d["score"] for d in r}[k] for k in labels] for r in p(norm)]))

    def in_bf16(fn):  # the peer gets the same autocast as ours (thread-local, so it reaches the pipeline's forward)
        def run(raw):
            with torch.autocast(args.device, dtype=torch.bfloat16):
                return fn(raw)
        return run

    systems = {"ours": ours_system(ours)}
    ours_predictors = {"ours": ours}
    peers = {f"hf_bs{bs}": pipe_system(bs) for bs in hf_sizes}
    systems.update(peers)  # the pipeline runs its forward under no_grad
    bf16_peers = []
    if args.bf16:
        ours_predictors["ours_bf16"] = load(model_dir, device=args.device, precision="bf16")
        systems["ours_bf16"] = ours_system(ours_predictors["ours_bf16"])
        for name, run in peers.items() if args.hf_bf16 else ():
            bf16_peers.append(f"{name}_bf16")
            systems[f"{name}_bf16"] = in_bf16(run)
    if args.int8:
        ours_predictors["ours_int8"] = load(model_dir, device="cpu", precision="int8")
        systems["ours_int8"] = ours_system(ours_predictors["ours_int8"])
    if args.ort:
        tok = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
        for name, path in onnx_peers(args, hf_dir).items():
            systems[name] = normalising(ort_runner(path, tok, args.threads, args.batch_size, ours.max_len))
            if args.ort_parallel:  # the strongest way we know to run it: batches side by side, as ours
                systems[f"{name}_parallel"] = normalising(ort_runner(path, tok, args.threads, args.batch_size, ours.max_len, parallel=True))
    if args.compiled:
        systems["ours_compiled"] = ours_system(load(model_dir, device=args.device, compile=True))
    # Warm-up = quality: every system labels the whole test split once (compilation, if any, happens here).
    full, warmup_s = {}, {}
    for name, fn in systems.items():
        t0 = time.perf_counter()
        full[name] = fn(raw_all)
        warmup_s[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {k: [] for k in systems}
    raw = raw_all[:n]
    for _ in range(args.repeats):  # interleaved rounds: load from elsewhere falls on every system alike
        for name, fn in systems.items():
            t0 = time.perf_counter()
            fn(raw)
            times[name].append(time.perf_counter() - t0)
    rate = {k: n / min(v) for k, v in times.items()}
    labelled = {k: np.array(labels)[p.argmax(1)] for k, p in full.items()}  # system -> (N,) labels
    f1 = {k: float(f1_score(gold, p, labels=labels, average="macro")) for k, p in labelled.items()}
    agree_fp32 = {k: float(np.mean(p == labelled["ours"])) for k, p in labelled.items()}
    best_hf = max(peers, key=lambda k: rate[k])  # the strongest peer setting decides the headline ratio

    # How close the fp32 path is to this machine's ceiling: the matmul FLOPs it does (counted by torch's
    # FlopCounterMode on one pass) per second of its best round, next to one GEMM of the FFN's shape
    # (tokens of an average batch x 768 -> 3072) timed here in the same process.
    from torch.utils.flop_counter import FlopCounterMode

    ours.workers = 1  # the counter is thread-local: count on this thread
    with FlopCounterMode(display=False) as counter:
        ours.predict(raw, batch_size=args.batch_size)
    ours.workers = 0
    ours_gflops = counter.get_total_flops() / min(times["ours"]) / 1e9
    lengths = ours.encode(raw).lengths
    gemm_gflops = gemm_rate(int(args.batch_size * np.mean(lengths)), ours.hidden_size, args.device)

    # Where our time goes, per precision (best of 3 for each phase, same texts as a timed round).
    phases = {}
    for name, pred in ours_predictors.items():
        norm = normalize_column(raw, pred.rules)
        data = pred.encode(raw)
        raw_out = pred.outputs_of(data, batch_size=args.batch_size)
        phases[name] = {k: round(1e3 * best_of(f), 1) for k, f in {
            "normalise": lambda: normalize_column(raw, pred.rules),
            "tokenise": lambda: pred.tokenizer.encode_flat(norm),
            "batches_and_model": lambda: pred.outputs_of(data, batch_size=args.batch_size),
            "format": lambda: pred.format(raw_out),
        }.items()}

    p_mine, p_theirs = full["ours"], full[best_hf]
    # The headline is what `twilbert predict` runs by default: fp32, eager (bf16, int8 and compile are opt-in).
    result = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "preset": args.preset if args.model is None else None,
        "model": str(args.model or model_dir),
        "task": args.task,
        "tweets": n,
        "quality_tweets": len(raw_all),
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
        "label_agreement": round(agree_fp32[best_hf], 4),
        "max_abs_prob_diff": float(np.abs(p_mine - p_theirs).max()),
        "macro_f1": {k: round(v, 4) for k, v in f1.items()},
        "label_agreement_vs_fp32": {k: round(v, 4) for k, v in agree_fp32.items()},
        "max_abs_prob_diff_vs_fp32": {k: float(np.abs(p - p_mine).max()) for k, p in full.items()},
    }
    ours_names = {"fp32": "ours", "bf16": "ours_bf16", "int8": "ours_int8"}
    best_prec = max((p for p, k in ours_names.items() if k in rate), key=lambda p: rate[ours_names[p]])
    best = ours_names[best_prec]
    result.update({"best_ours_tweets_per_s": round(rate[best], 1), "best_ours_precision": best_prec})

    def versus(peer: str) -> dict:  # our best precision against an ONNX Runtime peer, overall and per round
        return {f"{peer}_tweets_per_s": round(rate[peer], 1),
                f"ratio_vs_{peer}": round(rate[best] / rate[peer], 2),
                f"ratio_vs_{peer}_by_round": [round(o / b, 2) for o, b in zip(times[peer], times[best])]}

    if args.ort:
        result.update({"ort_fp32_tweets_per_s": round(rate["ort_fp32"], 1), **versus("ort_int8"),
            "macro_f1_best_ours_minus_ort_int8": round(f1[best] - f1["ort_int8"], 4),
            "macro_f1_best_ours_minus_ort_int8_ci95": [round(x, 4) for x in macro_f1_diff_ci(gold, labelled[best], labelled["ort_int8"], labels)],
            "tweets_labelled_differently_best_ours_vs_ort_int8": int(np.sum(labelled[best] != labelled["ort_int8"])),
        })
        if args.ort_parallel:
            result.update({"ort_fp32_parallel_tweets_per_s": round(rate["ort_fp32_parallel"], 1), **versus("ort_int8_parallel")})
    if args.bf16 and bf16_peers:
        best_hf16 = max(bf16_peers, key=lambda k: rate[k])
        result.update({
            "hf_tweets_per_s_bf16": round(rate[best_hf16], 1),
            "hf_best_setting_bf16": best_hf16,
            "ratio_vs_hf_bf16": round(rate["ours_bf16"] / rate[best_hf16], 2),
        })
    if args.bf16:
        result.update({
            "tweets_per_s_bf16": round(rate["ours_bf16"], 1),
            "ratio_bf16_vs_hf_fp32": round(rate["ours_bf16"] / rate[best_hf], 2),
            "speedup_bf16_vs_fp32": round(rate["ours_bf16"] / rate["ours"], 2),
            "label_agreement_bf16_vs_fp32": round(agree_fp32["ours_bf16"], 4),
            "max_abs_prob_diff_bf16_vs_fp32": float(np.abs(full["ours_bf16"] - p_mine).max()),
        })
    if args.int8:
        result.update({
            "tweets_per_s_int8": round(rate["ours_int8"], 1),
            "speedup_int8_vs_fp32": round(rate["ours_int8"] / rate["ours"], 2),
            "label_agreement_int8_vs_fp32": round(agree_fp32["ours_int8"], 4),
        })
    if args.compiled:
        result.update({
            "tweets_per_s_compiled": round(rate["ours_compiled"], 1),
            "ratio_vs_hf_compiled": round(rate["ours_compiled"] / rate[best_hf], 2),
            "compile_warmup_s": round(warmup_s["ours_compiled"], 1),
            "max_abs_prob_diff_compiled": float(np.abs(p_mine - full["ours_compiled"]).max()),
        })
    result.update({
        "ours_phases_ms": phases,
        "rounds_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "load_avg_1min": round(os.getloadavg()[0], 1),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    })
    if args.ort:
        import onnxruntime

        result["onnxruntime"] = onnxruntime.__version__
    print(f"{'system':<22}{'tweets/s':>10}{'macro-F1':>10}{'agree fp32':>12}   ({len(raw_all)} test tweets for quality, {n} timed)", file=sys.stderr)
    for k in systems:
        print(f"{k:<22}{rate[k]:>10.1f}{f1[k]:>10.4f}{agree_fp32[k]:>12.2%}", file=sys.stderr)
    print(f"ratio vs the best HF setting ({best_hf}): {result['ratio_vs_hf']:.2f}x for twilbert predict (fp32, eager)", file=sys.stderr)
    if args.ort:
        print(f"best of ours ({best_prec}) vs ONNX Runtime int8: {result['ratio_vs_ort_int8']:.2f}x "
              f"(macro-F1 {f1[best]:.4f} vs {f1['ort_int8']:.4f}; difference 95 % CI "
              f"{result['macro_f1_best_ours_minus_ort_int8_ci95']}, "
              f"{result['tweets_labelled_differently_best_ours_vs_ort_int8']} tweets labelled differently)", file=sys.stderr)
    print(f"fp32 path: {ours_gflops:.0f} GFLOPS of matmuls, against {gemm_gflops:.0f} GFLOPS for one FFN-shaped GEMM "
          f"here ({ours_gflops / gemm_gflops:.0%})", file=sys.stderr)
    for k, ph in phases.items():
        print(f"{k} phases (ms for {n} tweets): " + ", ".join(f"{a} {b}" for a, b in ph.items()), file=sys.stderr)
    if args.compiled:
        print(f"compiled: {result['ratio_vs_hf_compiled']:.2f}x (compilation {result['compile_warmup_s']} s once)", file=sys.stderr)
    print(json.dumps(result))


def macro_f1_diff_ci(gold, a, b, labels, *, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % paired-bootstrap interval of macro-F1(a) - macro-F1(b) on the same tweets: whether a gap
    between two systems' labels is more than the few tweets they label differently."""
    gold, a, b = (np.asarray(x) for x in (gold, a, b))
    n = len(gold)
    if not len(a) == len(b) == n:
        raise ValueError(f"macro_f1_diff_ci: {len(a)} and {len(b)} labels for {n} gold ones")
    w = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)  # (R, N)

    def macro(pred) -> np.ndarray:  # (R,) macro-F1 of each resample, as sklearn's (a class absent from both: 0)
        f1 = []
        for c in labels:
            tp = w @ ((pred == c) & (gold == c))
            denom = w @ (pred == c) + w @ (gold == c)
            f1.append(np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0))
        return np.mean(f1, axis=0)

    lo, hi = np.percentile(macro(a) - macro(b), [2.5, 97.5])
    return float(lo), float(hi)


def best_of(fn, repeats: int = 3) -> float:
    """Seconds of the fastest of ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def pl_nonempty(column: str):
    import polars as pl

    return pl.col(column).is_not_null() & (pl.col(column) != "")


if __name__ == "__main__":
    main()

"""Pre-training throughput: TWilBERT vs Hugging Face ``transformers`` on real tweet-length batches.

A training step = forward + loss + backward + optimiser step (AdamW, same settings for all). Every
system trains on the *same examples* with the *same masked positions*; only the batching differs:

* **ours**: TWilBERT (MLM + ROP), length-bucketed batches padded to the batch's longest row (no mask
  at all when a batch has no padding), MLM decoder run only at the targets (sparse prediction).
* **hf max_length**: ``BertForPreTraining`` (or ``AlbertForPreTraining`` with ``--albert``) fed rows
  padded to a fixed ``--hf-max-length`` (128), as ``padding="max_length"`` tokenisation does; random
  batches; MLM labels -100 off target; NSP/SOP label = our ROP label. This is the primary peer.
* **hf longest**: the same, random batches padded to the batch's longest row (HF's
  ``DataCollatorWithPadding`` default; the stronger peer).
* **hf bucketed**: HF on *our* bucketed batches: same shapes as ours, so the ratio isolates the model
  implementation (sparse MLM head, SDPA mask handling) from the batching.

Sizes match: H, L, A (head dim H/A), FFN 4H, vocabulary, position table, dropout 0, post-LN, GELU,
embedding LayerNorm, attention biases, BERT's MLM transform (Linear-GELU-LN) and a decoder tied to
the embeddings. Ours is therefore configured like BERT (``mlm_transform`` and ``tie_mlm_decoder`` on,
``attention_size`` null), not like the original TWilBERT-Base recipe (384-wide attention, no
transform): the comparison is of implementations, not of recipes. HF adds a pooler (one H x H per
sequence), which is negligible.

Throughput counts REAL (non-pad) tokens/s: every system processes the same real tokens, so ratios
are ratios of wall time. On CUDA ``mfu`` uses nanoGPT's formula on unshared FLOPs
(``TWilBERT.estimate_mfu``, positions computed incl. padding) against the H100 bf16 dense peak.

Lengths: the real texts of ``../shared/data`` (all tasks), normalised with the default rules,
tokenised by a SentencePiece model trained on them (cached in ``--workdir``; or ``--spm PATH``), each
segment cut to ``--max-len``; pairs are consecutive texts (tweet, next text) with ROP label 1, or
swapped with label 0.

Timing: after ``--warmup`` steps per system, the systems run interleaved step by step (ours, HF, HF,
HF, ours, ...), so load from other processes on a shared CPU falls on all of them alike; each
system's figure is its real tokens / the sum of its step times. With ``--compile`` raise
``--warmup``: bucketed batches have varying shapes and the first ones recompile. On a CPU shared
with other jobs, ``--threads 1`` gives steadier figures: a 2-thread step stalls at every parallel
region whenever the other core is busy, and that penalises many small ops more than a few big GEMMs.

Usage: ``python benchmarks/pretrain_throughput.py --preset small --device cpu``
Prints a table, then a final JSON line (``tokens_per_s``, ``hf_tokens_per_s``, ``ratio_vs_hf``...).
Not a test. Needs ``transformers`` (the ``hf`` extra).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from twilbert.data.masking import IGNORE_INDEX, mask_tokens, maskable_positions  # noqa: E402
from twilbert.model.config import CLS_ID, PAD_ID, SEP_ID, MaskedLMConfig, ModelConfig  # noqa: E402
from twilbert.model.twilbert import TWilBERT  # noqa: E402
from twilbert.train.objectives import pretraining_loss  # noqa: E402

PRESETS = {
    # name: (H, L, A, vocab, default batch, default steps)
    "small": dict(hidden=256, layers=4, heads=4, vocab=8000, batch=32, steps=16),
    "base": dict(hidden=768, layers=6, heads=6, vocab=30000, batch=128, steps=40),  # TWilBERT-Base sizes
}
H100_BF16_PEAK = 989.4e12


# --------------------------------------------------------------------------------------------------
# real tweet lengths


def real_texts() -> list[str]:
    import polars as pl

    texts: list[str] = []
    for f in sorted(SHARED.glob("*/*.tsv")):
        df = pl.read_csv(f, separator="\t", quote_char=None, infer_schema=False, has_header=True)
        for col in ("TEXT", "TEXT_B", "REPLY_TEXT"):
            if col in df.columns:
                texts.extend(t for t in df[col].to_list() if t)
    return texts


def tokenised_segments(args) -> tuple[list[np.ndarray], int]:
    """Normalised, tokenised, truncated real texts (file order) and the vocabulary size."""
    from twilbert.text.normalize import NormalizeRules, normalize_texts, placeholder_tokens
    from twilbert.text.tokenizer import Tokenizer
    from twilbert.text.vocab import VocabConfig, train_vocab

    rules = NormalizeRules().effective()
    texts = [t for t in normalize_texts(real_texts(), rules) if t]
    if args.spm:
        spm_path = Path(args.spm)
    else:
        spm_path = args.workdir / f"spm{args.vocab_size}.model"
        if not spm_path.exists():
            t0 = time.perf_counter()
            cfg = VocabConfig(vocab_size=args.vocab_size, input_sentence_size=0, num_threads=4)
            train_vocab(texts, cfg, spm_path.with_suffix(""), placeholder_tokens(rules))
            print(f"trained a {args.vocab_size}-piece vocabulary in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    tok = Tokenizer.from_file(spm_path)
    values, offsets = tok.encode_flat(texts)
    segs = [values[offsets[i] : offsets[i + 1]][: args.max_len].astype(np.int64) for i in range(len(texts))]
    return [s for s in segs if s.size], tok.vocab_size


@dataclass
class Example:
    ids: np.ndarray  # (T,) [CLS] a [SEP] b [SEP]
    types: np.ndarray  # (T,)
    rop: int  # 1 in order, 0 swapped
    masked: np.ndarray | None = None  # (T,) after masking
    labels: np.ndarray | None = None  # (T,) -100 off target


def make_examples(segs: list[np.ndarray], n: int, rng: np.random.Generator) -> list[Example]:
    """``n`` pairs of consecutive texts drawn at random; half of them swapped (ROP label 0)."""
    starts = rng.choice(len(segs) - 1, size=n, replace=False)
    out = []
    for s in starts:
        a, b, label = segs[s], segs[s + 1], int(rng.integers(2))
        if label == 0:
            a, b = b, a
        ids = np.concatenate([[CLS_ID], a, [SEP_ID], b, [SEP_ID]])
        types = np.concatenate([np.zeros(a.size + 2, np.int64), np.ones(b.size + 1, np.int64)])
        out.append(Example(ids, types, label))
    return out


# --------------------------------------------------------------------------------------------------
# batches


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T) masked ids
    token_type_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor | None  # (B, T): bool for ours (None = no padding), long for HF
    labels: torch.Tensor  # (B, T) -100 off target
    rop: torch.Tensor  # (B,)
    real_tokens: int
    positions: int  # B * T, what the model computes on


def pad(examples: list[Example], length: int | None, hf: bool, device) -> Batch:
    T = length or max(e.ids.size for e in examples)
    B = len(examples)
    ids = np.full((B, T), PAD_ID, np.int64)
    types = np.zeros((B, T), np.int64)
    labels = np.full((B, T), IGNORE_INDEX, np.int64)
    for r, e in enumerate(examples):  # batch assembly happens before timing
        ids[r, : e.ids.size], types[r, : e.ids.size], labels[r, : e.ids.size] = e.masked, e.types, e.labels
    real = ids != PAD_ID
    if hf:
        mask = torch.from_numpy(real.astype(np.int64)).to(device)
    else:
        mask = None if real.all() else torch.from_numpy(real).to(device)
    t = lambda x: torch.from_numpy(x).to(device)  # noqa: E731
    rop = torch.tensor([e.rop for e in examples], device=device)
    return Batch(t(ids), t(types), mask, t(labels), rop, int(real.sum()), B * T)


def bucketed(examples: list[Example], batch_size: int, rng) -> list[list[Example]]:
    """Sort by length, cut into batches, shuffle the batch order (length-bucketed sampling)."""
    order = sorted(range(len(examples)), key=lambda i: examples[i].ids.size)
    chunks = [[examples[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    return [chunks[i] for i in rng.permutation(len(chunks))]


def random_batches(examples: list[Example], batch_size: int, rng) -> list[list[Example]]:
    perm = rng.permutation(len(examples))
    return [[examples[i] for i in perm[s : s + batch_size]] for s in range(0, len(perm), batch_size)]


def apply_masks(batches: list[list[Example]], mcfg: MaskedLMConfig, vocab: int, seed: int) -> None:
    """Mask each example once (our span masking, in our bucketed batches); every system reuses it."""
    g = torch.Generator().manual_seed(seed)
    for exs in batches:
        T = max(e.ids.size for e in exs)
        ids = torch.full((len(exs), T), PAD_ID, dtype=torch.long)
        for r, e in enumerate(exs):
            ids[r, : e.ids.size] = torch.from_numpy(e.ids)
        masked, labels = mask_tokens(ids, maskable_positions(ids, ids != PAD_ID), mcfg, vocab, generator=g)
        for r, e in enumerate(exs):
            e.masked, e.labels = masked[r, : e.ids.size].numpy(), labels[r, : e.ids.size].numpy()


# --------------------------------------------------------------------------------------------------
# models and steps


def build_models(args, vocab: int, positions: int, device):
    p = PRESETS[args.preset]
    H, L, A = p["hidden"], p["layers"], p["heads"]
    E = args.embedding_size if args.albert else H
    ours_cfg = ModelConfig(
        vocab_size=vocab,
        max_positions=positions,
        factorize_embeddings=args.albert,
        cross_sharing=args.albert,
        embedding_size=E,
        hidden_size=H,
        n_encoders=L,
        n_heads=A,
        attention_size=None,
        mlm_transform=True,
        tie_mlm_decoder=True,
    )
    torch.manual_seed(0)
    ours = TWilBERT(ours_cfg).to(device)
    common = dict(
        vocab_size=vocab,
        hidden_size=H,
        num_hidden_layers=L,
        num_attention_heads=A,
        intermediate_size=4 * H,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=positions,
        type_vocab_size=2,
        layer_norm_eps=1e-12,
    )
    if args.albert:
        from transformers import AlbertConfig, AlbertForPreTraining

        hf_cfg = AlbertConfig(**common, embedding_size=E, num_hidden_groups=1, inner_group_num=1, classifier_dropout_prob=0.0)
        hf = AlbertForPreTraining(hf_cfg)
    else:
        from transformers import BertConfig, BertForPreTraining

        hf = BertForPreTraining(BertConfig(**common))
    # transformers picks SDPA by default when torch has it; the JSON line records what it used
    return ours, hf.to(device)


def make_step(model, kind: str, device, precision: str, compile_: bool):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    model.train()
    fwd = torch.compile(model, dynamic=True) if compile_ else model
    autocast = (
        (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if precision == "bf16" else nullcontext
    )

    def step(b: Batch) -> None:
        with autocast():
            if kind == "ours":
                out = fwd(b.input_ids, b.token_type_ids, b.attention_mask, mlm_labels=b.labels)
                loss = pretraining_loss(out, None, b.rop, model.config).total
            else:
                rop_key = "sentence_order_label" if "Albert" in type(model).__name__ else "next_sentence_label"
                out = fwd(input_ids=b.input_ids, token_type_ids=b.token_type_ids, attention_mask=b.attention_mask,
                          labels=b.labels, **{rop_key: b.rop})
                loss = out.loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu} ({torch.get_num_threads()} threads)"


# --------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="measured steps per system (default: the preset's)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--compile", action="store_true", help="torch.compile every model (dynamic shapes)")
    ap.add_argument("--albert", action="store_true", help="factorised + all-shared, peer AlbertForPreTraining")
    ap.add_argument("--embedding-size", type=int, default=128, help="E with --albert")
    ap.add_argument("--max-len", type=int, default=48, help="tokens per segment (params.yaml representation.max_len)")
    ap.add_argument("--hf-max-length", type=int, default=128, help="HF padding='max_length' length")
    ap.add_argument("--vocab-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--spm", default=None, help="use this SentencePiece model instead of training one")
    ap.add_argument("--no-longest", action="store_true", help="skip the 'hf longest' and 'hf bucketed' rows")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/twilbert-bench-pretrain"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    p = PRESETS[args.preset]
    args.steps = args.steps or p["steps"]
    args.batch_size = args.batch_size or p["batch"]
    args.vocab_size = args.vocab_size or p["vocab"]
    if 2 * args.max_len + 3 > args.hf_max_length:
        raise SystemExit(f"--max-len {args.max_len}: pairs may exceed --hf-max-length {args.hf_max_length}")
    if not SHARED.is_dir() and not args.spm:
        raise SystemExit(f"needs the real tweets in {SHARED}")
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    import transformers

    segs, vocab = tokenised_segments(args)
    rng = np.random.default_rng(args.seed)
    examples = make_examples(segs, args.steps * args.batch_size, rng)
    ours_batches = bucketed(examples, args.batch_size, rng)
    positions = max(args.hf_max_length, 2 * args.max_len + 3)
    ours, hf = build_models(args, vocab, positions, device)
    apply_masks(ours_batches, ours.config.masked_lm, vocab, args.seed)
    rand_batches = random_batches(examples, args.batch_size, rng)

    systems = {  # name -> (model kind, batches)
        "ours (bucketed)": ("ours", ours, [pad(b, None, False, device) for b in ours_batches]),
        f"hf max_length={args.hf_max_length}": ("hf", hf, [pad(b, args.hf_max_length, True, device) for b in rand_batches]),
    }
    if not args.no_longest:
        systems["hf longest (random)"] = ("hf", hf, [pad(b, None, True, device) for b in rand_batches])
        systems["hf bucketed"] = ("hf", hf, [pad(b, None, True, device) for b in ours_batches])
    steps = {name: make_step(model, kind, device, args.precision, args.compile) for name, (kind, model, _) in systems.items()}

    # warm-up (allocator, kernels, compile), then interleave the systems step by step, so that load
    # from other processes (a shared CPU) falls on all of them alike
    for name, (_, _, batches) in systems.items():
        for b in batches[: args.warmup]:
            steps[name](b)
    sync(device)
    elapsed = dict.fromkeys(systems, 0.0)
    for i in range(args.steps):
        for name, (_, _, batches) in systems.items():
            t0 = time.perf_counter()
            steps[name](batches[i])
            sync(device)
            elapsed[name] += time.perf_counter() - t0

    rows = {}
    for name, (kind, model, batches) in systems.items():
        real = sum(b.real_tokens for b in batches)
        pos = sum(b.positions for b in batches)
        dt = elapsed[name]
        rows[name] = {
            "tokens_per_s": real / dt,
            "positions_per_s": pos / dt,
            "seq_per_s": args.steps * args.batch_size / dt,
            "step_ms": 1000 * dt / args.steps,
            "padding": 1 - real / pos,
            "mean_T": pos / (args.batch_size * args.steps),
        }
    names = list(systems)
    ours_row, hf_row = rows[names[0]], rows[names[1]]
    print(f"{'system':<24}{'real tok/s':>12}{'seq/s':>10}{'step ms':>10}{'padding':>9}{'mean T':>8}{'vs ours':>9}", file=sys.stderr)
    for name, r in rows.items():
        print(
            f"{name:<24}{r['tokens_per_s']:>12,.0f}{r['seq_per_s']:>10.1f}{r['step_ms']:>10.1f}{r['padding']:>9.1%}"
            f"{r['mean_T']:>8.1f}{ours_row['tokens_per_s'] / r['tokens_per_s']:>8.2f}x",
            file=sys.stderr,
        )

    result = {
        "device": device_name(device),
        "preset": args.preset + ("+albert" if args.albert else ""),
        "precision": args.precision,
        "compile": args.compile,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "vocab_size": vocab,
        "mean_real_len": sum(e.ids.size for e in examples) / len(examples),
        "tokens_per_s": round(ours_row["tokens_per_s"]),
        "hf_tokens_per_s": round(hf_row["tokens_per_s"]),
        "ratio_vs_hf": round(ours_row["tokens_per_s"] / hf_row["tokens_per_s"], 3),
        "ours_padding": round(ours_row["padding"], 4),
        "hf_padding": round(hf_row["padding"], 4),
        "ours_params": ours.num_parameters(),
        "hf_params": sum(p.numel() for p in hf.parameters()),
        "hf_model": type(hf).__name__,
        "hf_attention": getattr(hf.config, "_attn_implementation", None),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    if not args.no_longest:
        for key, name in (("hf_longest", names[2]), ("hf_bucketed", names[3])):
            result[f"{key}_tokens_per_s"] = round(rows[name]["tokens_per_s"])
            result[f"ratio_vs_{key}"] = round(ours_row["tokens_per_s"] / rows[name]["tokens_per_s"], 3)
    if device.type == "cuda":
        result["peak_flops"] = H100_BF16_PEAK
        result["mfu"] = round(ours.estimate_mfu(ours_row["positions_per_s"], H100_BF16_PEAK, round(ours_row["mean_T"])), 4)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

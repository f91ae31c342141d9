"""Pre-training throughput: what ``twilbert pretrain`` runs vs Hugging Face ``transformers``, on real tweets.

A step is one optimizer step (forward, loss, backward, clipping, optimizer, schedule). Every system
trains on the same examples with the same masked positions and labels; only the batching and the
implementation differ:

* **ours**: the product's code path, not a re-implementation: the real tweets of ``../shared/data`` (``--data-dir``)
  through the normalize, vocab and pairs stage cores into shards under ``--workdir`` (cached), then
  ``Pretrainer.setup()`` as ``twilbert pretrain`` does and ``Pretrainer.train_step`` on its own loader's
  micro-batches;
* **hf max_length** (the primary peer): ``BertForPreTraining`` (``AlbertForPreTraining`` with
  ``--albert``) on the same rows in random batches padded to ``--hf-max-length``; **hf longest**: the
  same batches padded to their longest row; **hf bucketed**: HF on our micro-batches, tensor for
  tensor, isolating the implementation from the batching.

Sizes match (ours configured like BERT, not like the TWilBERT recipe: implementations are compared,
not recipes). Throughput counts real (non-pad) tokens/s; on CUDA ``mfu`` is the Pretrainer's own
accounting. Systems run interleaved step by step after ``--warmup`` steps each (raise it with
``--compile``). The full method: benchmarks/RESULTS.md#pretrain-throughput-method.

Usage::

    python benchmarks/pretrain_throughput.py --preset small --device cpu --threads 1
    python benchmarks/pretrain_throughput.py --preset base --device cuda --precision bf16 --compile --steps 200 --warmup 30

Prints a table, then a final JSON line (``tokens_per_s``, ``hf_tokens_per_s``, ``ratio_vs_hf*``, on
CUDA ``mfu``...). Not a test. Needs ``transformers`` (the ``hf`` extra).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
REPLY_PAIRS = Path("twilbert_reply_pairs_es") / "pairs.tsv"  # under --data-dir
sys.path.insert(0, str(REPO))

from _bench_common import device_name, say, sync  # noqa: E402
from _bench_common import prepare_data as _prepare_data  # noqa: E402
from twilbert.data.batching import IGNORE_INDEX  # noqa: E402
from twilbert.model.config import ModelConfig  # noqa: E402
from twilbert.tokens import PAD_ID  # noqa: E402
from twilbert.train.config import ImplConfig, TrainingConfig  # noqa: E402
from twilbert.train.metrics import useful_mfu  # noqa: E402
from twilbert.train.optim import build_optimizer, clip_grad_norm, param_groups  # noqa: E402
from twilbert.train.pretrain import Pretrainer  # noqa: E402
from twilbert.train.runtime import autocast, maybe_compile  # noqa: E402
from twilbert.train.schedules import build_schedule  # noqa: E402

PRESETS = {
    # name: (H, L, A, vocab, default batch, default steps)
    "small": dict(hidden=256, layers=4, heads=4, vocab=8000, batch=32, steps=16),
    "base": dict(hidden=768, layers=6, heads=6, vocab=30000, batch=128, steps=40),  # TWilBERT-Base sizes
}
# bf16 dense tensor-core peaks by GPU name (first match wins; the name is upper-cased)
PEAKS = (
    (("GH200",), 989.4e12, "GH200"),
    (("H200", "NVL"), 835e12, "H200 NVL"),
    (("H200",), 989.4e12, "H200 (SXM)"),
    (("H100", "PCIE"), 756e12, "H100 PCIe"),
    (("H100", "NVL"), 835e12, "H100 NVL"),
    (("H100",), 989.4e12, "H100 SXM"),
    (("A100",), 312e12, "A100"),
)
DEFAULT_PEAK = (989.4e12, "H100 SXM (GPU not recognised: pass --peak-flops)")
MIN_REPRESENTATIVE_STEPS = 20  # below this, the measured rows sample too few length buckets


def task_files(data_dir: Path) -> list[Path]:
    return [f for f in sorted(data_dir.glob("*/*.tsv")) if f.parent != data_dir / REPLY_PAIRS.parent]


def prepare_data(args) -> tuple[Path, Path]:
    """Every task text (all splits: a throughput benchmark) and the reply pairs through the stages."""
    return _prepare_data(args.workdir, task_files=task_files(args.data_dir), reply_pairs=args.data_dir / REPLY_PAIRS, vocab_size=args.vocab_size,
                         max_len=args.max_len, spm=Path(args.spm) if args.spm else None)


# --------------------------------------------------------------------------------------------------
# configs


def configs(args, vocab: int, positions: int) -> tuple[ModelConfig, TrainingConfig, ImplConfig]:
    p = PRESETS[args.preset]
    H, L, A = p["hidden"], p["layers"], p["heads"]
    model = ModelConfig(
        vocab_size=vocab,
        max_positions=positions,
        factorize_embeddings=args.albert,
        cross_sharing=args.albert,
        embedding_size=args.embedding_size if args.albert else H,
        hidden_size=H,
        n_encoders=L,
        n_heads=A,
        attention_size=None,
        input_dropout=0.0,
        output_dropout=0.0,
        attention_dropout=0.0,
        attention_bias=True,
        embedding_layer_norm=True,
        norm="post",
        layer_norm_eps=1e-12,
        mlm_transform=True,
        tie_mlm_decoder=True,
    )
    if args.static_targets:
        from dataclasses import replace

        model = replace(model, masked_lm=replace(model.masked_lm, static_targets=True))
    training = TrainingConfig(
        batch_size=args.batch_size,
        max_steps=args.warmup + args.steps,
        optimizer="adamw",
        lr=args.lr,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.01,
        schedule="linear",
        warmup_steps=args.warmup,
        accum_iters=1,
        clip_grad_norm=1.0,
        seed=args.seed,
        bucket_width=8,
    )
    impl = ImplConfig(
        device=args.device,
        precision=args.precision,
        compile=args.compile,
        attention="sdpa",
        num_threads=args.threads,
        num_workers=0,
        progress=False,
    )
    return model, training, impl


def hf_model(args, cfg: ModelConfig):
    common = dict(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.n_encoders,
        num_attention_heads=cfg.n_heads,
        intermediate_size=4 * cfg.hidden_size,
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=cfg.max_positions,
        type_vocab_size=2,
        layer_norm_eps=cfg.layer_norm_eps,
        initializer_range=cfg.initializer_range,
        pad_token_id=PAD_ID,
    )
    if args.albert:
        from transformers import AlbertConfig, AlbertForPreTraining

        hf_cfg = AlbertConfig(**common, embedding_size=cfg.embedding_size, num_hidden_groups=1, inner_group_num=1,
                              classifier_dropout_prob=0.0)
        return AlbertForPreTraining(hf_cfg)
    from transformers import BertConfig, BertForPreTraining

    return BertForPreTraining(BertConfig(**common))  # transformers picks SDPA; the JSON line records it


# --------------------------------------------------------------------------------------------------
# HF batches built from our micro-batches


@dataclass
class Row:
    ids: torch.Tensor  # (t,) masked ids, as our loader made them
    types: torch.Tensor  # (t,)
    labels: torch.Tensor  # (t,) -100 off target
    rop: int  # 1 in order, 0 swapped, -100 unlabelled


def rows_of(mb: dict) -> list[Row]:
    lengths = mb["attention_mask"].sum(1).tolist()  # right padding: row r is its first t tokens
    return [
        Row(mb["input_ids"][r, :t].clone(), mb["token_type_ids"][r, :t].clone(), mb["mlm_labels"][r, :t].clone(),
            int(mb["rop_labels"][r]))
        for r, t in enumerate(lengths)
    ]


def hf_batch(rows: list[Row], length: int | None, pin: bool) -> dict:
    """HF inputs for ``rows``, right-padded to ``length`` (None: the longest row)."""
    T = length or max(r.ids.numel() for r in rows)
    B = len(rows)
    ids = torch.full((B, T), PAD_ID, dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for i, r in enumerate(rows):
        t = r.ids.numel()
        ids[i, :t], types[i, :t], labels[i, :t], mask[i, :t] = r.ids, r.types, r.labels, 1
    out = {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": labels,
           "rop": torch.tensor([r.rop for r in rows], dtype=torch.long)}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


def hf_of_ours(mb: dict, pin: bool) -> dict:
    """Our micro-batch as HF inputs, tensor for tensor (same shape; mask as 0/1 long)."""
    out = {"input_ids": mb["input_ids"].clone(), "token_type_ids": mb["token_type_ids"].clone(),
           "attention_mask": mb["attention_mask"].long(), "labels": mb["mlm_labels"].clone(),
           "rop": mb["rop_labels"].clone()}
    return {k: v.pin_memory() for k, v in out.items()} if pin else out


def random_batches(rows: list[Row], batch_size: int, length: int | None, rng: np.random.Generator, pin: bool) -> list[dict]:
    perm = rng.permutation(len(rows))
    return [hf_batch([rows[i] for i in perm[s : s + batch_size]], length, pin) for s in range(0, len(perm), batch_size)]


def hf_stepper(model, trainer: Pretrainer, albert: bool):
    """An HF training loop's step, with the Pretrainer's optimizer/schedule/clipping settings."""
    tr, device, amp = trainer.training, trainer.device, trainer.amp_dtype
    model.to(device).train()
    fused = {"fused": True} if device.type == "cuda" and tr.optimizer in ("adam", "adamw") else {}
    opt = build_optimizer(tr.optimizer, param_groups(model, tr.weight_decay), lr=tr.lr, betas=tr.betas, eps=tr.eps,
                          weight_decay=tr.weight_decay, **fused)
    sched = build_schedule(tr.schedule, opt, warmup_steps=tr.warmup_steps, total_steps=max(trainer.total_steps, tr.warmup_steps, 1),
                           hidden_size=trainer.model_cfg.hidden_size, scale=tr.lr)
    fwd = maybe_compile(model, trainer.impl.compile)
    rop_key = "sentence_order_label" if albert else "next_sentence_label"

    def step(batch: dict) -> None:
        b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with autocast(device, amp):
            out = fwd(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"],
                      labels=b["labels"], **{rop_key: b["rop"]})
        out.loss.backward()
        clip_grad_norm(model.parameters(), tr.clip_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)

    return step


# --------------------------------------------------------------------------------------------------


def gpu_peak(name: str) -> tuple[float, str]:
    upper = name.upper()
    for needles, peak, label in PEAKS:
        if all(n in upper for n in needles):
            return peak, label
    return DEFAULT_PEAK


def count(micro: list[list[dict]]) -> np.ndarray:
    """Sum of the Pretrainer's own per-step counts: sequences, real, padded, Σ real len², Σ padded len², targets."""
    return np.sum([Pretrainer._host_counts(m) for m in micro], axis=0) if micro else np.zeros(6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="measured optimizer steps of ours (default: the preset's)")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured steps per system first")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the preset's)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="impl.precision (auto: bf16 on CUDA)")
    ap.add_argument("--compile", action="store_true", help="impl.compile: torch.compile ours (and every HF peer)")
    ap.add_argument("--static-targets", action="store_true", help="masked_lm.static_targets (fixed MLM head shapes)")
    ap.add_argument("--albert", action="store_true", help="factorised + all-shared, peer AlbertForPreTraining")
    ap.add_argument("--embedding-size", type=int, default=128, help="E with --albert")
    ap.add_argument("--max-len", type=int, default=48, help="tokens per segment (params.yaml representation.max_len)")
    ap.add_argument("--hf-max-length", type=int, default=128, help="HF padding='max_length' length")
    ap.add_argument("--vocab-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--spm", default=None, help="use this SentencePiece model instead of training one")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--no-longest", action="store_true", help="skip the 'hf longest' and 'hf bucketed' rows")
    ap.add_argument("--peak-flops", type=float, default=None, help="GPU peak for MFU (default: from the GPU's name)")
    ap.add_argument("--data-dir", type=Path, default=SHARED,
                    help="the tweets, laid out as ../shared/data (<task>/*.tsv, twilbert_reply_pairs_es/pairs.tsv)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/twilbert-bench-pretrain"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="impl.num_threads: torch CPU threads (0 = torch's default)")
    args = ap.parse_args()
    p = PRESETS[args.preset]
    args.steps = args.steps or p["steps"]
    args.batch_size = args.batch_size or p["batch"]
    args.vocab_size = args.vocab_size or p["vocab"]
    if 2 * args.max_len + 3 > args.hf_max_length:
        raise SystemExit(f"--max-len {args.max_len}: pairs may exceed --hf-max-length {args.hf_max_length}")
    if not args.data_dir.is_dir():
        raise SystemExit(f"needs the real tweets in {args.data_dir}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    args.workdir.mkdir(parents=True, exist_ok=True)
    import transformers

    spm, shards = prepare_data(args)
    from twilbert.text.tokenizer import Tokenizer

    vocab = Tokenizer.from_file(spm).vocab_size
    positions = max(args.hf_max_length, 2 * args.max_len + 3)  # one position table size for both
    model_cfg, training, impl = configs(args, vocab, positions)
    if args.device == "cuda":
        peak, peak_name = (args.peak_flops, "--peak-flops") if args.peak_flops else gpu_peak(torch.cuda.get_device_name())
    else:
        peak, peak_name = (args.peak_flops or DEFAULT_PEAK[0]), "n/a on CPU"

    out_dir = Path(tempfile.mkdtemp(prefix="pretrainer-", dir=args.workdir))  # nothing is saved there
    try:
        trainer = Pretrainer(model_cfg=model_cfg, training=training, impl=impl, shards_dir=shards, tokenizer_path=spm,
                             out_dir=out_dir, progress=False, peak_flops=peak)
        trainer.setup()
        result = measure(args, trainer, transformers, peak, peak_name)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    print(json.dumps(result))


def measure(args, trainer: Pretrainer, transformers, peak: float, peak_name: str) -> dict:
    device = trainer.device
    pin = device.type == "cuda"
    n_total = args.warmup + args.steps

    # --- our micro-batches, from the Pretrainer's own loader (plan order, epochs as run() walks them) ---
    micro: list[list[dict]] = []
    loader_s, epoch = 0.0, 0
    while len(micro) < n_total:
        it = iter(trainer.loader(epoch, 0))
        while len(micro) < n_total:
            t0 = time.perf_counter()
            mb = next(it, None)
            loader_s += time.perf_counter() - t0
            if mb is None:
                break
            micro.append([mb])  # accum_iters = 1: one micro-batch per optimizer step
        epoch += 1
    warm_micro, meas_micro = micro[: args.warmup], micro[args.warmup :]

    # --- the HF peers' batches: the same rows, masks and labels (copied before anything trains) ---
    rng = np.random.default_rng(args.seed)
    B = args.batch_size
    warm_rows = [r for m in warm_micro for r in rows_of(m[0])]
    meas_rows = [r for m in meas_micro for r in rows_of(m[0])]
    peers = {f"hf max_length={args.hf_max_length}": args.hf_max_length}
    if not args.no_longest:
        peers["hf longest (random)"] = None
        peers["hf bucketed"] = "ours"
    hf_batches: dict[str, tuple[list[dict], list[dict]]] = {}
    for name, length in peers.items():
        if length == "ours":
            hf_batches[name] = ([hf_of_ours(m[0], pin) for m in warm_micro], [hf_of_ours(m[0], pin) for m in meas_micro])
        else:
            warm = random_batches(warm_rows, B, length, rng, pin) if warm_rows else []
            hf_batches[name] = (warm, random_batches(meas_rows, B, length, rng, pin))

    base_hf = hf_model(args, trainer.model_cfg)
    steps = {"ours (Pretrainer)": None}
    for name in peers:
        steps[name] = hf_stepper(copy.deepcopy(base_hf), trainer, args.albert)

    # --- warm-up (allocator, kernels, compile), then interleaved measured steps ---
    skipped = 0
    for m in warm_micro:
        skipped += not trainer.train_step(m)
    for name, (warm, _) in hf_batches.items():
        for b in warm:
            steps[name](b)
    sync(device)
    elapsed = dict.fromkeys(steps, 0.0)
    counts = {name: [0, 0, 0] for name in steps}  # real tokens, padded positions, MLM targets of the measured steps
    n_steps = dict.fromkeys(steps, 0)
    longest = max([len(meas_micro), *(len(v[1]) for v in hf_batches.values())])
    ours_name = next(iter(steps))
    for i in range(longest):
        for name in steps:
            if name == ours_name:
                if i >= len(meas_micro):
                    continue
                t0 = time.perf_counter()
                skipped += not trainer.train_step(meas_micro[i])
                sync(device)
                elapsed[name] += time.perf_counter() - t0
            else:
                batches = hf_batches[name][1]
                if i >= len(batches):
                    continue
                b = batches[i]
                t0 = time.perf_counter()
                steps[name](b)
                sync(device)
                elapsed[name] += time.perf_counter() - t0
                counts[name][0] += int(b["attention_mask"].sum())
                counts[name][1] += b["input_ids"].numel()
                counts[name][2] += int((b["labels"] != IGNORE_INDEX).sum())
            n_steps[name] += 1

    # --- ours counted as the Pretrainer counts, and cross-checked with its state ---
    seqs, real, padded, real_sq, padded_sq, targets = count(meas_micro)
    counts[ours_name] = [int(real), int(padded), int(targets)]
    trainer.sync_counts()
    expect = int(count(micro)[1]) if not skipped else None
    if expect is not None and trainer.state.tokens_real != expect:
        raise SystemExit(f"token count mismatch: Pretrainer counted {trainer.state.tokens_real}, the benchmark {expect}")
    for name in peers:
        if counts[name][0] != counts[ours_name][0] or counts[name][2] != counts[ours_name][2]:
            raise SystemExit(f"{name}: {counts[name][0]} real tokens / {counts[name][2]} MLM targets, ours "
                             f"{counts[ours_name][0]} / {counts[ours_name][2]}: not the same examples")

    rows = {}
    for name in steps:
        dt = elapsed[name]
        tok, pos, _ = counts[name]
        rows[name] = {
            "tokens_per_s": tok / dt,
            "positions_per_s": pos / dt,
            "seq_per_s": len(meas_rows) / dt,
            "step_ms": 1000 * dt / max(n_steps[name], 1),
            "steps": n_steps[name],
            "padding": 1 - tok / pos,
            "mean_T": pos / max(n_steps[name], 1) / B,
        }
    names = list(steps)
    ours_row, hf_row = rows[ours_name], rows[names[1]]
    say(f"{'system':<24}{'real tok/s':>12}{'seq/s':>10}{'step ms':>10}{'steps':>7}{'padding':>9}{'mean T':>8}{'ours vs':>9}")
    for name, r in rows.items():
        say(f"{name:<24}{r['tokens_per_s']:>12,.0f}{r['seq_per_s']:>10.1f}{r['step_ms']:>10.1f}{r['steps']:>7}"
            f"{r['padding']:>9.1%}{r['mean_T']:>8.1f}{ours_row['tokens_per_s'] / r['tokens_per_s']:>8.2f}x")

    raw = trainer.raw_model
    hf_model_ = base_hf
    result = {
        "device": device_name(device),
        "preset": args.preset + ("+albert" if args.albert else ""),
        "path": "twilbert.train.pretrain.Pretrainer.setup/loader/train_step",
        "precision": str(trainer.amp_dtype or torch.float32).removeprefix("torch."),
        "compile": args.compile,
        "static_targets": args.static_targets,
        "batch_size": B,
        "steps": len(meas_micro),
        "warmup": args.warmup,
        "vocab_size": trainer.model_cfg.vocab_size,
        "train_rows": trainer.plan.n_rows,
        "mean_real_len": round(real / max(seqs, 1), 2),  # of the measured rows; compare with the train split's
        "train_mean_len": round(float(np.mean(trainer.batches.dataset.lengths)), 2),
        "tokens_per_s": round(ours_row["tokens_per_s"]),
        "hf_tokens_per_s": round(hf_row["tokens_per_s"]),
        "ratio_vs_hf": round(ours_row["tokens_per_s"] / hf_row["tokens_per_s"], 3),
        "ours_padding": round(ours_row["padding"], 4),
        "hf_padding": round(hf_row["padding"], 4),
        "ours_step_ms": round(ours_row["step_ms"], 2),
        "ours_loader_ms": round(1000 * loader_s / len(micro), 2),
        "ours_skipped_steps": skipped,
        "ours_params": raw.num_parameters(),
        "hf_params": sum(q.numel() for q in hf_model_.parameters()),
        "hf_model": type(hf_model_).__name__,
        "hf_attention": getattr(hf_model_.config, "_attn_implementation", None),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    if not args.no_longest:
        for key, name in (("hf_longest", names[2]), ("hf_bucketed", names[3])):
            result[f"{key}_tokens_per_s"] = round(rows[name]["tokens_per_s"])
            result[f"ratio_vs_{key}"] = round(ours_row["tokens_per_s"] / rows[name]["tokens_per_s"], 3)
    if device.type == "cuda":
        common = dict(mlm_targets=targets, world_size=1, peak_flops=peak)
        dt = elapsed[ours_name]
        result["peak_flops"] = peak
        result["peak_used"] = peak_name
        result["mfu"] = round(useful_mfu(raw, tokens=real, sum_sq_lengths=real_sq, seconds=dt, **common), 4)
        result["mfu_padded"] = round(useful_mfu(raw, tokens=padded, sum_sq_lengths=padded_sq, seconds=dt, **common), 4)
        # the same useful work (our model's FLOPs on the real tokens) in the primary peer's time
        result["hf_mfu"] = round(useful_mfu(raw, tokens=real, sum_sq_lengths=real_sq, seconds=elapsed[names[1]], **common), 4)
        say(f"MFU against {peak / 1e12:.1f} TFLOP/s bf16 dense ({peak_name}): ours {result['mfu']:.1%} "
            f"({result['mfu_padded']:.1%} counting padding), {names[1]} {result['hf_mfu']:.1%}")
    if len(meas_micro) < MIN_REPRESENTATIVE_STEPS and not args.no_longest:
        say(f"note: {len(meas_micro)} measured steps: the random peers' rows come from that few length buckets, "
            f"so their padding is not the real one (use >= {MIN_REPRESENTATIVE_STEPS} steps for a measurement)")
    if skipped:
        say(f"warning: the Pretrainer skipped {skipped} non-finite step(s): their optimizer step did not run")
    return result


if __name__ == "__main__":
    main()

"""Evaluation of a pre-trained model on a held-out split: MLM, ROP, pseudo-log-likelihood, a report.

This is the core of the ``evaluate`` stage (no MLflow, DVC or Typer here). One call,
:func:`evaluate_pretrained`, returns flat JSON-able metrics and a markdown report. Everything runs
under ``torch.inference_mode`` with the model in eval mode (dropout off), and is deterministic:
the same model, data and ``seed`` give the same numbers on any device (masks are drawn on the CPU).

Measured (definitions in docs/evaluation.md; each number re-computed in ``tests/train/test_evaluate.py``):

* **MLM** over every target, length-sorted batches masked with the model's own ``masked_lm`` settings
  by one seeded CPU generator; ``mlm_accuracy_mask_token`` only over targets shown as ``[MASK]``;
* **context-free baselines** on the same targets from the train split's token frequencies
  (``baseline_unigram_accuracy``: always guess the most frequent train token; the sampled variant;
  the add-one-smoothed unigram loss and perplexity);
* **ROP** on labelled rows: accuracy, loss, precision, recall, F1;
* **pseudo-log-likelihood** (the original ``lm_evaluation`` app) per scored token and per sentence,
  divided by the scored tokens rather than the original's length with ``[CLS]``/``[SEP]`` (see
  docs/deviations.md);
* **the report** (``report_md``): the metrics table and ``report_examples`` rows with their masked
  inputs, targets and predictions, from the same MLM pass as the metrics.

Undefined values (a split without ROP labels, a model without the ROP head, an empty split) are
``None``, not NaN, so the metrics serialise as strict JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
import torch.nn.functional as F

from twilbert.data.masking import IGNORE_INDEX, mask_tokens, maskable_positions
from twilbert.data.shards import ShardDataset, load_manifest, open_split
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import Tokenizer, TokenizerError
from twilbert.tokens import CLS_ID, MASK_ID, N_SPECIAL, PAD_ID, SEP_ID, SPECIAL_TOKENS
from twilbert.train.metrics import PretrainMetrics


@dataclass
class EvalResult:
    metrics: dict[str, float | int | None]  # flat, JSON-able (None = undefined)
    report_md: str  # human-readable report: summary table + examples


@dataclass
class _Example:
    """What the report shows for one evaluated row (collected during the MLM pass)."""

    row: int
    ids: np.ndarray  # (T,) input without padding
    masked: np.ndarray  # (T,) what the model saw
    positions: list[int] = field(default_factory=list)  # target positions
    reference: list[int] = field(default_factory=list)  # target ids
    predicted: list[int] = field(default_factory=list)  # argmax ids
    rop_label: int = -1
    rop_pred: int | None = None
    rop_p_in_order: float | None = None


# --------------------------------------------------------------------------------------------------
# batches


def eval_order(lengths: np.ndarray) -> np.ndarray:
    """Row order of the MLM pass: ascending length, ties in file order (so batches hold few pads)."""
    return np.argsort(lengths, kind="stable")


def _to_device(ids: np.ndarray, types: np.ndarray, device: torch.device):
    ids_t = torch.from_numpy(ids)  # (B, T) int64, on the CPU for masking
    types_t = torch.from_numpy(types).to(device)  # (B, T)
    real = ids_t != PAD_ID  # (B, T) bool
    attention_mask = None if bool(real.all()) else real.to(device)  # None: SDPA's mask-free kernels
    return ids_t, types_t, real, attention_mask


# --------------------------------------------------------------------------------------------------
# context-free baselines


def train_token_counts(shards_dir: Path, vocab_size: int) -> np.ndarray:
    """(V,) int64: occurrences of each id in segments ``a`` and ``b`` of every train row."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for table in open_split(shards_dir, "train"):
        for column in ("a", "b"):
            for chunk in table.column(column).chunks:
                values = pc.list_flatten(chunk).to_numpy(zero_copy_only=False)  # respects slicing
                counts += np.bincount(values.astype(np.int64), minlength=vocab_size)[:vocab_size]
    return counts


def unigram_log_probs(counts: np.ndarray) -> np.ndarray:
    """(V,) float64 log p(v), add-one smoothed over the maskable ids ``[N_SPECIAL, V)``; -inf below."""
    log_p = np.full(counts.shape, -np.inf)
    c = counts[N_SPECIAL:].astype(np.float64) + 1.0
    log_p[N_SPECIAL:] = np.log(c) - np.log(c.sum())
    return log_p


# --------------------------------------------------------------------------------------------------
# pseudo-log-likelihood


def pll_segments(ds: ShardDataset, n: int, seed: int) -> list[np.ndarray]:
    """Up to ``n`` distinct segments ``a`` from rows drawn without replacement by ``seed``."""
    if n <= 0 or len(ds) == 0:
        return []
    order = np.random.default_rng(seed).permutation(len(ds))
    seen: set[bytes] = set()
    out: list[np.ndarray] = []
    for i in order:  # stops after n distinct segments; duplicates are rare except in tiny splits
        a = np.asarray(ds[int(i)].a, dtype=np.int64)
        key = a.tobytes()
        if a.size and key not in seen:
            seen.add(key)
            out.append(a)
            if len(out) == n:
                break
    return out


def sentence_pll(model: TWilBERT, segment: np.ndarray, device: torch.device) -> tuple[float, int]:
    """``(sum_t log p(x_t | x without t), number of scored tokens)`` for ``[CLS] x [SEP]``.

    One forward over all masked copies: copy j masks only the j-th scored position.
    """
    ids = torch.from_numpy(np.concatenate([[CLS_ID], segment, [SEP_ID]])).to(device)  # (T,)
    scored = torch.nonzero(ids >= N_SPECIAL).squeeze(1)  # (n,) positions of maskable tokens
    n = int(scored.numel())
    if n == 0:
        return 0.0, 0
    rows = torch.arange(n, device=device)
    batch = ids.repeat(n, 1)  # (n, T)
    batch[rows, scored] = MASK_ID  # copy j: position scored[j] masked
    labels = torch.full_like(batch, IGNORE_INDEX)
    labels[rows, scored] = ids[scored]  # one target per copy, so logits row j <-> copy j
    out = model(batch, mlm_labels=labels)  # no padding: attention_mask None
    log_p = F.log_softmax(out.mlm_logits.float(), dim=-1)  # (n, V)
    return float(log_p.gather(1, out.mlm_targets[:, None]).sum()), n


# --------------------------------------------------------------------------------------------------
# the evaluation


def evaluate_pretrained(
    model: TWilBERT,
    shards_dir: Path,
    split: str,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seed: int,
    pll_sentences: int,
    report_examples: int,
    device: str | torch.device = "cpu",
) -> EvalResult:
    """Evaluate ``model`` on ``split`` of the shards in ``shards_dir`` (see the module docstring).

    The model is moved to ``device`` and left in the train/eval mode it came in.
    """
    shards_dir = Path(shards_dir)
    device = torch.device(device)
    cfg = model.config
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if tokenizer.vocab_size != cfg.vocab_size:
        raise TokenizerError(f"tokenizer has {tokenizer.vocab_size} pieces but the model's vocab_size is {cfg.vocab_size}")
    manifest_sha = load_manifest(shards_dir).get("tokenizer_sha256")
    if manifest_sha is not None and manifest_sha != tokenizer.sha256:
        raise TokenizerError(f"{shards_dir}: shards were built with tokenizer {manifest_sha[:12]}, not {tokenizer.sha256[:12]}")

    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            ds = ShardDataset(shards_dir, split)
            metrics, examples, majority = _mlm_rop_pass(model, ds, tokenizer, shards_dir, batch_size, seed, report_examples, device)
            metrics.update(_pll_pass(model, ds, pll_sentences, seed, device))
    finally:
        model.train(was_training)
    metrics = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
    return EvalResult(metrics=metrics, report_md=_report(split, metrics, examples, majority, tokenizer))


def _mlm_rop_pass(model, ds, tokenizer, shards_dir, batch_size, seed, report_examples, device):
    cfg = model.config
    V = cfg.vocab_size
    counts = train_token_counts(shards_dir, V)
    n_train_tokens = int(counts[N_SPECIAL:].sum())
    majority = int(N_SPECIAL + np.argmax(counts[N_SPECIAL:])) if n_train_tokens else -1  # argmax of the unigram distribution
    unigram = torch.from_numpy(unigram_log_probs(counts)).to(device)  # (V,) float64
    freq = np.zeros(V)
    freq[N_SPECIAL:] = counts[N_SPECIAL:] / max(n_train_tokens, 1)
    frequency = torch.from_numpy(freq).to(device)  # (V,) float64 train frequency, 0 on specials
    word_start = torch.from_numpy(tokenizer.word_start_table()) if cfg.masked_lm.type == "word" else None

    generator = torch.Generator().manual_seed(seed)  # CPU: the same masks on any device
    picks = set(np.random.default_rng(seed).choice(len(ds), size=min(report_examples, len(ds)), replace=False).tolist())
    examples: dict[int, _Example] = {}
    tracker = PretrainMetrics(device)
    extra = torch.zeros(5, dtype=torch.float64, device=device)  # unigram-guess hits, unigram CE, [MASK] targets, their hits, Σ freq

    order = eval_order(ds.lengths)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids_np, types_np, rop_np = ds.packed(idx)
        ids, types, real, attention_mask = _to_device(ids_np, types_np, device)
        word_starts = word_start[ids] if word_start is not None else None  # (B, T) bool
        masked, labels = mask_tokens(ids, maskable_positions(ids, real), cfg.masked_lm, V, word_starts, generator)
        masked, labels = masked.to(device), labels.to(device)
        out = model(masked, types, attention_mask, mlm_labels=labels)
        rop_labels = torch.from_numpy(rop_np).to(device)
        rop_labels = torch.where(rop_labels < 0, torch.full_like(rop_labels, IGNORE_INDEX), rop_labels)  # (B,)
        tracker.update(out.mlm_logits, out.mlm_targets, out.rop_logits, rop_labels)

        targets = out.mlm_targets  # (N,) row-major, as the logits
        pred = out.mlm_logits.argmax(dim=-1)  # (N,)
        shown_mask = masked[labels != IGNORE_INDEX] == MASK_ID  # (N,)
        extra += torch.stack(
            [
                (targets == majority).sum().double(),
                -unigram[targets].sum(),
                shown_mask.sum().double(),
                ((pred == targets) & shown_mask).sum().double(),
                frequency[targets].sum(),
            ]
        )
        for r in np.flatnonzero(np.isin(idx, list(picks))):
            examples[int(idx[r])] = _example(int(idx[r]), r, ids_np, masked, labels, pred, out.rop_logits, rop_np)

    m = tracker.compute()
    n = m["mlm_targets"]
    hits, ce, n_mask, mask_hits, freq_sum = extra.tolist()
    defined = bool(n and n_train_tokens)
    nan = math.nan
    metrics = {
        "rows": len(ds),
        "mlm_targets": n,
        "mlm_loss": m["mlm_loss"],
        "mlm_perplexity": m["mlm_perplexity"],
        "mlm_accuracy": m["mlm_accuracy"],
        "mlm_accuracy_mask_token": mask_hits / n_mask if n_mask else nan,
        "baseline_unigram_accuracy": hits / n if defined else nan,
        "baseline_unigram_token_id": majority,
        "baseline_unigram_sampled_accuracy": freq_sum / n if defined else nan,
        "baseline_unigram_loss": ce / n if defined else nan,
        "baseline_unigram_perplexity": math.exp(ce / n) if defined else nan,
        "baseline_train_tokens": n_train_tokens,
    }
    if model.rop_head is not None:
        metrics.update({k: m[k] for k in ("rop_examples", "rop_loss", "rop_accuracy", "rop_precision", "rop_recall", "rop_f1")})
        if not m["rop_examples"]:  # precision/recall default to 0.0 in PretrainMetrics; undefined here
            metrics.update(rop_precision=nan, rop_recall=nan)
    ordered = [examples[i] for i in sorted(examples)]
    return metrics, ordered, majority


def _example(row, r, ids_np, masked, labels, pred, rop_logits, rop_np) -> _Example:
    """Pull one row's inputs, targets and predictions out of a batch (report only, a few rows)."""
    real = ids_np[r] != PAD_ID
    target_rows = torch.nonzero(labels != IGNORE_INDEX)[:, 0].cpu().numpy()  # (N,) row of each target
    pos = np.flatnonzero(labels[r].cpu().numpy() != IGNORE_INDEX)
    ex = _Example(row=row, ids=ids_np[r][real], masked=masked[r].cpu().numpy()[real])
    ex.positions = pos.tolist()
    ex.reference = ids_np[r][pos].tolist()
    ex.predicted = pred[torch.from_numpy(target_rows == r).to(pred.device)].cpu().tolist()
    ex.rop_label = int(rop_np[r])
    if rop_logits is not None:
        p = torch.softmax(rop_logits[r].float(), dim=-1)
        ex.rop_pred, ex.rop_p_in_order = int(p.argmax()), float(p[1])
    return ex


def _pll_pass(model, ds, pll_sentences, seed, device) -> dict:
    total, tokens, per_sentence = 0.0, 0, []
    for segment in pll_segments(ds, pll_sentences, seed):
        s, n = sentence_pll(model, segment, device)
        if n:
            total, tokens = total + s, tokens + n
            per_sentence.append(s / n)
    mean = total / tokens if tokens else math.nan
    return {
        "pll_sentences": len(per_sentence),
        "pll_tokens": tokens,
        "pll_per_token": mean,
        "pll_sentence_mean": float(np.mean(per_sentence)) if per_sentence else math.nan,
        "pseudo_perplexity": math.exp(-mean) if tokens else math.nan,
    }


# --------------------------------------------------------------------------------------------------
# the report


def render_tokens(tokenizer: Tokenizer, ids) -> str:
    """Pieces joined as text, special tokens shown as ``[MASK]`` etc., padding dropped."""
    parts = []
    for i in map(int, ids):  # a handful of report rows, not a hot path
        if i == PAD_ID:
            continue
        parts.append(f" {SPECIAL_TOKENS[i]}" if i < N_SPECIAL else tokenizer.display_piece(i))
    return " ".join("".join(parts).split())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'") or " "


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _report(split, metrics, examples, majority, tokenizer) -> str:
    lines = [f"# Pre-training evaluation: split `{split}`", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    piece = tokenizer.id_to_piece(majority) if majority >= 0 else "n/a"
    lines += [
        "",
        "Baselines on the same MLM targets, from train-split token frequencies (no context): the "
        f"unigram-frequency guesser, which always guesses the most frequent train token `{_cell(piece)}` "
        f"(id {majority}), scores `baseline_unigram_accuracy`; "
        "guessing by sampling from the frequencies would score `baseline_unigram_sampled_accuracy` on average; "
        "the smoothed unigram distribution has cross-entropy `baseline_unigram_loss`. PLL is the mean "
        "log-probability of each token with only that token masked (divided by scored tokens, not by the "
        "length with [CLS]/[SEP]).",
        "",
        f"## Examples ({len(examples)})",
    ]
    rop_names = {1: "1 (in order)", 0: "0 (not in order)", -1: "none (MLM only)"}
    for k, ex in enumerate(examples, 1):
        sep = np.flatnonzero(ex.ids == SEP_ID)
        a = ex.ids[1 : sep[0]]
        b = ex.ids[sep[0] + 1 : sep[1]] if sep.size > 1 else ex.ids[:0]
        hits = sum(r == p for r, p in zip(ex.reference, ex.predicted))
        lines += [
            "",
            f"### Example {k} (row {ex.row})",
            "",
            f"- **a**: `{_cell(tokenizer.decode(a))}`",
            f"- **b**: `{_cell(tokenizer.decode(b))}`" if b.size else "- **b**: (none)",
            f"- **input**: `{_cell(render_tokens(tokenizer, ex.ids))}`",
            f"- **masked input**: `{_cell(render_tokens(tokenizer, ex.masked))}`",
            f"- **MLM**: {hits}/{len(ex.reference)} targets right",
            f"- **ROP**: label {rop_names.get(ex.rop_label, ex.rop_label)}; "
            + (f"predicted {ex.rop_pred}, p(in order) = {ex.rop_p_in_order:.3f}" if ex.rop_pred is not None else "no ROP head"),
            "",
            "| position | shown as | reference | predicted | |",
            "|---|---|---|---|---|",
        ]
        for pos, ref, pred in zip(ex.positions, ex.reference, ex.predicted):
            i = int(ex.masked[pos])
            shown = SPECIAL_TOKENS[i] if i < N_SPECIAL else tokenizer.id_to_piece(i)  # raw piece, as the next two columns
            lines.append(
                f"| {pos} | `{_cell(shown)}` | `{_cell(tokenizer.id_to_piece(ref))}` | "
                f"`{_cell(tokenizer.id_to_piece(pred))}` | {'ok' if ref == pred else 'x'} |"
            )
    return "\n".join(lines) + "\n"


__all__ = [
    "EvalResult",
    "eval_order",
    "evaluate_pretrained",
    "pll_segments",
    "render_tokens",
    "sentence_pll",
    "train_token_counts",
    "unigram_log_probs",
]

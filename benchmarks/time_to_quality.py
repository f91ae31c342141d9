"""Time to quality: our pre-training against Hugging Face ``transformers`` for the same wall clock.

Both systems pre-train the same BERT-like model (H=256, L=4, A=4, FFN 1024, 16k unigram vocabulary,
``max_len`` 64 per segment, post-norm, tied decoder, no dropout) with the same recipe: MLM only (ROP
off), 15% token masking 80/10/10, AdamW (same parameter groups, lr, betas, eps, weight decay), batch in
sequences, gradient clipping at 1.0. The text is the train splits of the task folders of ``--data-dir``
plus the reply pairs, through the product's normalize, vocab and pairs stages (cached in
``--workdir``); dev/test texts never enter pre-training.

* **ours**: ``Pretrainer.setup()`` and ``Pretrainer.train_step`` on its own length-bucketed loader.
* **hf**: ``BertForMaskedLM`` + ``DataCollatorForLanguageModeling`` (padding to the longest row) on the
  same shard rows in random batches, a plain training loop.

Fairness. The number of steps each system reaches differs, so the learning rate is one function of
the elapsed fraction of each system's *own* budget (linear warm-up over ``--warmup-frac``, then linear
decay to 0 at the end), set on the optimizer by this harness before every step for both. The systems
run interleaved in slices of ``--slice-s`` seconds (alternating which goes first), each clock counting
only its own slices (data loading and collation included); held-out evaluation at every
``1/--evals`` of the budget stops the clock. One evaluator scores both: a fixed sample of dev texts,
masked once with a fixed seed (same positions for both), mean MLM loss and accuracy over the targets.
At the end both models are saved as our pre-trained model dirs (HF's through ``twilbert.hf.import_``)
and fine-tuned by ``race_downstream.downstream`` (random init and the TF-IDF baseline beside them).

Usage::

    python benchmarks/time_to_quality.py                       # 10 min per system + 27 one-epoch fine-tunes: ~1 h on 2 cores
    python benchmarks/time_to_quality.py --device cuda --minutes 3 --workdir W
    python benchmarks/time_to_quality.py --dry-run --workdir W # toy sizes on the bundled sample, seconds

Writes ``curve.json``, ``heldout_loss.png`` and ``result.json`` to ``--out``; prints a table, then the
result as a final JSON line. Not a test. Method: benchmarks/RESULTS.md#time-to-quality.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from _bench_common import device_name, prepare_data, say, sync  # noqa: E402
from twilbert.tokens import IGNORE_INDEX, PAD_ID  # noqa: E402

DEFAULT_TASKS = "hateval2019_es,tass2020_sentiment_es,emoevent_es"
REPLY_PAIRS_DIR = "twilbert_reply_pairs_es"
PRESETS = {
    "race": dict(hidden=256, layers=4, heads=4, vocab=16000, max_len=64, batch=32, heldout=1000),
    "toy": dict(hidden=32, layers=1, heads=2, vocab=300, max_len=32, batch=16, heldout=100),  # --dry-run
}


# --------------------------------------------------------------------------------------------------
# pure parts: schedule, time ratio, held-out set and evaluator


def lr_at(fraction: float, peak: float, warmup_frac: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup_frac`` of the budget, then linear decay to 0 at its end."""
    f = min(max(fraction, 0.0), 1.0)
    if warmup_frac > 0 and f < warmup_frac:
        return peak * f / warmup_frac
    return peak * (1.0 - f) / (1.0 - warmup_frac) if warmup_frac < 1 else peak


def time_ratio(curve: list[tuple[float, float]], target: float, budget_s: float) -> float | None:
    """Fraction of ``budget_s`` at which ``curve`` (``(train seconds, loss)`` points, linearly
    interpolated) first reaches ``target``; None if it never does."""
    pts = sorted(curve)
    if not pts:
        return None
    if pts[0][1] <= target:
        return pts[0][0] / budget_s
    for (t0, l0), (t1, l1) in zip(pts, pts[1:]):
        if l1 <= target:
            return (t0 + (l0 - target) / (l0 - l1) * (t1 - t0)) / budget_s
    return None


@dataclass(frozen=True)
class HeldOut:
    """Fixed masked batches: ``(input_ids (B, T), attention_mask (B, T) bool, labels (B, T))``."""

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    n_texts: int
    n_targets: int


def heldout_set(encoded: list[list[int]], *, max_len: int, vocab_size: int, seed: int, batch_size: int = 64) -> HeldOut:
    """``[CLS] text [SEP]`` rows of the token ids in ``encoded`` (cut to ``max_len``), grouped by length
    and masked once (15% of tokens, 80/10/10) with generators seeded by ``seed`` and the batch number."""
    from twilbert.data.masking import mask_tokens, maskable_positions
    from twilbert.model.config import MaskedLMConfig
    from twilbert.text.tokenizer import build_input

    rows = [build_input(ids[:max_len])[0] for ids in encoded if ids]
    order = sorted(range(len(rows)), key=lambda i: (len(rows[i]), i))
    masking = MaskedLMConfig(type="token", budget=0.15)
    batches, n_targets = [], 0
    for k, s in enumerate(range(0, len(order), batch_size)):
        chunk = [rows[i] for i in order[s : s + batch_size]]
        T = max(len(r) for r in chunk)
        ids = torch.full((len(chunk), T), PAD_ID, dtype=torch.long)  # (B, T)
        for i, r in enumerate(chunk):
            ids[i, : len(r)] = torch.from_numpy(r)
        mask = ids != PAD_ID  # (B, T)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + k)
        masked, labels = mask_tokens(ids, maskable_positions(ids, mask), masking, vocab_size, generator=gen)
        n_targets += int((labels != IGNORE_INDEX).sum())
        batches.append((masked, mask, labels))
    return HeldOut(batches, len(rows), n_targets)


@torch.no_grad()
def evaluate(logits_fn, heldout: HeldOut, device: torch.device) -> dict:
    """Mean MLM cross-entropy and accuracy over the held-out targets. ``logits_fn(input_ids,
    attention_mask, targets)`` returns the MLM logits (N, V) at the N ``targets`` (B, T) bool positions,
    in row-major order: the decoder runs on the targets only (V x H per position is most of the cost)."""
    loss_sum, correct = 0.0, 0
    for ids, mask, labels in heldout.batches:
        labels = labels.to(device)
        targets = labels != IGNORE_INDEX  # (B, T)
        logits = logits_fn(ids.to(device), mask.to(device), targets).float()  # (N, V)
        gold = labels[targets]  # (N,)
        loss_sum += float(torch.nn.functional.cross_entropy(logits, gold, reduction="sum"))
        correct += int((logits.argmax(-1) == gold).sum())
    n = max(heldout.n_targets, 1)
    return {"mlm_loss": loss_sum / n, "mlm_accuracy": correct / n}


def ours_logits(model):
    """Our model as an evaluator callable: its own MLM head gathers the targets."""

    def fn(ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = torch.where(targets, torch.zeros_like(ids), torch.full_like(ids, IGNORE_INDEX))  # (B, T)
        return model(ids, None, mask, labels).mlm_logits  # (N, V)

    return fn


def hf_logits(model):
    """A ``BertForMaskedLM`` as an evaluator callable: encoder, then its MLM head on the targets."""

    def fn(ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        hidden = model.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, T, H)
        return model.cls(hidden[targets])  # (N, V)

    return fn


# --------------------------------------------------------------------------------------------------
# data


def task_dirs(data_dir: Path) -> list[Path]:
    return [d for d in sorted(data_dir.iterdir()) if (d / "train.tsv").is_file()]


def reply_pairs_file(data_dir: Path, given: Path | None) -> Path:
    for p in ([given] if given else [data_dir / REPLY_PAIRS_DIR / "pairs.tsv", data_dir.parent / "pairs.tsv"]):
        if p.is_file():
            return p
    raise SystemExit(f"no reply pairs: pass --pairs (looked in {data_dir / REPLY_PAIRS_DIR} and {data_dir.parent})")


def dev_texts(data_dir: Path, n: int, seed: int, rules) -> list[str]:
    """A fixed sample of ``n`` normalised dev texts of every task folder (none of them is pre-trained on)."""
    import polars as pl

    from twilbert.text.normalize.apply import normalize_texts

    texts = []
    for d in task_dirs(data_dir):
        if (d / "dev.tsv").is_file():
            df = pl.read_csv(d / "dev.tsv", separator="\t", quote_char=None, infer_schema=False, has_header=True)
            texts += [t for t in df["TEXT"].to_list() if t]
    pick = np.random.default_rng(seed).permutation(len(texts))[:n]
    return [t for t in normalize_texts([texts[i] for i in sorted(pick)], rules) if t and t.strip()]


# --------------------------------------------------------------------------------------------------
# the two systems


def build_ours(args, spm: Path, shards: Path, out_dir: Path):
    from twilbert.model.config import MaskedLMConfig, ModelConfig, ROPConfig
    from twilbert.text.tokenizer import Tokenizer
    from twilbert.train.config import ImplConfig, TrainingConfig
    from twilbert.train.pretrain import Pretrainer

    H = args.hidden
    model = ModelConfig(
        vocab_size=Tokenizer.from_file(spm).vocab_size, max_positions=2 * args.max_len + 3,
        embedding_size=H, hidden_size=H, n_encoders=args.layers, n_heads=args.heads,
        input_dropout=0.0, output_dropout=0.0, attention_dropout=0.0, attention_bias=True,
        embedding_layer_norm=True, norm="post", layer_norm_eps=1e-12, mlm_transform=True, tie_mlm_decoder=True,
        masked_lm=MaskedLMConfig(type="token", budget=0.15), rop=ROPConfig(use_rop=False),
    )
    # schedule "constant" with no warm-up: the harness sets the lr of every step (lr_at)
    training = TrainingConfig(
        batch_size=args.batch_size, max_steps=10**9, optimizer="adamw", lr=args.lr, betas=(0.9, 0.999), eps=1e-6,
        weight_decay=0.01, schedule="constant", warmup_steps=0, accum_iters=1, clip_grad_norm=1.0, seed=args.seed,
        bucket_width=8,
    )
    impl = ImplConfig(device=args.device, precision="auto", compile=False, attention="sdpa", num_threads=args.threads,
                      num_workers=0, progress=False)
    trainer = Pretrainer(model_cfg=model, training=training, impl=impl, shards_dir=shards, tokenizer_path=spm,
                         out_dir=out_dir, progress=False)
    return trainer.setup()


class Ours:
    """``Pretrainer.train_step`` on the Pretrainer's own loader, epoch after epoch."""

    name = "ours"

    def __init__(self, trainer) -> None:
        self.trainer, self.epoch = trainer, 0
        self.batches = iter(trainer.loader(0))
        self.model = trainer.raw_model

    def step(self, lr: float) -> int:
        """One optimizer step at ``lr``; returns its real (non-pad) tokens."""
        mb = next(self.batches, None)
        if mb is None:
            self.epoch += 1
            self.batches = iter(self.trainer.loader(self.epoch))
            mb = next(self.batches)
        for g in self.trainer.optimizer.param_groups:
            g["lr"] = lr
        self.trainer.train_step([mb])
        return int(mb["n_real"])

    def logits_fn(self):
        return ours_logits(self.model)


class HF:
    """``BertForMaskedLM`` as its users pre-train it: random batches of tokenised rows, the MLM collator
    padding to the longest row, forward/backward/clip/AdamW."""

    name = "hf"

    def __init__(self, args, trainer, hf_tok) -> None:
        from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

        from twilbert.data.shards import ShardDataset
        from twilbert.hf.weights import hf_config_dict
        from twilbert.train.optim import build_optimizer, param_groups
        from twilbert.train.runtime import autocast

        cfg, tr = trainer.model_cfg, trainer.training
        torch.manual_seed(args.seed)
        self.model = BertForMaskedLM(BertConfig(**hf_config_dict(cfg))).to(trainer.device)  # the same model as ours
        self.device, self.amp, self.autocast = trainer.device, trainer.amp_dtype, autocast
        fused = {"fused": True} if self.device.type == "cuda" else {}
        self.opt = build_optimizer(tr.optimizer, param_groups(self.model, tr.weight_decay), lr=tr.lr, betas=tr.betas,
                                   eps=tr.eps, weight_decay=tr.weight_decay, **fused)
        self.clip = tr.clip_grad_norm
        self.collator = DataCollatorForLanguageModeling(tokenizer=hf_tok, mlm=True, mlm_probability=0.15)
        self.rows = ShardDataset(trainer.shards_dir, "train")
        self.batch_size, self.seed, self.epoch, self.cursor = tr.batch_size, args.seed, 0, 0
        self.perm = self._perm()

    def _perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.rows))

    def step(self, lr: float) -> int:
        if self.cursor >= len(self.perm):
            self.epoch, self.cursor = self.epoch + 1, 0
            self.perm = self._perm()
        idx = self.perm[self.cursor : self.cursor + self.batch_size]
        self.cursor += len(idx)
        ids, types, _ = self.rows.packed(idx)  # (B, T0): what a tokenised dataset hands the collator
        lengths = (ids != PAD_ID).sum(1)
        batch = self.collator([{"input_ids": ids[i, :n].tolist(), "token_type_ids": types[i, :n].tolist()}
                               for i, n in enumerate(lengths)])
        b = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.model.train()
        with self.autocast(self.device, self.amp):
            loss = self.model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return int(b["attention_mask"].sum())

    def logits_fn(self):
        return hf_logits(self.model)


# --------------------------------------------------------------------------------------------------
# the race


def race(systems: list, heldout: HeldOut, args, device: torch.device) -> list[dict]:
    """Interleaved slices until each system's own clock reaches the budget; returns the curve rows."""
    budget = args.minutes * 60.0
    points = [k / args.evals for k in range(args.evals + 1)]
    clock = dict.fromkeys((s.name for s in systems), 0.0)
    steps, tokens, next_eval = dict.fromkeys(clock, 0), dict.fromkeys(clock, 0), dict.fromkeys(clock, 0)
    curve: list[dict] = []

    def maybe_eval(s) -> None:
        """Evaluate once when the clock has passed the next point(s) (a slow step may pass several)."""
        crossed = next_eval[s.name]
        while crossed < len(points) and clock[s.name] >= points[crossed] * budget:
            crossed += 1
        if crossed > next_eval[s.name]:
            s.model.eval()
            m = evaluate(s.logits_fn(), heldout, device)
            curve.append({"system": s.name, "fraction": points[crossed - 1], "train_s": round(clock[s.name], 3),
                          "step": steps[s.name], "tokens": tokens[s.name], "heldout_mlm_loss": m["mlm_loss"],
                          "heldout_mlm_accuracy": m["mlm_accuracy"]})
            say(f"  {s.name:<5} {clock[s.name]:8.1f}s  step {steps[s.name]:>6}  held-out loss {m['mlm_loss']:.4f}  "
                f"acc {m['mlm_accuracy']:.4f}")
            next_eval[s.name] = crossed

    for s in systems:
        maybe_eval(s)
    rnd = 0
    while any(clock[s.name] < budget for s in systems):
        for s in systems if rnd % 2 == 0 else systems[::-1]:
            end = min(clock[s.name] + args.slice_s, budget)
            while clock[s.name] < end:
                lr = lr_at(clock[s.name] / budget, args.lr, args.warmup_frac)
                t0 = time.perf_counter()
                n = s.step(lr)
                sync(device)
                clock[s.name] += time.perf_counter() - t0
                steps[s.name] += 1
                tokens[s.name] += n
                maybe_eval(s)
        rnd += 1
    return curve


def plot(curve: list[dict], hf_final: float, path: Path) -> str:
    """Held-out loss against train seconds, both systems; returns the renderer used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, style in (("ours", "o-"), ("hf", "s-")):
        pts = [(r["train_s"], r["heldout_mlm_loss"]) for r in curve if r["system"] == name]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=name)
    ax.axhline(hf_final, color="grey", linestyle="--", linewidth=1, label="hf end of budget")
    ax.set_xlabel("training wall-clock of the system (s)")
    ax.set_ylabel("held-out MLM loss")
    ax.set_title("Time to quality: held-out MLM loss vs training time")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return f"matplotlib {matplotlib.__version__}"


def export_hf(hf: HF, hf_dir: Path, max_len: int, out_dir: Path) -> Path:
    """HF's model, saved beside its tokenizer in ``hf_dir``, as our pre-trained model dir through the project's importer."""
    from twilbert.hf.common import quiet_transformers
    from twilbert.hf.import_ import import_hf

    quiet_transformers().utils.logging.disable_progress_bar()
    hf.model.to("cpu").save_pretrained(str(hf_dir), safe_serialization=True)
    import_hf(hf_dir, out_dir, max_len=max_len)
    return out_dir


def run_downstream(args, inits: dict, spm: Path, rules) -> dict:
    from twilbert.config import to_dict

    from race_downstream import downstream  # here: the race alone does not load the fine-tuning code
    return downstream(inits, data_dir=args.data_dir, tasks=args.task_list, vocab_dir=spm.parent, rules_params=to_dict(rules),
                      workdir=args.workdir / "downstream", seeds=list(range(args.seeds)), device=args.device,
                      epochs=args.ft_epochs, max_len=args.max_len, batch_size=args.ft_batch_size, lr=args.ft_lr, log=say)


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"  # sd is None with one seed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=None, help="training budget per system (default 10; dry run 0.05)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--tasks", default=None, help=f"downstream tasks, comma list ('' skips; default {DEFAULT_TASKS}; dry run: "
                    "the sample's sentiment task)")
    ap.add_argument("--seeds", type=int, default=None, help="fine-tuning seeds per task and system (default 3)")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/twilbert-bench-race"))
    ap.add_argument("--out", type=Path, default=None, help="default: --workdir/race")
    ap.add_argument("--data-dir", type=Path, default=None, help="task folders (default ../shared/data)")
    ap.add_argument("--pairs", type=Path, default=None, help="reply pairs TSV (default: found beside the tasks)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads, both systems (0 = torch's default)")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on the bundled sample, seconds")
    ap.add_argument("--batch-size", type=int, default=None, help="sequences per step, both systems")
    ap.add_argument("--lr", type=float, default=None, help="peak lr (default 5e-4; dry run 1e-3)")
    ap.add_argument("--warmup-frac", type=float, default=0.1)
    ap.add_argument("--slice-s", type=float, default=None, help="seconds per interleaved slice (default 30)")
    ap.add_argument("--evals", type=int, default=5, help="held-out evaluations per budget (plus one at 0)")
    ap.add_argument("--heldout", type=int, default=None, help="held-out dev texts (default 1000)")
    ap.add_argument("--ft-epochs", type=int, default=None, help="fine-tuning epochs (default 1: 27 fine-tunes must fit 2 cores; raise it on a GPU)")
    ap.add_argument("--ft-batch-size", type=int, default=32)
    ap.add_argument("--ft-lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--downstream-only", action="store_true",
                    help="skip the race: fine-tune the checkpoints of the race whose result.json is in --out (after a failed downstream)")
    args = ap.parse_args()
    toy = args.dry_run
    p = PRESETS["toy" if toy else "race"]
    args.hidden, args.layers, args.heads, args.max_len = p["hidden"], p["layers"], p["heads"], p["max_len"]
    args.batch_size = args.batch_size or p["batch"]
    args.heldout = args.heldout or p["heldout"]
    args.minutes = args.minutes or (0.05 if toy else 10.0)
    args.lr = args.lr or (1e-3 if toy else 5e-4)
    args.slice_s = args.slice_s or (1.0 if toy else 30.0)
    args.seeds = args.seeds or (1 if toy else 3)
    args.ft_epochs = args.ft_epochs or 1
    args.data_dir = args.data_dir or (REPO / "data" / "sample" / "tasks" if toy else REPO.parent / "shared" / "data")
    if args.tasks is None:
        args.tasks = "sentiment" if toy else DEFAULT_TASKS
    args.task_list = [t for t in args.tasks.split(",") if t]
    args.out = args.out or args.workdir / "race"
    if not args.data_dir.is_dir():
        raise SystemExit(f"no task folders: {args.data_dir} is not a directory (pass --data-dir)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.downstream_only:
        if not (args.out / "result.json").is_file():
            raise SystemExit(f"--downstream-only: no {args.out / 'result.json'} (run the race first)")
        race_part = {k: v for k, v in json.loads((args.out / "result.json").read_text()).items()
                     if k != "downstream" and not k.startswith("f1_")}
        result = finish(args, race_part)
    else:
        result = run(args, vocab_size=p["vocab"])
    print(json.dumps(result, default=str))


def run(args, vocab_size: int) -> dict:
    import shutil

    import transformers

    from twilbert.text.normalize import NormalizeConfig
    from twilbert.text.tokenizer import Tokenizer

    train_files = [d / "train.tsv" for d in task_dirs(args.data_dir)]
    pairs = reply_pairs_file(args.data_dir, args.pairs)
    spm, shards = prepare_data(args.workdir, task_files=train_files, reply_pairs=pairs, vocab_size=vocab_size,
                               max_len=args.max_len, name="normalized-train")
    tok = Tokenizer.from_file(spm)
    rules = NormalizeConfig().rules
    texts = dev_texts(args.data_dir, args.heldout, args.seed, rules)
    heldout = heldout_set(tok.encode_batch(texts), max_len=args.max_len, vocab_size=tok.vocab_size, seed=args.seed)
    say(f"held-out: {heldout.n_texts} dev texts, {heldout.n_targets} masked targets")

    for stale in ("ours_run", "hf_model", "hf_transformers"):
        shutil.rmtree(args.out / stale, ignore_errors=True)
    trainer = build_ours(args, spm, shards, args.out / "ours_run")
    hf_tok_dir = args.out / "hf_transformers"
    from twilbert.hf.tokenizer import save_hf_tokenizer

    save_hf_tokenizer(spm, hf_tok_dir, 2 * args.max_len + 3)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(hf_tok_dir))
    ours, hf = Ours(trainer), HF(args, trainer, hf_tok)
    n_ours = trainer.raw_model.num_parameters()
    n_hf = sum(q.numel() for q in hf.model.parameters())
    say(f"race: {args.minutes:g} min per system, slices of {args.slice_s:g}s, {torch.get_num_threads()} threads, "
        f"{device_name(trainer.device)}; params ours {n_ours:,}, hf {n_hf:,}; {trainer.plan.n_rows:,} train rows")
    curve = race([ours, hf], heldout, args, trainer.device)

    budget = args.minutes * 60.0
    final = {name: [r for r in curve if r["system"] == name][-1] for name in ("ours", "hf")}
    ours_curve = [(r["train_s"], r["heldout_mlm_loss"]) for r in curve if r["system"] == "ours"]
    ratio = time_ratio(ours_curve, final["hf"]["heldout_mlm_loss"], budget)
    (args.out / "curve.json").write_text(json.dumps(curve, indent=1) + "\n")
    renderer = plot(curve, final["hf"]["heldout_mlm_loss"], args.out / "heldout_loss.png")

    trainer.sync_counts()
    ours_dir = trainer.save_final()
    hf_dir = export_hf(hf, hf_tok_dir, args.max_len, args.out / "hf_model")
    # the importer's copy must score as HF's own model did: the downstream runs start from what raced
    from twilbert.finetune.model import load_encoder

    imported = load_encoder(hf_dir).to(trainer.device).eval()
    imported_loss = evaluate(ours_logits(imported), heldout, trainer.device)["mlm_loss"]

    say(f"\n{'system':<6}{'steps':>8}{'real tok/s':>12}{'train s':>9}{'held-out loss':>15}{'accuracy':>10}")
    for name, r in final.items():
        say(f"{name:<6}{r['step']:>8}{r['tokens'] / r['train_s']:>12,.0f}{r['train_s']:>9.1f}"
            f"{r['heldout_mlm_loss']:>15.4f}{r['heldout_mlm_accuracy']:>10.4f}")
    say(f"ours reaches hf's end-of-budget loss at {ratio:.3f} of its budget" if ratio is not None
        else "ours never reaches hf's end-of-budget loss")

    result = {
        "device": device_name(trainer.device),
        "threads": torch.get_num_threads(),
        "minutes_per_system": args.minutes,
        "dry_run": args.dry_run,
        "ours_heldout_mlm_loss": final["ours"]["heldout_mlm_loss"],
        "hf_heldout_mlm_loss": final["hf"]["heldout_mlm_loss"],
        "ours_heldout_mlm_accuracy": final["ours"]["heldout_mlm_accuracy"],
        "hf_heldout_mlm_accuracy": final["hf"]["heldout_mlm_accuracy"],
        "hf_imported_heldout_mlm_loss": imported_loss,
        "time_ratio_to_hf_final_loss": ratio,
        "ours_steps": final["ours"]["step"],
        "hf_steps": final["hf"]["step"],
        "ours_tokens_per_s": final["ours"]["tokens"] / final["ours"]["train_s"],
        "hf_tokens_per_s": final["hf"]["tokens"] / final["hf"]["train_s"],
        "ours_params": n_ours,
        "hf_params": n_hf,
        "heldout_texts": heldout.n_texts,
        "heldout_targets": heldout.n_targets,
        "plot": str(args.out / "heldout_loss.png"),
        "plot_renderer": renderer,
        "curve": str(args.out / "curve.json"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
    }
    result.update(ours_dir=str(ours_dir), hf_dir=str(hf_dir), spm=str(spm))
    return finish(args, result)


def finish(args, result: dict) -> dict:
    """The downstream part on the checkpoints ``result`` names, then ``result.json`` (written before it
    too, so a failed fine-tune loses no race: ``--downstream-only`` resumes from that file)."""
    from twilbert.text.normalize import NormalizeConfig
    from twilbert.train.pretrain_log import finite_or_none

    result = finite_or_none(result)
    (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")  # Paths as text
    if args.task_list:
        inits = {"ours": Path(result["ours_dir"]), "hf": Path(result["hf_dir"]), "random": None}
        scores = run_downstream(args, inits, Path(result["spm"]), NormalizeConfig().rules)
        result["downstream"] = scores
        say(f"\n{'task':<28}{'ours':>16}{'hf':>16}{'random':>16}{'baseline':>10}")
        for task, by in scores.items():
            cells = [f"{_num(by[s]['mean'])}±{_num(by[s]['sd'])}" if s in by else "-" for s in ("ours", "hf", "random")]
            base = by.get("baseline", {}).get("macro_f1")
            say(f"{task:<28}{cells[0]:>16}{cells[1]:>16}{cells[2]:>16}{_num(base):>10}")
            for s in ("ours", "hf", "random"):
                if s in by:
                    result[f"f1_{task}_{s}"] = by[s]["mean"]
            result[f"f1_{task}_baseline"] = base
        (args.out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


if __name__ == "__main__":
    main()

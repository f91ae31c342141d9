"""The downstream half of the time-to-quality race (``benchmarks/time_to_quality.py``): every
pre-trained checkpoint fine-tuned with one recipe, beside the TF-IDF baseline, on the same splits.

A race is only fair if nothing but the initial weights differs between systems, so this module adds
no training code of its own: each (task, system, seed) is one call of the product's
:func:`twilbert.finetune.train.finetune_task` (best-dev epoch kept, test scored once with it), with
one :class:`FinetuningConfig` built from the caller's ``epochs``, ``lr``, ``batch_size`` and
``max_len`` (every other knob at the product's default), and the baseline is the report stage's
:func:`twilbert.finetune.baseline.run_baseline` on the splits the fine-tunes read.

* **tasks**: ``data_dir/<task>/{train,dev,test}.tsv`` (``ID TEXT CLASS``), single-label; the
  categories are the train split's labels, sorted; ``class_weights: auto`` as the sample tasks of
  params.yaml. Raw tweets are normalised by the product with the given rules (those of pre-training).
* **random init**: an init of ``None`` is ``path_load_weights: random`` with the architecture of the
  first pre-trained init; its weights come from the seed alone, never from a checkpoint.
* **outputs**: ``workdir/<task>/<system>/<seed>/{model,reports}``; once a system's seeds are done,
  only the best-dev seed keeps its model directory (loadable with ``twilbert.load``), chosen by
  :func:`twilbert.finetune.runs.choose_run` as the finetune stage chooses (test never looked at).

Usage: ``downstream({"ours": Path("models/pretrain/final"), "random": None}, data_dir=Path("../shared/data"),
tasks=["tass2020_sentiment_es"], vocab_dir=Path("models/vocab"), rules_params=params["normalize"]["rules"],
workdir=Path("/tmp/race"), seeds=[1, 2, 3], device="cpu", epochs=3, max_len=64, batch_size=32, lr=5e-5)``.
Run as a script, it measures the race's unit of cost: ``python benchmarks/race_downstream.py
[--task tass2020_sentiment_es --epochs 3 --hidden 256 --layers 4 --vocab-size 16000]`` trains a vocab
on the tasks' train texts, fine-tunes a random init once and prints a JSON line (seconds per fine-tune).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twilbert.config import ConfigError, from_dict  # noqa: E402
from twilbert.finetune.baseline import run_baseline  # noqa: E402
from twilbert.finetune.config import FinetuningConfig, TaskConfig  # noqa: E402
from twilbert.finetune.data import load_task  # noqa: E402
from twilbert.finetune.metrics import mean_sd  # noqa: E402
from twilbert.finetune.model import model_config_from_dict, resolve_pretrained_dir  # noqa: E402
from twilbert.finetune.runs import choose_run  # noqa: E402
from twilbert.finetune.task_files import ROW, read_frame  # noqa: E402
from twilbert.finetune.train import finetune_task  # noqa: E402
from twilbert.model.config import ModelConfig  # noqa: E402
from twilbert.text.normalize import EffectiveRules, NormalizeRules  # noqa: E402
from twilbert.train.checkpoint import read_config  # noqa: E402
from twilbert.train.config import ImplConfig  # noqa: E402

METRIC = "f1_macro"  # compute_metrics' name for test macro-F1 (the selection metric of these tasks)


# EmoEvent's test split holds one real 5,978-character text (line 93): above the product's default
# guard against merged rows (tasks.<name>.max_chars, 5,000), so the race raises it for every task.
MAX_CHARS = 10_000


def task_config(task_dir: Path) -> TaskConfig:
    """A single-label task over ``task_dir``'s three splits; categories = the train labels, sorted."""
    train, _ = read_frame(task_dir / "train.tsv", "\t")
    if "CLASS" not in train.columns:
        raise ConfigError(f"{task_dir / 'train.tsv'}: no CLASS column (columns: {', '.join(c for c in train.columns if c != ROW)})")
    labels = sorted(set(train["CLASS"].to_list()))
    return TaskConfig(train_file=str(task_dir / "train.tsv"), dev_file=str(task_dir / "dev.tsv"), test_file=str(task_dir / "test.tsv"),
                      categories={lab: i for i, lab in enumerate(labels)}, class_weights="auto", max_chars=MAX_CHARS)


def architecture(inits: dict[str, Path | None]) -> ModelConfig:
    """The model config of the first pre-trained init: a random init is built with it. (Not checked
    for equality with the others: their pre-training heads and masking may differ by design.)"""
    path = next((p for p in inits.values() if p is not None), None)
    if path is None:
        raise ConfigError("inits: a random init needs the architecture of a pre-trained one, and every init is None")
    directory = resolve_pretrained_dir(path)
    return model_config_from_dict(read_config(directory), str(directory / "config.json"))


def _rules(rules_params: dict) -> EffectiveRules:
    return from_dict(NormalizeRules, dict(rules_params), prefix="normalize.rules").effective()


def _finetune_system(name: str, task: TaskConfig, ft: FinetuningConfig, init: Path | None, system: str, *, seeds: list[int],
                     model_config: ModelConfig, vocab_dir: Path, rules: EffectiveRules, impl: ImplConfig, root: Path,
                     log: Callable[[str], Any]) -> dict[str, Any]:
    """One fine-tune per seed; keeps the best-dev seed's model directory and returns test macro-F1s."""
    results = {}
    for seed in seeds:
        out = root / str(seed)
        t0 = time.perf_counter()
        results[str(seed)] = finetune_task(
            name, task, ft, tokenizer_path=vocab_dir, rules=rules, model_out=out / "model", report_out=out / "reports",
            checkpoint_dir=out / "checkpoints", pretrained_dir=init, model_config=model_config if init is None else None,
            impl=impl, seed=seed, progress=False,
        )
        f1 = results[str(seed)]["test"][METRIC]
        log(f"downstream {name} {system} seed={seed}: test macro-F1 {f1:.4f} ({time.perf_counter() - t0:.1f} s)")
    chosen = choose_run(results)
    for label in results:  # the best-dev seed's model is the system's; the others' reports stay
        if label != chosen:
            shutil.rmtree(root / label / "model", ignore_errors=True)
    runs = [results[str(s)]["test"][METRIC] for s in seeds]
    mean, sd = mean_sd(runs)
    return {"mean": mean, "sd": sd, "runs": runs, "seeds": list(seeds), "chosen_seed": int(chosen),
            "model_dir": str(root / chosen / "model"), "train_seconds": sum(r["run_info"]["train_seconds"] for r in results.values())}


def downstream(inits: dict[str, Path | None], *, data_dir: Path, tasks: list[str], vocab_dir: Path, rules_params: dict, workdir: Path,
               seeds: list[int], device: str, epochs: int, max_len: int, batch_size: int, lr: float,
               log: Callable[[str], Any] = print, model_config: ModelConfig | None = None) -> dict[str, dict[str, Any]]:
    """Fine-tune every init on every task with one recipe, and fit the baseline on the same splits.

    Returns ``{task: {system: {"mean", "sd", "runs", "seeds", "chosen_seed", "model_dir",
    "train_seconds"}, "baseline": {"macro_f1", "dev_selection", "best_params", "model", "seconds"}}}``:
    test macro-F1, ``runs`` in the order of ``seeds``, ``sd`` the sample sd (None for one seed, as in
    the finetune stage's metrics.json). ``model_config``: the architecture of a None init when no
    init is pre-trained (:func:`architecture` otherwise).
    """
    if not seeds:
        raise ConfigError("seeds: at least one seed")
    if "baseline" in inits:
        raise ConfigError("inits.baseline: the name of the TF-IDF baseline's entry in the result; name the system otherwise")
    if model_config is None and any(p is None for p in inits.values()):
        model_config = architecture(inits)
    rules = _rules(rules_params)
    impl = ImplConfig(device=device, progress=False)
    out: dict[str, dict[str, Any]] = {}
    for name in tasks:
        task = task_config(Path(data_dir) / name)
        splits = load_task(task, name=name, warn=False)  # the rows the fine-tunes use (each warns of the quarantined ones)
        base = run_baseline(task, rules=rules, splits=splits, seed=seeds[0], name=name)
        out[name] = {"baseline": {"macro_f1": base["test"][METRIC], "dev_selection": base["dev_selection"], "best_params": base["best_params"],
                                  "model": base["model"], "seconds": base["seconds"]}}
        log(f"downstream {name} baseline: test macro-F1 {base['test'][METRIC]:.4f} ({base['seconds']:.1f} s)")
        for system, init in inits.items():
            ft = FinetuningConfig(epochs=epochs, lr=lr, batch_size=batch_size, max_len=max_len,
                                  path_load_weights="random" if init is None else None)
            out[name][system] = _finetune_system(name, task, ft, None if init is None else Path(init), system, seeds=list(seeds),
                                                 model_config=model_config, vocab_dir=Path(vocab_dir), rules=rules, impl=impl,
                                                 root=Path(workdir) / name / system, log=log)
    return out


# --------------------------------------------------------------------------------------------------
# the cost of one fine-tune (sizes the race's defaults)


def train_task_vocab(task_dirs: list[Path], rules: EffectiveRules, vocab_size: int, out_dir: Path) -> Path:
    """A vocabulary trained by the product's vocab core on the tasks' normalised train texts (one
    task's 4k tweets support ~7.8k pieces: a 16k vocabulary needs the seven tasks' train splits)."""
    from twilbert.finetune.inputs import normalize_column
    from twilbert.text.normalize import glued_placeholder_tokens, placeholder_tokens
    from twilbert.text.vocab import VocabConfig, train_vocab

    texts = [t for d in task_dirs for t in normalize_column(read_frame(d / "train.tsv", "\t")[0]["TEXT"].to_list(), rules)]
    return train_vocab(texts, VocabConfig(vocab_size=vocab_size, input_sentence_size=0), out_dir / "spm", placeholder_tokens(rules),
                       glued_placeholder_tokens(rules))


def main() -> None:
    import argparse
    import json
    import os
    import platform
    import tempfile

    import torch
    import yaml

    from twilbert.text.tokenizer import Tokenizer

    ap = argparse.ArgumentParser(description="Seconds per fine-tune of a random-init model on one real task (the race's unit of cost).")
    ap.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--task", default="tass2020_sentiment_es")
    ap.add_argument("--vocab-size", type=int, default=16000)
    ap.add_argument("--vocab-tasks", default="", help="comma list of tasks whose train texts train the vocab; default: every task in --data-dir")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", default="1", help="comma list")
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch's default")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rules_params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["normalize"]["rules"]
    rules = _rules(rules_params)
    with tempfile.TemporaryDirectory(prefix="race-downstream-") as tmp:
        t0 = time.perf_counter()
        vocab_dirs = [a.data_dir / t for t in a.vocab_tasks.split(",")] if a.vocab_tasks else sorted(
            d for d in a.data_dir.iterdir() if (d / "train.tsv").is_file())
        spm_path = train_task_vocab(vocab_dirs, rules, a.vocab_size, Path(tmp) / "vocab")
        vocab_seconds = time.perf_counter() - t0
        vocab = Tokenizer.from_file(spm_path).vocab_size
        cfg = ModelConfig(hidden_size=a.hidden, embedding_size=a.hidden, n_encoders=a.layers, n_heads=a.heads).resolved(
            vocab_size=vocab, max_len=a.max_len)
        seeds = [int(s) for s in a.seeds.split(",")]
        t0 = time.perf_counter()
        res = downstream({"random": None}, data_dir=a.data_dir, tasks=[a.task], vocab_dir=spm_path.parent, rules_params=rules_params,
                         workdir=Path(tmp) / "work", seeds=seeds, device=a.device, epochs=a.epochs, max_len=a.max_len,
                         batch_size=a.batch_size, lr=a.lr, model_config=cfg)
        total = time.perf_counter() - t0
    r, base = res[a.task]["random"], res[a.task]["baseline"]
    print(json.dumps({
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, {a.device}",
        "task": a.task, "vocab_size": vocab, "vocab_tasks": [d.name for d in vocab_dirs], "hidden": a.hidden, "layers": a.layers, "epochs": a.epochs, "max_len": a.max_len,
        "batch_size": a.batch_size, "vocab_seconds": round(vocab_seconds, 1), "baseline_seconds": base["seconds"],
        "seconds_per_finetune": round((total - base["seconds"]) / len(seeds), 1),
        "train_seconds_per_finetune": round(r["train_seconds"] / len(seeds), 1),
        "test_macro_f1_random": r["runs"], "test_macro_f1_baseline": base["macro_f1"],
    }))


if __name__ == "__main__":
    main()


__all__ = ["architecture", "downstream", "task_config", "train_task_vocab"]

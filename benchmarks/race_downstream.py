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


def task_config(task_dir: Path) -> TaskConfig:
    """A single-label task over ``task_dir``'s three splits; categories = the train labels, sorted."""
    train, _ = read_frame(task_dir / "train.tsv", "\t")
    if "CLASS" not in train.columns:
        raise ConfigError(f"{task_dir / 'train.tsv'}: no CLASS column (columns: {', '.join(c for c in train.columns if c != ROW)})")
    labels = sorted(set(train["CLASS"].to_list()))
    return TaskConfig(train_file=str(task_dir / "train.tsv"), dev_file=str(task_dir / "dev.tsv"), test_file=str(task_dir / "test.tsv"),
                      categories={lab: i for i, lab in enumerate(labels)}, class_weights="auto")


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
               log: Callable[[str], Any] = print) -> dict[str, dict[str, Any]]:
    """Fine-tune every init on every task with one recipe, and fit the baseline on the same splits.

    Returns ``{task: {system: {"mean", "sd", "runs", "seeds", "chosen_seed", "model_dir",
    "train_seconds"}, "baseline": {"macro_f1", "dev_selection", "best_params", "model", "seconds"}}}``:
    test macro-F1, ``runs`` in the order of ``seeds``, ``sd`` the sample sd (None for one seed, as in
    the finetune stage's metrics.json).
    """
    if not seeds:
        raise ConfigError("seeds: at least one seed")
    model_config = architecture(inits) if any(p is None for p in inits.values()) else None
    rules = _rules(rules_params)
    impl = ImplConfig(device=device, progress=False)
    out: dict[str, dict[str, Any]] = {}
    for name in tasks:
        task = task_config(Path(data_dir) / name)
        splits = load_task(task, name=name)  # the fine-tunes read the same files and quarantine the same rows
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


__all__ = ["architecture", "downstream", "task_config"]

"""The report stage's baseline with the text form chosen on dev, against normalised text only.

For each task, :func:`run_baseline` runs twice, as the report stage runs it (``params.yaml``'s
normalize rules and ``finetuning.seed``, the splits read inside the timing): ``before`` with
``forms=("normalized",)`` (the recipe before the text form became a knob) and ``after`` with both
forms. Real tasks are folders of ``../shared/data`` (single text, ``ID/TEXT/CLASS``, the categories
read from train); ``--sample`` adds the bundled sample tasks of ``params.yaml``. Wall times are the
best of ``--repeats`` runs, before and after interleaved, on whatever the machine is doing.

Usage: ``python benchmarks/baseline_text_form.py [--tasks hateval2019_es,tass2020_sentiment_es]
[--sample] [--repeats 1]``; a table on stderr, then one JSON line per task and a final summary line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

DEFAULT_TASKS = "hateval2019_es,tass2020_sentiment_es,emoevent_es,mexa3t2020_aggressiveness_es"


def real_task(folder: str):
    import polars as pl

    from twilbert.finetune.config import TaskConfig

    train = pl.read_csv(SHARED / folder / "train.tsv", separator="\t", quote_char=None, infer_schema=False)
    labels = sorted(set(train["CLASS"].to_list()))
    return TaskConfig(train_file=f"{folder}/train.tsv", dev_file=f"{folder}/dev.tsv", test_file=f"{folder}/test.tsv",
                      categories={lab: i for i, lab in enumerate(labels)}, max_chars=10_000)  # an EmoEvent test text has 5 978


def measure(name: str, task, root: Path, rules, seed: int, repeats: int) -> dict:
    from twilbert.finetune.baseline import run_baseline

    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(repeats):
        runs["before"].append(run_baseline(task, rules=rules, data_root=root, seed=seed, name=name, forms=("normalized",)))
        runs["after"].append(run_baseline(task, rules=rules, data_root=root, seed=seed, name=name))
    before, after = runs["before"][0], runs["after"][0]
    sel = before["selection_metric"]
    return {
        "task": name,
        "selection_metric": sel,
        "before_test_f1_macro": before["test"]["f1_macro"],
        "after_test_f1_macro": after["test"]["f1_macro"],
        "before_test_selection": before["test"].get(sel),
        "after_test_selection": after["test"].get(sel),
        "before_params": before["best_params"],
        "after_params": after["best_params"],
        "dev_best_by_form": {t: max(g["dev_selection"] for g in after["grid"] if g["params"]["text"] == t)
                             for t in dict.fromkeys(g["params"]["text"] for g in after["grid"])},
        "before_s": min(r["seconds"] for r in runs["before"]),
        "after_s": min(r["seconds"] for r in runs["after"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=DEFAULT_TASKS, help="comma list of ../shared/data folders ('' for none)")
    ap.add_argument("--sample", action="store_true", help="also the bundled sample tasks of params.yaml")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each side; wall time is the best")
    args = ap.parse_args()

    from pipeline.common import load

    p = load(REPO / "params.yaml")
    rules, seed = p.normalize.rules.effective(), p.finetuning.seed
    jobs = [(f"sample:{n}", t, REPO) for n, t in p.tasks.items()] if args.sample else []
    jobs += [(f, real_task(f), SHARED) for f in args.tasks.split(",") if f]
    rows = []
    for name, task, root in jobs:
        row = measure(name, task, root, rules, seed, args.repeats)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"{'task':34} {'F1 before':>9} {'F1 after':>9} {'Δ':>8} {'form':>10} {'s before':>8} {'s after':>8} {'ratio':>6}", file=sys.stderr)
    for r in rows:
        print(f"{r['task']:34} {r['before_test_f1_macro']:9.4f} {r['after_test_f1_macro']:9.4f} "
              f"{r['after_test_f1_macro'] - r['before_test_f1_macro']:+8.4f} {r['after_params']['text']:>10} "
              f"{r['before_s']:8.2f} {r['after_s']:8.2f} {r['after_s'] / r['before_s']:6.2f}", file=sys.stderr)
    print(json.dumps({"tasks": {r["task"]: {"before": r["before_test_f1_macro"], "after": r["after_test_f1_macro"],
                                           "text": r["after_params"]["text"], "time_ratio": r["after_s"] / r["before_s"]}
                                for r in rows}}))


if __name__ == "__main__":
    main()

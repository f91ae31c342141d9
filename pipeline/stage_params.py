"""The params each DVC stage depends on: one declaration, used by the stage's ``tracked(...)`` call
(what MLflow logs as params) and checked against ``dvc.yaml``'s ``params:`` (what reruns the stage) by
``tests/pipeline/test_stage_params.py``.

The rule is the section layout. Recipe sections (``data``, ``normalize``, ``vocab``,
``representation``, ``pairs``, ``model``, ``training``, ``evaluate``, ``finetuning``, ``tasks``)
change results, so a stage lists the ones it reads, and pre-training hashes its recipe in full into
the run fingerprint. ``impl`` (speed), ``run`` (bookkeeping) and ``tracking`` never appear here: a
faster device, another log interval or another MLflow experiment must neither rerun a stage nor
start a new run. ``{task}`` stands for the fine-tune stage's task (``${key}`` in dvc.yaml).

Kept where they are, each for one reason: ``evaluate.batch_size`` (the evaluation masks are drawn
batch by batch, so it changes the numbers); ``evaluate.report_examples`` (it changes the stage's
output, report.md); ``pairs.rows_per_shard`` (the shard layout is in the manifest pre-training
hashes); ``vocab.num_threads`` (it changes the learned pieces); ``impl.progress`` (already outside
the recipe); ``finetuning.seeds`` (one model per seed: results).
"""

from __future__ import annotations

STAGE_PARAMS: dict[str, tuple[str, ...]] = {
    "normalize": ("data", "normalize"),
    "vocab": ("vocab", "normalize.rules"),
    "pairs": ("pairs", "representation.max_len"),
    "pretrain": ("model", "training", "representation.max_len", "normalize.rules"),  # normalize.rules: recorded in final/pretrain.json
    "evaluate": ("evaluate",),
    "finetune": ("finetuning", "tasks.{task}", "normalize.rules"),
    "report": ("tasks", "normalize.rules", "finetuning.seed"),
}

# Never a stage's params: speed, bookkeeping and tracking.
NON_RECIPE_SECTIONS = ("impl", "run", "tracking")


def stage_params(stage: str, **names: str) -> tuple[str, ...]:
    """``STAGE_PARAMS[stage]`` with its placeholders filled (``task=...`` for ``finetune``)."""
    return tuple(key.format(**names) for key in STAGE_PARAMS[stage])


def recipe_sections(params) -> tuple[str, ...]:
    """Every section of ``params`` (a :class:`pipeline.params.Params`) but the non-recipe ones."""
    import dataclasses

    return tuple(f.name for f in dataclasses.fields(params) if f.name not in NON_RECIPE_SECTIONS)

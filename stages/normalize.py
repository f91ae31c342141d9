"""Stage `normalize`: raw TSV corpora -> normalised Parquet, rejects file and reconciled stats."""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.common import PARAMS_OPTION, fail, load, progress_enabled, run_guarded, tracked
from pipeline.outlock import lock_outputs
from pipeline.stage_params import stage_params


def main(
    params: Path = PARAMS_OPTION,
    out_dir: Path = typer.Option(Path("data/normalized"), help="Where pairs.parquet, tweets.parquet, rejects.tsv and stats.json go."),
) -> None:
    """Normalise tweets and replies (URLs, mentions, emoji, laughter...), quarantine malformed rows and
    apply the drop rules. Counts reconcile: rows in = rows out + dropped (by rule) + rejected (by reason)."""
    p = load(params)
    lock_outputs(out_dir)
    from twilbert.text.corpus import normalize_corpora

    root = params.parent  # params paths are relative to the params file (kept relative in stats)
    check_dvc_deps(params, [*p.data.pairs, *p.data.tweets])
    with tracked("normalize", params, p, stage_params("normalize"), fallback=Path("logs/tracking/normalize.jsonl")) as t:
        stats = run_guarded(
            normalize_corpora,
            pairs=[root / f for f in p.data.pairs],
            tweets=[root / f for f in p.data.tweets],
            cfg=p.normalize,
            out_dir=out_dir,
            header=p.data.header,
            max_chars=p.data.max_chars,
            progress=progress_enabled(p),
        )
        t.log_metrics({f"{k}.{m}": v for k in ("pairs", "tweets", "total") for m, v in stats[k].items() if isinstance(v, (int, float))})
        from dataclasses import asdict

        t.log_params({"normalize.effective_rules": asdict(p.normalize.rules.effective())})
        t.log_artifact(out_dir / "stats.json")
    for kind in ("pairs", "tweets"):
        for name in stats[kind]["empty_file_names"]:
            typer.echo(f"warning: {name}: no data rows (empty or header only); listed in params data.{kind}", err=True)
    tot = stats["total"]
    typer.echo(
        f"normalize: {tot['rows_in']} rows in -> {tot['rows_out']} out, {tot['rows_dropped']} dropped, "
        f"{tot['rows_rejected']} rejected (see {out_dir / 'rejects.tsv'})"
    )


def check_dvc_deps(params: Path, inputs: list[str]) -> None:
    """Under ``dvc repro`` (``DVC_STAGE`` is set), every corpus in ``data.pairs``/``data.tweets`` must be a
    dependency of this stage in dvc.yaml: DVC cannot read a list from params into ``deps``, so the stage
    depends on the sample's files and on the directory ``data/corpora/``, and a file outside them would
    never trigger a rerun when it changes (stale models, silently)."""
    import os

    stage = os.environ.get("DVC_STAGE")
    dvc_yaml = Path("dvc.yaml")
    if not stage or not dvc_yaml.is_file():
        return
    import yaml

    deps = ((yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages", {}).get(stage, {}) or {}).get("deps", [])
    # Compared as absolute paths: either side may be relative (to dvc.yaml's folder, or to params.yaml's)
    # or absolute (a corpus outside the repo).
    # A directory dep (data/corpora/) covers every file under it.
    listed = [os.path.abspath(d) for d in deps if isinstance(d, str)]
    missing = [f for f in inputs if not any(_under(os.path.abspath(params.parent / f), d) for d in listed)]
    if missing:
        fail(f"dvc.yaml: stages.{stage}.deps: add {', '.join(repr(m) for m in missing)} (the corpora of params "
             "data.pairs / data.tweets), or put them under data/corpora/ (README: Train on your own tweets), "
             "or DVC will not rerun the pipeline when they change")


def _under(path: str, dep: str) -> bool:
    return path == dep or path.startswith(dep.rstrip("/") + "/")

"""MLflow pyfunc model of a fine-tuned TWilBERT: log it with the finetune run, serve it with MLflow.

The finetune stage logs the model directory as the run's ``model`` (:func:`log_finetuned_model`) and
prints :func:`serve_command`. Then, from the repo root::

    make serve RUN=<run_id>     # mlflow models serve ... --env-manager local --host 127.0.0.1, first free port from 5001
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_records": [{"text": "qué buen día"}, {"text": "odio los lunes"}]}'

Input: a DataFrame with a ``text`` column (and ``aux`` for text-pair models). Output: a DataFrame,
one row per text, with the same fields as ``twilbert predict``: ``label`` + ``probabilities``
(``{label: p}``), or ``labels`` + ``probabilities`` (multi-label), or ``value`` (regression).

The pyfunc wraps :func:`twilbert.inference.load` on the logged directory, so serving normalises and
tokenises exactly as ``twilbert predict`` does. ``--env-manager local`` serves from this environment,
where ``twilbert`` and ``pipeline`` are installed (``pip install -e .``), so no ``code_paths`` are
logged. The logged requirements pin what this environment runs, for an ``--env-manager virtualenv``
rebuild (which would also need the package itself installed).
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

ARTIFACT = "model_dir"
MODEL_NAME = "model"
# distributions the pyfunc imports at serving time, pinned to this environment's versions
_REQUIREMENTS = ("mlflow", "torch", "sentencepiece", "polars", "numpy", "pandas", "safetensors", "emoji", "pyarrow", "tqdm", "protobuf")


class TWilBERTPyfunc(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame[text (, aux)]) -> DataFrame`` of prediction fields."""

    def load_context(self, context) -> None:
        from twilbert.inference import load

        self.predictor = load(context.artifacts[ARTIFACT])

    # The DataFrame hint: MLflow infers no schema from it (the explicit signature, _signature, validates),
    # and without a hint it prints an ANSI-coloured "Add type hints" warning into DVC's logs, which
    # no warnings filter can stop (it forces "once").
    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None):
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "text" not in df.columns:
            raise ValueError(f"input needs a 'text' column; got columns {list(df.columns)}")
        aux = df["aux"].astype(str).tolist() if "aux" in df.columns and self.predictor.text_pair else None
        batch_size = int((params or {}).get("batch_size", 64))
        rows = self.predictor.predict(df["text"].astype(str).tolist(), aux, batch_size=batch_size)
        return pd.DataFrame(rows, index=df.index)


def _signature(text_pair: bool):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    cols = [ColSpec("string", "text")] + ([ColSpec("string", "aux")] if text_pair else [])
    return ModelSignature(inputs=Schema(cols), params=ParamSchema([ParamSpec("batch_size", "long", 64)]))


def _requirements() -> list[str]:
    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def log_model(model_dir: str | Path, name: str = MODEL_NAME):
    """Log ``model_dir`` as a pyfunc model in the *active* MLflow run; returns the ModelInfo."""
    import pandas as pd

    from twilbert.finetune.model_dir import read_finetuned_config

    config = read_finetuned_config(model_dir)
    pair = bool(config.get("text_pair"))
    example = pd.DataFrame({"text": ["qué buen día"], **({"aux": ["gracias"]} if pair else {})})
    with warnings.catch_warnings():
        # MLflow nags about type hints on predict(); the explicit signature above does that job
        warnings.filterwarnings("ignore", message=".*type hints.*")
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),  # models from code: no pickle
            artifacts={ARTIFACT: str(model_dir)},
            signature=_signature(pair),
            input_example=example,  # also written as serving_input_example.json for `mlflow models serve`
            pip_requirements=_requirements(),  # explicit: skips MLflow's slow requirement inference
        )


def log_finetuned_model(tracker, model_dir: str | Path) -> str | None:
    """Log ``model_dir`` as ``model`` in the Tracker's run (``runs:/<run_id>/model``); returns that URI.

    Never raises: tracking must not fail a stage that has already trained and saved its model. A
    disabled or failed tracker is skipped; an MLflow error becomes a warning.
    """
    if tracker is None or not getattr(tracker, "active", False) or tracker.run_id is None:
        return None
    from pipeline.tracking import _with_deadline, call_deadline

    previous_uri = mlflow.get_tracking_uri()

    def log() -> None:
        mlflow.set_tracking_uri(tracker.client.tracking_uri)
        with mlflow.start_run(run_id=tracker.run_id):
            log_model(model_dir)

    try:
        # Bounded like every other tracking call: a store that stops answering must not hang the stage
        # (copying the model's artifacts takes seconds, hence at least two minutes).
        _with_deadline(log, max(call_deadline(), 120.0), "logging the pyfunc model")
        return f"runs:/{tracker.run_id}/{MODEL_NAME}"
    except Exception as exc:  # noqa: BLE001 - tracking must never kill the stage
        warnings.warn(f"MLflow: could not log the pyfunc model ({type(exc).__name__}: {exc}); the model directory {model_dir} is intact", stacklevel=2)
        return None
    finally:
        mlflow.set_tracking_uri(previous_uri)


def serve_command(model_uri: str) -> str:
    """The command that serves ``runs:/<run_id>/model`` as the README documents it: ``make serve`` puts the
    venv on PATH (MLflow starts uvicorn through PATH) and takes the first free port from 5001, never the
    MLflow UI's 5000."""
    run_id = model_uri.removeprefix("runs:/").split("/", 1)[0]
    return f"make serve RUN={run_id}"


__all__ = ["TWilBERTPyfunc", "log_finetuned_model", "log_model", "serve_command"]

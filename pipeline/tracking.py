"""MLflow tracking for pipeline stages.

Conventions (anchors §D.3–D.5, environment notes):
* The store is an **absolute** ``sqlite:///<repo>/mlflow.db``, overridable by ``MLFLOW_TRACKING_URI``.
  Under ``dvc exp run --temp/--queue`` the stage runs in a copy under ``<repo>/.dvc/tmp/exps/...``; a
  relative URI would land in that copy and be lost, so the repo root is recovered from the path.
* A fresh SQLite store breaks when two processes create its tables at once (3 of 3 trials in the
  environment notes), so the first initialisation happens under a file lock.
* One **parent run per pipeline run**: every stage of one ``dvc repro`` / ``dvc exp run`` shares a key
  (``DVC_EXP_NAME`` when DVC sets it, else a hash of params.yaml + git HEAD), finds or creates the parent
  under the lock, and logs itself as a nested child run named after the stage.
* Tracking must never kill a long run (issue: reliability): every MLflow call goes through
  :class:`Tracker`, which batches metrics, and on any store error warns once and writes what it could not
  send to a local JSONL file next to the stage outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

PARENT_TAG = "twilbert.pipeline_key"


def repo_root(start: Path | None = None) -> Path:
    """The project root, seen through DVC's temporary experiment copies."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return here


def tracking_uri(root: Path | None = None) -> str:
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{repo_root(root) / 'mlflow.db'}"


def _lock_path(uri: str) -> Path:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :] + ".lock")
    return repo_root() / ".mlflow-init.lock"


def pipeline_key(params_path: Path) -> tuple[str, str]:
    """(key, human name) shared by all stages of one pipeline run."""
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        return f"dvc-exp:{exp}", exp
    h = hashlib.sha256()
    try:
        h.update(params_path.read_bytes())
    except OSError:
        pass
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=params_path.parent, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    h.update(head.encode())
    key = h.hexdigest()[:12]
    return f"repro:{key}", f"repro-{key[:8]}"


def _git_sha(cwd: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _to_param_str(v: Any) -> str:
    # MLflow params are write-once strings; normalise so 7 and 7.0 never clash (anchors §D.4).
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)[:6000]
    return str(v)[:6000]


class Tracker:
    """Fail-safe, batching facade over an MLflow run. A no-op (plus local JSONL) when disabled."""

    def __init__(self, run_id: str | None, client: Any | None, fallback: Path | None, flush_every_s: float = 5.0):
        self.run_id = run_id
        self.client = client
        self.fallback = fallback
        self.flush_every_s = flush_every_s
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self._failed = client is None
        self._warned = False

    # --- internals -----------------------------------------------------------------------------
    def _fail(self, what: str, exc: Exception) -> None:
        self._failed = True
        if not self._warned:
            self._warned = True
            where = f"; metrics are written to {self.fallback}" if self.fallback else ""
            warnings.warn(f"MLflow tracking failed during {what} ({type(exc).__name__}: {exc}){where}", stacklevel=3)

    def _local(self, record: dict) -> None:
        if self.fallback is None:
            return
        try:
            self.fallback.parent.mkdir(parents=True, exist_ok=True)
            with open(self.fallback, "a", encoding="utf-8") as f:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError:
            pass

    # --- API -----------------------------------------------------------------------------------
    @property
    def active(self) -> bool:
        return not self._failed

    def log_params(self, params: dict[str, Any]) -> None:
        if self._failed:
            self._local({"params": {k: _to_param_str(v) for k, v in params.items()}})
            return
        from mlflow.entities import Param

        items = [Param(k, _to_param_str(v)) for k, v in params.items()]
        try:
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])
        except Exception as exc:  # noqa: BLE001 - tracking must never kill the run
            self._fail("log_params", exc)
            self._local({"params": {p.key: p.value for p in items}})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Buffered: sent in one batch every ``flush_every_s`` seconds (log_metric costs ~7 ms each)."""
        ts = int(time.time() * 1000)
        clean = {k: float(v) for k, v in metrics.items() if v is not None}
        if self._failed:
            self._local({"step": step, "timestamp": ts, "metrics": clean})
            return
        from mlflow.entities import Metric

        self._pending.extend(Metric(k, v, ts, step or 0) for k, v in clean.items())
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._failed:
            for m in pending:
                self._local({"step": m.step, "timestamp": m.timestamp, "metrics": {m.key: m.value}})
            return
        try:
            for i in range(0, len(pending), 1000):
                self.client.log_batch(self.run_id, metrics=pending[i : i + 1000])
        except Exception as exc:  # noqa: BLE001
            self._fail("log_metrics", exc)
            for m in pending:
                self._local({"step": m.step, "timestamp": m.timestamp, "metrics": {m.key: m.value}})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self._failed or not Path(path).exists():
            return
        try:
            if Path(path).is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)
        except Exception as exc:  # noqa: BLE001
            self._fail("log_artifact", exc)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._failed:
            return
        try:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, str(v))
        except Exception as exc:  # noqa: BLE001
            self._fail("set_tags", exc)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        if self._failed or self.run_id is None:
            return
        try:
            self.client.set_terminated(self.run_id, status)
        except Exception as exc:  # noqa: BLE001
            self._fail("end", exc)


def _init_store(uri: str, experiment: str) -> tuple[Any, str]:
    """Create tables and the experiment once, serialised across processes by a file lock."""
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    lock = _lock_path(uri)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock), timeout=300):
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    return client, exp_id


def _find_or_create_parent(client: Any, exp_id: str, uri: str, key: str, name: str, params_flat: dict, root: Path) -> str:
    from filelock import FileLock

    with FileLock(str(_lock_path(uri)), timeout=300):
        found = client.search_runs([exp_id], filter_string=f"tags.`{PARENT_TAG}` = '{key}'", max_results=1)
        if found:
            return found[0].info.run_id
        run = client.create_run(exp_id, run_name=name, tags={PARENT_TAG: key, "mlflow.source.git.commit": _git_sha(root)})
    t = Tracker(run.info.run_id, client, None)
    t.log_params(params_flat)
    return run.info.run_id


@contextmanager
def stage_run(
    stage: str,
    params_path: Path,
    params_flat: dict[str, Any],
    *,
    all_params_flat: dict[str, Any] | None = None,
    experiment: str = "twilbert",
    enabled: bool = True,
    fallback: Path | None = None,
    parent_run_id: str | None = None,
) -> Iterator[Tracker]:
    """Open a nested MLflow run for one stage (or a no-op Tracker when disabled/unreachable).

    ``params_flat`` are the keys this stage reads (logged on the stage run); ``all_params_flat`` is the
    whole params tree, logged once on the parent run so every experiment carries every key.
    """
    if not enabled or os.environ.get("TWILBERT_TRACKING", "").lower() in {"0", "off", "false"}:
        tracker = Tracker(None, None, fallback)
        tracker._warned = True  # disabled on purpose: no warning
        yield tracker
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri(params_path.parent)
    root = repo_root(params_path.parent)
    tracker: Tracker
    try:
        client, exp_id = _init_store(uri, experiment)
        if parent_run_id is None:
            key, name = pipeline_key(params_path)
            parent_run_id = _find_or_create_parent(client, exp_id, uri, key, name, all_params_flat or params_flat, root)
        tags = {"mlflow.parentRunId": parent_run_id, "twilbert.stage": stage}
        if os.environ.get("DVC_EXP_NAME"):
            tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
        if os.environ.get("DVC_EXP_BASELINE_REV"):
            tags["dvc.baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
        run = client.create_run(exp_id, run_name=stage, tags=tags)
        tracker = Tracker(run.info.run_id, client, fallback)
        tracker.log_params(params_flat)
    except Exception as exc:  # noqa: BLE001 - an unreachable store must not stop the stage
        tracker = Tracker(None, None, fallback)
        tracker._fail("initialisation", exc)
    status = "FINISHED"
    try:
        yield tracker
    except BaseException:
        status = "FAILED"
        raise
    finally:
        tracker.end(status)


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)

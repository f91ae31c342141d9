"""MLflow tracking for pipeline stages: one child run per stage under a pipeline parent (and a grid
parent for `dvc exp run` grids), an absolute sqlite store in the project root, initialisation under a
file lock, and a tracker that never kills or stalls a run (deadlines, an offline JSONL, replay).

The conventions and why each exists: docs/tracking.md. Environment knobs: ``TWILBERT_TRACKING=off``,
``TWILBERT_TRACKING_TIMEOUT`` (probe, s), ``TWILBERT_TRACKING_DEADLINE`` (init and each call, s).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import urllib.error
import urllib.parse
import urllib.request
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

PARENT_TAG = "twilbert.pipeline_key"
GRID_TAG = "twilbert.grid"
KIND_TAG = "twilbert.run_kind"  # grid | pipeline | stage
STAGE_TAG = "twilbert.stage"
FAILED_STAGE_TAG = "twilbert.failed_stage"
FAILED_LIST_TAG = "twilbert.failed_stages"
VARIANT_TAG = "twilbert.variant"
# MLflow 3's UI opens an experiment without this tag as a GenAI one (Overview / Traces, empty);
# "custom_model_development" ("Machine learning") opens it on its runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# Their metrics are the pipeline's results: copied onto the pipeline parent, so that the collapsed parent
# row and the compare views show them per variant without opening the stage runs.
SUMMARY_STAGES = ("evaluate", "report")
# MLflow 3.17's UI takes the experiment kind from its GenAI / Model training switch (the URL's
# `workflowType`, else the browser's localStorage, else GenAI), not from the tag above: only a URL can
# open a fresh browser on the runs. No server flag, env var or tag sets it (checked in the 3.17.2 bundle).
UI_QUERY = "workflowType=machine_learning"
# The runs table's metric columns: a saved view ("Views" menu, MLflow >= 3.15), stored by the UI as an
# experiment tag `mlflow.sharedViewState.<id>` = {"name", "createdAt", "updatedAt", "state": JSON text}
# and opened by `?viewStateShareKey=<id>`. The UI has no other per-experiment default for columns.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "twilbert-results"
VIEW_NAME = "TWilBERT results"
HEADLINE_METRICS = ("mlm_accuracy", "pseudo_perplexity")  # evaluate's, on the pipeline parent
STAGE_METRICS = ("test.f1_macro",)  # a finetune stage run's own, seen when a parent row is expanded

_EXPS = (".dvc", "tmp", "exps")
# MLflow's "Downloading artifacts" tqdm bars (logging a pyfunc model loads it back) are carriage-return
# bars in a DVC log and say nothing a stage's own lines do not; MLflow reads this when it downloads.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
_MEMORY_CAP = 200_000  # records kept for replay when there is no fallback file


# --- where the store is ----------------------------------------------------------------------------
def _temp_copy_root(here: Path) -> Path | None:
    """The original repo when ``here`` lies in a DVC experiment copy (``<repo>/.dvc/tmp/exps/...``)."""
    parts = here.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == _EXPS:
            return Path(*parts[:i])
    return None


def repo_root(start: Path | None = None) -> Path:
    """The project root: the original repo through DVC's temporary experiment copies.

    From ``start`` (default: the working directory): a path inside ``<repo>/.dvc/tmp/exps/`` gives
    ``<repo>``; then, only when ``start`` is not given, ``DVC_ROOT`` (DVC sets it for every stage: the
    workspace for ``dvc repro``, the original repo for queued/temp experiments); then the nearest folder
    holding ``.dvc/``, then ``.git``; else ``start`` itself.
    """
    here = (start or Path.cwd()).resolve()
    orig = _temp_copy_root(here)
    if orig is not None:
        return orig
    if start is None and os.environ.get("DVC_ROOT") and Path(os.environ["DVC_ROOT"]).is_dir():
        return Path(os.environ["DVC_ROOT"]).resolve()
    for d in (here, *here.parents):
        if (d / ".dvc").is_dir():
            return d
    for d in (here, *here.parents):
        if (d / ".git").exists():
            return d
    return here


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` (a relative sqlite path taken from the project root) or the default
    absolute ``sqlite:///<repo root>/mlflow.db``; ``root`` is where the root search starts (default cwd)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        if env.startswith("sqlite:///") and not env.startswith("sqlite:////"):
            rel = env[len("sqlite:///") :]
            if rel and not rel.startswith(":memory:"):
                return f"sqlite:///{repo_root(root) / rel}"
        return env
    return f"sqlite:///{repo_root(root) / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and not path.startswith(":memory:") else None


def artifact_root(uri: str) -> str | None:
    """Absolute artifact root for experiments created on a sqlite store: ``<db folder>/mlartifacts``.
    Other stores (an MLflow server) choose their own; ``None``."""
    db = _sqlite_path(uri)
    return str(db.parent.resolve() / "mlartifacts") if db is not None else None


def _lock_path(uri: str) -> Path:
    db = _sqlite_path(uri)
    if db is not None:
        return Path(str(db) + ".lock")
    return Path(tempfile.gettempdir()) / f"twilbert-mlflow-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"


# --- bounds ----------------------------------------------------------------------------------------
def _env_seconds(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, ""))
        return value if value > 0 else default
    except ValueError:
        return default


def probe_timeout() -> float:
    return _env_seconds("TWILBERT_TRACKING_TIMEOUT", 5.0)


def call_deadline() -> float:
    return _env_seconds("TWILBERT_TRACKING_DEADLINE", 60.0)


class TrackingUnavailable(RuntimeError):
    """The store did not answer within its bound."""


def _with_deadline(fn: Callable[[], Any], deadline_s: float, what: str = "MLflow call") -> Any:
    """Run ``fn`` in a daemon thread and wait at most ``deadline_s``; a late thread is abandoned
    (a daemon: it never blocks interpreter exit) and :class:`TrackingUnavailable` is raised."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, daemon=True, name="twilbert-tracking").start()
    if not done.wait(deadline_s):
        raise TrackingUnavailable(f"{what}: no answer within {deadline_s:g} s (TWILBERT_TRACKING_DEADLINE)")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def probe(uri: str, timeout: float | None = None) -> None:
    """Raise :class:`TrackingUnavailable` unless the store answers within ``timeout`` seconds.

    sqlite: the folder can be created and a write lock (``BEGIN IMMEDIATE``) is granted, so a store held
    under an exclusive lock fails here instead of in MLflow's 20 s busy wait per query. http(s): any HTTP
    answer to ``GET <uri>/health``, with no retries. Other URIs with a host: a TCP connection.
    """
    timeout = probe_timeout() if timeout is None else timeout
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "sqlite":
        import sqlite3

        db = _sqlite_path(uri)
        if db is None:
            return
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingUnavailable(f"{db.parent}: cannot create the store's folder ({exc})") from exc
        if not db.exists():
            return
        try:
            con = sqlite3.connect(str(db), timeout=timeout)
            try:
                con.execute("BEGIN IMMEDIATE")
                con.rollback()
            finally:
                con.close()
        except sqlite3.Error as exc:
            raise TrackingUnavailable(f"{db}: {exc} (waited {timeout:g} s, TWILBERT_TRACKING_TIMEOUT)") from exc
    elif scheme in {"http", "https"}:
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - the configured store
                pass
        except urllib.error.HTTPError:
            return  # the server answered
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingUnavailable(f"{uri}: unreachable ({reason}; waited at most {timeout:g} s)") from exc
    else:
        parsed = urllib.parse.urlparse(uri)
        defaults = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
        port = parsed.port if parsed.hostname else None
        port = port or defaults.get(scheme.split("+", 1)[0])
        if parsed.hostname and port:
            try:
                socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            except OSError as exc:
                raise TrackingUnavailable(f"{parsed.hostname}:{port}: unreachable ({exc})") from exc


def ui_url(root: Path | None = None, host: str = "http://127.0.0.1:5000") -> str:
    """Where the MLflow UI shows this project's runs: the experiment of params.yaml's ``tracking.experiment``
    (looked up in the sqlite store, without importing MLflow), opened on its runs table, in the results
    view once a pipeline has saved it."""
    import sqlite3

    import yaml

    root = repo_root(root)
    try:
        tracking = (yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8")) or {}).get("tracking") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        tracking = {}
    name, db = str(tracking.get("experiment") or "twilbert"), _sqlite_path(tracking_uri(root))
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            row = con.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchone()
            view = row and con.execute(
                "SELECT 1 FROM experiment_tags WHERE experiment_id = ? AND key = ?", (row[0], VIEW_TAG_PREFIX + VIEW_ID)
            ).fetchone()
        finally:
            con.close()
    except (sqlite3.Error, TypeError):
        row = view = None
    if not row:
        return f"{host}/#/experiments?{UI_QUERY}"
    if view:
        return f"{host}/#/experiments/{row[0]}/runs?{UI_QUERY}&viewStateShareKey={VIEW_ID}"
    return f"{host}/#/experiments/{row[0]}?{UI_QUERY}"


# --- pipeline identity -----------------------------------------------------------------------------
def pipeline_key(params_path: Path) -> tuple[str, str]:
    """(key, human name) shared by all stages of one pipeline run."""
    exp = os.environ.get("DVC_EXP_NAME")
    if exp:
        base = os.environ.get("DVC_EXP_BASELINE_REV", "")
        # Experiment names are unique per baseline commit, not globally.
        return (f"dvc-exp:{base[:12]}:{exp}" if base else f"dvc-exp:{exp}"), exp
    h = hashlib.sha256()
    try:
        h.update(params_path.read_bytes())
    except OSError:
        pass
    h.update(_git_sha(params_path.parent).encode())
    key = h.hexdigest()[:12]
    return f"repro:{key}", f"repro-{key[:8]}"


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short_keys(keys: list[str], universe: list[str]) -> dict[str, str]:
    """Each dotted key shortened to its shortest suffix that no other key of ``universe`` ends with."""
    short = {}
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts) - 1, -1, -1):
            suffix = ".".join(parts[i:])
            if sum(1 for u in universe if u == suffix or u.endswith("." + suffix)) == 1:
                break
        short[key] = suffix
    return short


def variant_name(params_path: Path, max_len: int = 60) -> str:
    """What sets this pipeline run apart, for run names: the params that differ from the baseline commit's
    params.yaml (``DVC_EXP_BASELINE_REV``, else HEAD), shortened (``n_encoders=6``); else the DVC
    experiment name; else ``""`` (a plain ``dvc repro`` of the committed params).

    ``dvc exp run -S`` edits params.yaml in place, so this diff is exactly what ``-S`` set. The
    ``tracking`` section is bookkeeping and never counts.
    """
    import yaml

    exp = os.environ.get("DVC_EXP_NAME", "")
    rev = os.environ.get("DVC_EXP_BASELINE_REV") or "HEAD"
    try:
        now = _flatten(yaml.safe_load(params_path.read_text(encoding="utf-8")) or {})
        out = subprocess.run(["git", "show", f"{rev}:./{params_path.name}"], cwd=params_path.parent,
                             capture_output=True, text=True, timeout=10)
        if out.returncode != 0:
            return exp
        base = _flatten(yaml.safe_load(out.stdout) or {})
    except (OSError, subprocess.SubprocessError, yaml.YAMLError):
        return exp
    changed = [k for k in now if not k.startswith("tracking.") and _to_param_str(now[k]) != _to_param_str(base.get(k))]
    if not changed:
        return exp
    short = _short_keys(changed, list(now))
    text = ", ".join(f"{short[k]}={_to_param_str(now[k])}" for k in changed)
    return text if len(text) <= max_len else text[: max_len - 1] + "…"


def grid_name(group: str | None = None) -> str | None:
    """``TWILBERT_GRID``, else ``group`` (params ``tracking.group``), else ``exp-<baseline rev>`` inside
    ``dvc exp run``; ``None`` (no grid) for a plain ``dvc repro``."""
    name = os.environ.get("TWILBERT_GRID", "").strip() or str(group or "").strip()
    if not name:
        base = os.environ.get("DVC_EXP_BASELINE_REV", "").strip()
        name = f"exp-{base[:7]}" if base else ""
    return name.replace("'", "_").replace("`", "_") or None  # it goes into a search filter


def _git_sha(cwd: Path) -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _nonzero_rank() -> bool:
    rank = os.environ.get("RANK")
    return rank is not None and rank.strip() not in {"", "0"}


def _to_param_str(v: Any) -> str:
    # MLflow params are write-once strings; normalise so 7 and 7.0 never clash.
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)[:6000]
    return str(v)[:6000]


# --- the tracker -----------------------------------------------------------------------------------
class Tracker:
    """Fail-safe, batching facade over an MLflow run. A no-op (plus local JSONL) when disabled.

    Every MLflow call is bounded by ``deadline_s`` (default ``TWILBERT_TRACKING_DEADLINE``). After the
    first failure everything goes to ``fallback`` (JSONL; in memory when ``fallback`` is None), from
    where :meth:`replay` can send it once the store is back.
    """

    def __init__(
        self,
        run_id: str | None,
        client: Any | None,
        fallback: Path | None,
        flush_every_s: float = 5.0,
        *,
        deadline_s: float | None = None,
    ):
        self.run_id = run_id
        self.client = client
        self.fallback = fallback
        self.flush_every_s = flush_every_s
        self.deadline_s = call_deadline() if deadline_s is None else deadline_s
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()
        self._failed = client is None
        self._warned = False
        self._replay_from: int | None = None  # fallback offset where this tracker's unsent records start
        self._memory: list[dict] = []
        # Concurrent stages may share one fallback file: each record names its writer, so a replay
        # sends only this tracker's records.
        self._writer = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._discard = False  # tracking switched off: nothing is kept, nothing written

    # --- internals -----------------------------------------------------------------------------
    def _call(self, fn: Callable[[], Any], what: str, deadline_s: float | None = None) -> Any:
        return _with_deadline(fn, self.deadline_s if deadline_s is None else deadline_s, what)

    def _fail(self, what: str, exc: BaseException) -> None:
        if self._replay_from is None:
            try:
                self._replay_from = self.fallback.stat().st_size if self.fallback is not None else 0
            except OSError:
                self._replay_from = 0
        self._failed = True
        if not self._warned:
            self._warned = True
            where = f"; metrics are written to {self.fallback}" if self.fallback else "; metrics are kept in memory"
            warnings.warn(
                f"MLflow tracking failed during {what} ({type(exc).__name__}: {exc}){where}, and replayed to MLflow "
                "if the store is back when the stage ends",
                stacklevel=3,
            )

    def _local(self, record: dict) -> None:
        if self._discard:
            return
        if self.fallback is None:
            if len(self._memory) < _MEMORY_CAP:
                self._memory.append(record)
            return
        line = (json.dumps({**record, "writer": self._writer}, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self.fallback.parent.mkdir(parents=True, exist_ok=True)
            # one write(2) on an O_APPEND descriptor: concurrent writers' lines never interleave
            fd = os.open(self.fallback, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError:
            pass

    def _local_metrics(self, metrics: list[Any]) -> None:
        groups: dict[tuple, dict[str, float]] = {}
        for m in metrics:
            groups.setdefault((m.step, m.timestamp), {})[m.key] = m.value
        for (step, ts), values in groups.items():
            self._local({"step": step, "timestamp": ts, "metrics": values})

    def _unsent(self) -> Iterator[dict]:
        if self._replay_from is None:
            return
        if self.fallback is None:
            yield from self._memory
            return
        try:
            with open(self.fallback, "rb") as f:
                f.seek(self._replay_from)
                for line in f:
                    try:
                        record = json.loads(line)
                    except ValueError:
                        continue
                    if isinstance(record, dict) and record.pop("writer", self._writer) == self._writer:
                        yield record
        except OSError:
            return

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

        def send() -> None:
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[i : i + 100])

        try:
            self._call(send, "log_params")
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
            self._local_metrics(pending)
            return

        def send() -> None:
            for i in range(0, len(pending), 1000):
                self.client.log_batch(self.run_id, metrics=pending[i : i + 1000])

        try:
            self._call(send, "log_metrics")
        except Exception as exc:  # noqa: BLE001
            self._fail("log_metrics", exc)
            self._local_metrics(pending)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if not Path(path).exists():
            return
        if self._failed:
            self._local({"artifact": str(Path(path).resolve()), "artifact_path": artifact_path})
            return

        def send() -> None:
            if Path(path).is_dir():
                self.client.log_artifacts(self.run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(self.run_id, str(path), artifact_path)

        try:
            self._call(send, "log_artifact", max(self.deadline_s, 300.0))
        except Exception as exc:  # noqa: BLE001
            self._fail("log_artifact", exc)
            self._local({"artifact": str(Path(path).resolve()), "artifact_path": artifact_path})

    def set_tags(self, tags: dict[str, str]) -> None:
        if self._failed:
            self._local({"tags": {k: str(v) for k, v in tags.items()}})
            return

        def send() -> None:
            for k, v in tags.items():
                self.client.set_tag(self.run_id, k, str(v))

        try:
            self._call(send, "set_tags")
        except Exception as exc:  # noqa: BLE001
            self._fail("set_tags", exc)
            self._local({"tags": {k: str(v) for k, v in tags.items()}})

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        if self._failed or self.run_id is None:
            return
        try:
            self._call(lambda: self.client.set_terminated(self.run_id, status), "end")
        except Exception as exc:  # noqa: BLE001
            self._fail("end", exc)

    def replay(self, client: Any, run_id: str) -> int:
        """Send every record written locally since the first failure to ``run_id``; returns how many.

        Params that clash with values already logged are skipped (MLflow params are write-once). On
        success, a ``{"replayed_to": run_id}`` line marks the fallback file and the tracker is active
        again on that run.
        """
        from mlflow.entities import Metric, Param, RunTag

        n = 0
        batch: list[Any] = []

        def send_metrics() -> None:
            if batch:
                client.log_batch(run_id, metrics=list(batch))
                batch.clear()

        for rec in self._unsent():
            if "metrics" in rec:
                ts, step = int(rec.get("timestamp") or time.time() * 1000), int(rec.get("step") or 0)
                batch.extend(Metric(k, float(v), ts, step) for k, v in rec["metrics"].items())
                if len(batch) >= 1000:
                    send_metrics()
            elif "params" in rec:
                items = [Param(k, str(v)) for k, v in rec["params"].items()]
                for i in range(0, len(items), 100):
                    try:
                        client.log_batch(run_id, params=items[i : i + 100])
                    except Exception:  # noqa: BLE001 - a param clash must not stop the replay
                        for p in items[i : i + 100]:
                            try:
                                client.log_batch(run_id, params=[p])
                            except Exception:  # noqa: BLE001
                                pass
            elif "tags" in rec:
                client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in rec["tags"].items()])
            elif "artifact" in rec:
                p = Path(rec["artifact"])
                if p.is_dir():
                    client.log_artifacts(run_id, str(p), rec.get("artifact_path"))
                elif p.is_file():
                    client.log_artifact(run_id, str(p), rec.get("artifact_path"))
            else:
                continue
            n += 1
        send_metrics()
        self.client, self.run_id = client, run_id
        self._failed, self._replay_from, self._memory = False, None, []
        if self.fallback is not None:
            self._local({"replayed_to": run_id, "records": n, "timestamp": int(time.time() * 1000)})
        return n


# --- opening and closing a stage run ---------------------------------------------------------------
@dataclass
class _Context:
    stage: str
    uri: str
    root: Path
    experiment: str
    key: str
    name: str
    grid: str | None
    parent_params: dict[str, Any]
    parent_run_id: str | None = None
    variant: str = ""
    start_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @property
    def run_name(self) -> str:
        """``pretrain · n_encoders=6``: runs of two variants differ in the UI's run list and compare view."""
        return f"{self.stage} · {self.variant}" if self.variant else self.stage

    def child_tags(self) -> dict[str, str]:
        tags = {STAGE_TAG: self.stage, KIND_TAG: "stage"}
        if self.variant:
            tags[VARIANT_TAG] = self.variant
        for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev"), ("DVC_STAGE", "dvc.stage")):
            if os.environ.get(env):
                tags[tag] = os.environ[env]
        if self.grid:
            tags[GRID_TAG] = self.grid
        return tags


@dataclass
class _Opened:
    client: Any
    exp_id: str
    run_id: str
    parent_id: str
    grid_id: str | None


def _experiment_id(client: Any, ctx: _Context) -> str:
    exp = client.get_experiment_by_name(ctx.experiment)
    if exp is None:
        try:
            return client.create_experiment(
                ctx.experiment, artifact_location=artifact_root(ctx.uri), tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except Exception:  # noqa: BLE001 - created meanwhile by a process that did not take our lock
            exp = client.get_experiment_by_name(ctx.experiment)
            if exp is None:
                raise
    kind = exp.tags.get(EXPERIMENT_KIND_TAG, "")
    if not kind or kind.endswith("_inferred") or kind == "no_inferred_type":  # unset, or the UI's guess
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if _temp_copy_root(Path(exp.artifact_location.removeprefix("file://"))) is not None:
        warnings.warn(
            f"MLflow experiment {ctx.experiment!r} stores artifacts in a DVC temporary copy ({exp.artifact_location}); "
            "they are deleted with it. Use a new experiment name (tracking.experiment) to get an absolute artifact root.",
            stacklevel=2,
        )
    return exp.experiment_id


def results_columns(metric_keys: Any) -> list[str]:
    """The metrics a user compares first, in reading order: per task the fine-tuned test F1 next to the
    baseline's, then the pre-training headline, then a finetune stage run's own test F1."""
    keys = set(metric_keys)
    tasks = sorted({k.split(".")[0] for k in keys if k.count(".") == 2 and k.split(".")[1] == "test"})
    cols = [f"{t}.{split}.f1_macro" for t in tasks for split in ("test", "baseline") if f"{t}.{split}.f1_macro" in keys]
    return cols + [k for k in HEADLINE_METRICS if k in keys] + list(STAGE_METRICS)


def _metric_column(key: str) -> str:
    return f"metrics.`{key}`"  # the UI's column id (makeCanonicalSortKey)


def _save_results_view(client: Any, exp_id: str, metric_keys: Any) -> None:
    """Create or extend the saved view: its columns are :func:`results_columns` of every metric it has
    shown so far plus ``metric_keys``; other columns and state in it are kept, and a view the UI has
    rewritten (its state compressed) is not touched."""
    tag = VIEW_TAG_PREFIX + VIEW_ID
    old = client.get_experiment(exp_id).tags.get(tag)
    now = int(time.time() * 1000)
    envelope: dict[str, Any] = {"name": VIEW_NAME, "createdAt": now}
    state: dict[str, Any] = {}
    if old:
        try:
            envelope = json.loads(old)
            state = json.loads(envelope["state"])
        except (ValueError, KeyError, TypeError):
            return  # compressed: saved from the UI ("Override saved view"), so the user's now; left alone
        if not isinstance(state, dict):
            return
    selected = [c for c in state.get("selectedColumns", []) if isinstance(c, str)]
    shown = {c[len("metrics.`") : -1] for c in selected if c.startswith("metrics.`") and c.endswith("`")}
    ours = [_metric_column(k) for k in results_columns(shown | set(metric_keys))]
    columns = ours + [c for c in selected if c not in ours]
    if old and columns == selected and state.get("columnOrder") == columns:
        return
    state.update(selectedColumns=columns, columnOrder=columns)
    envelope.update(state=json.dumps(state), updatedAt=now)
    client.set_experiment_tag(exp_id, tag, json.dumps(envelope))


def _find_or_create(client: Any, exp_id: str, key: str, name: str, tags: dict[str, str], params: dict[str, Any] | None) -> str:
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{PARENT_TAG}` = '{key}'", max_results=1, order_by=["attributes.start_time ASC"]
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(exp_id, run_name=name, tags={PARENT_TAG: key, **tags})
    if params:
        from mlflow.entities import Param

        items = [Param(k, _to_param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def _failed_set(run: Any) -> set[str]:
    return {s for s in run.data.tags.get(FAILED_LIST_TAG, "").split(",") if s}


def _mark_started(client: Any, run_id: str) -> None:
    run = client.get_run(run_id)
    if not _failed_set(run) and run.info.status != "RUNNING":
        client.update_run(run_id, status="RUNNING")


def _kill_stale(client: Any, exp_id: str, parent_id: str, stage: str) -> None:
    """A child of this stage still RUNNING under this parent was left by a crash: DVC runs one stage of a
    workspace at a time, and every experiment copy has its own parent."""
    stale = client.search_runs(
        [exp_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and tags.`{STAGE_TAG}` = '{stage}' and attributes.status = 'RUNNING'",
        max_results=100,
    )
    for r in stale:
        client.set_terminated(r.info.run_id, "KILLED")


def _open(ctx: _Context, start_time: int | None = None) -> _Opened:
    """Probe, then (under the init lock) tables, experiment, grid and pipeline parents; then the child run."""
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    sqlite = _sqlite_path(ctx.uri) is not None
    if not sqlite:
        probe(ctx.uri)
    lock = _lock_path(ctx.uri)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock), timeout=call_deadline()):
        if sqlite:
            probe(ctx.uri)
        client = MlflowClient(tracking_uri=ctx.uri)
        exp_id = _experiment_id(client, ctx)
        grid_id = None
        if ctx.grid:
            grid_id = _find_or_create(client, exp_id, f"grid:{ctx.grid}", ctx.grid, {GRID_TAG: ctx.grid, KIND_TAG: "grid"}, None)
        parent_id = ctx.parent_run_id
        if parent_id is None:
            tags = {KIND_TAG: "pipeline", "mlflow.source.git.commit": _git_sha(ctx.root)}
            if grid_id:
                tags.update({"mlflow.parentRunId": grid_id, GRID_TAG: ctx.grid})
            for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV", "dvc.baseline_rev")):
                if os.environ.get(env):
                    tags[tag] = os.environ[env]
            parent_id = _find_or_create(client, exp_id, ctx.key, ctx.name, tags, ctx.parent_params)
        _kill_stale(client, exp_id, parent_id, ctx.stage)
        _mark_started(client, parent_id)
        if grid_id:
            _mark_started(client, grid_id)
    run = client.create_run(
        exp_id, run_name=ctx.run_name, tags={"mlflow.parentRunId": parent_id, **ctx.child_tags()}, start_time=start_time
    )
    return _Opened(client, exp_id, run.info.run_id, parent_id, grid_id)


def _update_parent(client: Any, run_id: str, member: str, ok: bool) -> set[str]:
    run = client.get_run(run_id)
    failed = _failed_set(run)
    new = failed - {member} if ok else failed | {member}
    if new != failed:
        client.set_tag(run_id, FAILED_LIST_TAG, ",".join(sorted(new)))
    if not ok:
        client.set_tag(run_id, FAILED_STAGE_TAG, member)
    return new


def _close_parents(opened: _Opened, ctx: _Context, status: str) -> None:
    """The status rule of the module docstring, under the init lock (read-modify-write of tags)."""
    from filelock import FileLock

    client, ok = opened.client, status == "FINISHED"
    summary = ok and ctx.stage in SUMMARY_STAGES
    keys: list[str] = []
    if summary:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in client.get_run(opened.run_id).data.metrics.items()]
        for i in range(0, len(metrics), 1000):
            client.log_batch(opened.parent_id, metrics=metrics[i : i + 1000])
        keys = [m.key for m in metrics]
    with FileLock(str(_lock_path(ctx.uri)), timeout=call_deadline()):
        if summary:
            _save_results_view(client, opened.exp_id, keys)
        failed = _update_parent(client, opened.parent_id, ctx.stage, ok)
        client.set_terminated(opened.parent_id, "FAILED" if failed else "FINISHED")
        if opened.grid_id:
            failed = _update_parent(client, opened.grid_id, f"{ctx.name}/{ctx.stage}", ok)
            if failed:
                client.set_terminated(opened.grid_id, "FAILED")
            else:
                running = client.search_runs(
                    [opened.exp_id],
                    filter_string=f"tags.mlflow.parentRunId = '{opened.grid_id}' and attributes.status = 'RUNNING'",
                    max_results=1,
                )
                if not running:
                    client.set_terminated(opened.grid_id, "FINISHED")


def _status_for(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    code = getattr(exc, "exit_code", None)  # click/typer Exit
    if code is None and isinstance(exc, SystemExit):
        code = exc.code
    if (isinstance(exc, SystemExit) or hasattr(exc, "exit_code")) and code in (0, None):
        return "FINISHED"
    return "FAILED"


def _resolve_fallback(fallback: Path | None, exp_name: str | None) -> Path | None:
    """A relative fallback inside a DVC temporary copy goes to the original repo (the copy is deleted),
    under a folder named after the experiment: ``<repo>/<dir>/<exp>/<file>``."""
    if fallback is None or fallback.is_absolute():
        return fallback
    here = Path.cwd().resolve()
    orig = _temp_copy_root(here)
    if orig is None:
        return fallback
    return orig / fallback.parent / (exp_name or here.name) / fallback.name


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
    group: str | None = None,
) -> Iterator[Tracker]:
    """Open a nested MLflow run for one stage (or a no-op Tracker when disabled/unreachable).

    ``params_flat`` are the keys this stage reads (logged on the stage run); ``all_params_flat`` is the
    whole params tree, logged once on the parent run so every experiment carries every key. ``group``
    names the grid (see :func:`grid_name`). Disabled (no MLflow, no fallback file) when ``RANK`` is set
    and not ``0``: under torchrun only rank 0 tracks.
    """
    if _nonzero_rank() or not enabled or os.environ.get("TWILBERT_TRACKING", "").lower() in {"0", "off", "false"}:
        tracker = Tracker(None, None, None)
        tracker._warned, tracker._discard = True, True  # disabled on purpose: no warning, no local file
        yield tracker
        return
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        # MLflow's defaults (7 retries, 120 s) stall a run for minutes when the server goes away.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
    key, name = pipeline_key(params_path)
    ctx = _Context(
        stage=stage,
        uri=uri,
        root=repo_root(),
        experiment=experiment,
        key=key,
        name=name,
        grid=grid_name(group),
        parent_params=all_params_flat or params_flat,
        parent_run_id=parent_run_id,
        variant=variant_name(params_path),
    )
    fallback = _resolve_fallback(fallback, os.environ.get("DVC_EXP_NAME"))
    opened: _Opened | None = None
    try:
        import filelock  # noqa: F401 - imported here, not in the bounded thread: ~3 s of local work
        import mlflow.tracking  # noqa: F401

        opened = _with_deadline(lambda: _open(ctx), call_deadline(), "initialisation")
        tracker = Tracker(opened.run_id, opened.client, fallback)
    except Exception as exc:  # noqa: BLE001 - an unreachable store must not stop the stage
        tracker = Tracker(None, None, fallback)
        tracker._fail("initialisation", exc)
    tracker.log_params(params_flat)
    status = "FINISHED"
    try:
        yield tracker
    except BaseException as exc:
        status = _status_for(exc)
        raise
    finally:
        _close(tracker, ctx, opened, status)


def _close(tracker: Tracker, ctx: _Context, opened: _Opened | None, status: str) -> None:
    """End the child run and update the parents; after a failure, replay if the store is back. Never raises."""
    tracker.end(status)
    if opened is not None and not tracker._failed:
        try:
            _with_deadline(lambda: _close_parents(opened, ctx, status), call_deadline(), "closing the parent runs")
        except Exception as exc:  # noqa: BLE001
            tracker._fail("closing the parent runs", exc)
        return
    if tracker._replay_from is None:
        return

    def recover() -> tuple[_Opened, int]:
        o = opened
        if o is None:
            o = _open(ctx, start_time=ctx.start_ms)
        else:
            probe(ctx.uri)
        n = tracker.replay(o.client, o.run_id)
        o.client.set_terminated(o.run_id, status)
        _close_parents(o, ctx, status)
        return o, n

    where = tracker.fallback or "memory"
    try:
        o, n = _with_deadline(recover, call_deadline(), "replay")
        eprint(f"MLflow: the store is back; replayed {n} records from {where} into run {o.run_id} (stage {ctx.stage})")
    except Exception as exc:  # noqa: BLE001
        eprint(f"MLflow: the store is still unavailable at the end of stage {ctx.stage} ({type(exc).__name__}: {exc}); "
               f"everything it missed stays in {where}")


def eprint(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)

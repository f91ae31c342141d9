"""A full disk under the data stages: one line naming the path and "no space left on device", exit 2,
no file under a final name that does not open, no temp file left, no previous run's stats beside
the new outputs.

Two ways: a real full filesystem (a small tmpfs; skipped where mounting is not permitted), and a
writer monkeypatched to raise ``OSError(ENOSPC)``, so the behaviour is tested everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.outlock import release

REPO = Path(__file__).resolve().parents[2]
ENOSPC = "no space left on device"


def write_params(path: Path, **pairs) -> Path:
    data = {
        "data": {"pairs": [str(REPO / "data/sample/pairs.tsv")], "tweets": [str(REPO / "data/sample/tweets.tsv")]},
        "vocab": {"vocab_size": 120, "input_sentence_size": 0, "num_threads": 1},
        "pairs": {"rows_per_shard": 5, "chunk_rows": 64, **pairs},
        "impl": {"device": "cpu", "num_threads": 1, "tokenizer_threads": 1, "progress": False},
        "tracking": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """params.yaml, the normalized sample and its vocabulary, made once by the stages themselves."""
    root = tmp_path_factory.mktemp("disk-full")
    params = write_params(root / "params.yaml")
    for args in (
        ("normalize", "--params", params, "--out-dir", root / "normalized"),
        ("vocab", "--params", params, "--normalized-dir", root / "normalized", "--out-dir", root / "vocab",
         "--stats-path", root / "vocab-stats.json"),
    ):
        result = cli(*args)
        assert result.exit_code == 0, result.output
    return {"params": params, "normalized": root / "normalized", "vocab": root / "vocab"}


def cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    for i, a in enumerate(args):  # in-process: drop the stage's output lock, as its exit would
        if str(a) in ("--out-dir",):
            release(Path(args[i + 1]))
    return result


def one_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def assert_no_damage(out: Path) -> None:
    """Every file under a final name opens; no temp file is left."""
    assert not [p for p in out.rglob("*.tmp")], sorted(out.rglob("*"))
    for p in out.rglob("*.parquet"):
        pq.read_table(p)
    for p in out.rglob("*.arrow"):
        pa.ipc.open_file(pa.memory_map(str(p), "r")).read_all()
    for p in out.rglob("*.json"):
        json.loads(p.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------------
# A writer that fails with ENOSPC (everywhere)


def test_normalize_writer_full_disk(built, tmp_path, monkeypatch):
    out = tmp_path / "normalized"
    assert cli("normalize", "--params", built["params"], "--out-dir", out).exit_code == 0
    before = pq.read_table(out / "pairs.parquet")
    calls = []

    def full(self, table, *a, **kw):
        calls.append(1)
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    line = one_line(cli("normalize", "--params", built["params"], "--out-dir", out))
    assert calls and line == f"error: {out / 'pairs.parquet'}: {ENOSPC}"
    assert not (out / "stats.json").exists()  # the previous run's, which said it reconciles: gone
    assert pq.read_table(out / "pairs.parquet").equals(before)  # the previous complete file, untouched
    assert_no_damage(out)


def test_normalize_rejects_file_full_disk(built, tmp_path, monkeypatch):
    """A plain ``file.write`` names no file: the line still names the rejects file."""
    out = tmp_path / "normalized"
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.name = f, f.name

        def write(self, s):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def close(self):
            self.f.close()

    ingest = sys.modules["twilbert.text.corpus.ingest"]  # the module (the package exports a function of that name)
    monkeypatch.setattr(ingest, "open", lambda *a, **kw: Full(real_open(*a, **kw)), raising=False)
    bad = tmp_path / "bad.tsv"
    bad.write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n1\tsolo dos campos\n", encoding="utf-8")
    params = write_params(tmp_path / "params.yaml")
    data = yaml.safe_load(params.read_text())
    data["data"]["pairs"].append(str(bad))
    params.write_text(yaml.safe_dump(data))
    line = one_line(cli("normalize", "--params", params, "--out-dir", out))
    assert line == f"error: {out / 'rejects.tsv'}: {ENOSPC}"
    assert not [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert_no_damage(out)


def test_pairs_writer_full_disk(built, tmp_path, monkeypatch):
    from twilbert.data import shard_writer

    out, stats = tmp_path / "pairs", tmp_path / "pairs-stats.json"
    stats.write_text('{"rows": {"total": 1}}\n')  # a previous run's
    to_arrow, calls = shard_writer.Rows.to_arrow, []

    def third_fails(self, schema):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return to_arrow(self, schema)

    monkeypatch.setattr(shard_writer.Rows, "to_arrow", third_fails)
    line = one_line(cli("pairs", "--params", built["params"], "--normalized-dir", built["normalized"],
                        "--vocab-model", built["vocab"], "--out-dir", out, "--stats-path", stats))
    assert line.startswith(f"error: {out}/") and line.endswith(f".arrow: {ENOSPC}"), line
    assert not stats.exists() and not (out / "manifest.json").exists()
    assert not list(out.rglob("*.arrow"))  # a run without its manifest leaves no shard behind
    assert_no_damage(out)


def test_vocab_full_disk(built, tmp_path, monkeypatch):
    out, stats = tmp_path / "vocab", tmp_path / "vocab-stats.json"
    stats.write_text('{"vocab_size": 1}\n')  # a previous run's

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    line = one_line(cli("vocab", "--params", built["params"], "--normalized-dir", built["normalized"], "--out-dir", out,
                        "--stats-path", stats))
    assert line == f"error: {out / 'spm.model'}: {ENOSPC}"
    assert not stats.exists() and list(out.iterdir()) == []


def test_a_directory_as_corpus_is_named_as_such(built, tmp_path):
    params = write_params(tmp_path / "params.yaml")
    data = yaml.safe_load(params.read_text())
    data["data"]["tweets"] = [str(tmp_path)]
    params.write_text(yaml.safe_dump(data))
    line = one_line(cli("normalize", "--params", params, "--out-dir", tmp_path / "out"))
    assert "is a directory" in line and str(tmp_path) in line and "no such file" not in line


# --------------------------------------------------------------------------------------------------
# A real full filesystem (root only)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount not permitted here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def run_stage(*args) -> subprocess.CompletedProcess:
    """A separate process: its output lock and open files go with it, so the tmpfs can be unmounted."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TWILBERT_TRACKING": "off"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)


def stage_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.mark.parametrize("size", ["32k", "64k"])
def test_normalize_on_a_full_tmpfs(built, tmp_path, size):
    with tmpfs(tmp_path / "mnt", size) as mnt:
        out = mnt / "normalized"
        line = stage_line(run_stage("normalize", "--params", built["params"], "--out-dir", out))
        assert ENOSPC in line and line.startswith(f"error: {out}/"), line
        assert not (out / "stats.json").exists()
        assert_no_damage(mnt)


def test_pairs_on_a_full_tmpfs(built, tmp_path):
    with tmpfs(tmp_path / "mnt", "64k") as mnt:
        out, stats = mnt / "pairs", mnt / "stats.json"
        line = stage_line(run_stage("pairs", "--params", built["params"], "--normalized-dir", built["normalized"],
                                    "--vocab-model", built["vocab"], "--out-dir", out, "--stats-path", stats))
        assert ENOSPC in line and line.startswith(f"error: {out}/"), line
        assert not stats.exists() and not (out / "manifest.json").exists()
        assert_no_damage(mnt)


def test_torch_and_safetensors_on_a_full_tmpfs_are_named(tmp_path):
    """torch.save's ``RuntimeError ... unexpected pos`` and safetensors' ``IoError`` carry no errno
    attribute: the line still says the disk is full and names the file."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from pipeline.common import io_error_line
    from twilbert.utils import atomic_write

    weights = {"w": torch.zeros(256, 1024)}  # 1 MiB
    with tmpfs(tmp_path / "mnt", "64k") as mnt:
        for name, save in (("model.pt", lambda tmp: torch.save(weights, tmp)),
                           ("model.safetensors", lambda tmp: save_file(weights, str(tmp)))):
            with pytest.raises(Exception) as info:
                atomic_write(mnt / name, save)
            line = io_error_line(info.value)
            assert line is not None and ENOSPC in line and line.startswith(f"{mnt / name}: "), (line, info.value)
            assert list(mnt.iterdir()) == []

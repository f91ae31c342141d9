"""Strict params: generated faults in params.yaml each end in ONE line naming the file and line, or the key.

Faults are generated rather than listed: a repeated key at any depth of a real params tree, bytes
that are not UTF-8 at any position, syntax errors on any line, random bytes, non-finite values in
every float field, out-of-range values in every seed field, and every upper bound."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.params import PARAMS_BOUNDS, Params, check_model_fits_memory, load_params
from twilbert.config import SEED_MAX, ConfigError
from twilbert.finetune.config import FinetuningConfig, TaskConfig

REPO = Path(__file__).resolve().parents[2]
TASK = {"train_file": "data/pairs.tsv", "dev_file": "data/pairs.tsv", "test_file": "data/pairs.tsv", "categories": {"A": 0, "B": 1}}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "pairs.tsv").write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
    return tmp_path


def _tree() -> dict:
    """A valid params tree: the repo's, with the inputs of the test folder and a tiny model."""
    tree = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    tree["data"] = {"pairs": ["data/pairs.tsv"]}
    tree["tasks"] = {"t": dict(TASK)}
    return tree


def _emit(tree: Any, indent: int = 0, dup: tuple[str, ...] | None = None, where: tuple[str, ...] = ()) -> tuple[list[str], dict]:
    """Block YAML for ``tree`` (leaves in JSON flow style), one line per key; with ``dup`` (a key path)
    that key's entry is written twice. Returns the lines and ``{key path: [line numbers]}`` (1-based)."""
    lines: list[str] = []
    at: dict[tuple[str, ...], list[int]] = {}
    for key, value in tree.items():
        path = (*where, key)
        for _ in range(2 if path == dup else 1):
            at.setdefault(path, []).append(len(lines) + 1)
            if isinstance(value, dict) and value:
                lines.append(" " * indent + f"{key}:")
                sub, sub_at = _emit(value, indent + 2, dup, path)
                at.update({k: [n + len(lines) for n in v] for k, v in sub_at.items()})
                lines += sub
            else:
                lines.append(" " * indent + f"{key}: {json.dumps(value)}")
    return lines, at


def _key_paths(tree: dict, where: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in tree.items():
        out.append((*where, key))
        if isinstance(value, dict):
            out += _key_paths(value, (*where, key))
    return out


def _one_line_error(path: Path) -> str:
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    return msg


def test_the_emitted_tree_loads(tmp_path):
    path = _dir(tmp_path) / "params.yaml"
    path.write_text("\n".join(_emit(_tree())[0]) + "\n")
    assert load_params(path).tasks["t"].categories == {"A": 0, "B": 1}


# -- the file ---------------------------------------------------------------------------------------


@FAST
@given(data=st.data())
def test_a_repeated_key_at_any_depth_names_the_key_and_both_lines(tmp_path, data):
    tree = _tree()
    key = data.draw(st.sampled_from(_key_paths(tree)))
    lines, at = _emit(tree, dup=key)
    path = _dir(tmp_path) / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    first, second = at[key]
    msg = _one_line_error(path)
    column = len(lines[second - 1]) - len(lines[second - 1].lstrip()) + 1
    assert msg.startswith(f"{path}:{second}:{column}: {'.'.join(key)}: repeated key (first at line {first})"), msg


@pytest.mark.parametrize("text", ["", "\n\n", "   \n", "# only a comment\n", "---\n", "~\n", "null\n", "{}\n", "\ufeff"])
def test_an_empty_params_file_is_one_line(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    assert _one_line_error(path) == f"{path}:1:1: the params file is empty (expected sections such as data:, model:, training:)"


@FAST
@given(data=st.data(), bad=st.sampled_from([0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFE, 0xFF]))
def test_a_byte_that_is_not_utf8_anywhere_names_its_line_and_column(tmp_path, data, bad):
    text = "\n".join(_emit(_tree())[0]) + "\n"  # ASCII: json.dumps escapes the rest
    where = data.draw(st.integers(0, len(text)))
    raw = text.encode()[:where] + bytes([bad]) + text.encode()[where:]
    path = _dir(tmp_path) / "params.yaml"
    path.write_bytes(raw)
    line = text.count("\n", 0, where) + 1
    column = where - (text.rfind("\n", 0, where) + 1) + 1
    assert _one_line_error(path) == f"{path}:{line}:{column}: not UTF-8 text (byte 0x{bad:02x}); save the file as UTF-8"


@pytest.mark.parametrize(
    "raw",
    [bytes(range(256)), b"\x00" * 64, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"PK\x03\x04\x14\x00", b"data:\n  pairs: [\x00]\n", b"\x1b[31m"],
    ids=["all-bytes", "nul", "png", "zip", "nul-in-yaml", "escape"],
)
def test_a_binary_file_is_one_line(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_bytes(raw)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", _one_line_error(path))


@FAST
@given(raw=st.binary(max_size=300))
def test_random_bytes_load_or_give_one_line(tmp_path, raw):
    path = tmp_path / "params.yaml"
    path.write_bytes(raw)
    try:
        load_params(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)


# Fragments that are a syntax error wherever they stand in block YAML, and the column of the error
# on the fragment's own line (None: reported at the end of the file).
SYNTAX_ERRORS = {
    "key: value: other": 11,  # mapping values are not allowed here
    "\tmodel: 1": 1,  # a tab cannot start a token
    "key: [unclosed": None,
    "key: 'unclosed": None,
    "key: {a: 1": None,
    "key: &a [*b]": 10,  # undefined alias
    "--- x": None,  # a second document
}


@FAST
@given(data=st.data(), fragment=st.sampled_from(sorted(SYNTAX_ERRORS)))
def test_a_syntax_error_on_any_line_is_one_line_with_file_line_column(tmp_path, data, fragment):
    lines = _emit(_tree())[0]
    at = data.draw(st.integers(0, len(lines)))
    lines.insert(at, fragment)
    path = _dir(tmp_path) / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    msg = _one_line_error(path)
    m = re.match(rf"{re.escape(str(path))}:(\d+):(\d+): not valid YAML: \S", msg)
    assert m, msg
    if SYNTAX_ERRORS[fragment] is not None:
        assert (int(m[1]), int(m[2])) == (at + 1, SYNTAX_ERRORS[fragment]), msg


@pytest.mark.parametrize("text", ["- data\n- model\n", "42\n", "just words\n"])
def test_a_file_that_is_not_a_mapping_is_one_line(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert "expected a mapping of sections" in _one_line_error(path)


def test_deep_nesting_and_unreadable_paths_are_one_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("model: " + "[" * 30000 + "]" * 30000 + "\n")
    assert "nested too deeply" in _one_line_error(path)
    assert "cannot read the params file" in _one_line_error(tmp_path)  # a directory


# -- the values -------------------------------------------------------------------------------------


def _leaf_fields(cls: type, prefix: str) -> list[tuple[str, Any]]:
    """``(dotted key, type)`` of every non-dataclass field below ``cls``."""
    out = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += _leaf_fields(tp, key + ".")
        else:
            out.append((key, tp))
    return out


def _is(tp: Any, want: type) -> bool:
    return tp is want or (get_origin(tp) in (Union, type(int | None)) and want in get_args(tp))


ALL_FIELDS = _leaf_fields(Params, "") + _leaf_fields(TaskConfig, "tasks.t.") + _leaf_fields(FinetuningConfig, "tasks.t.finetuning.")
FLOAT_KEYS = [k for k, tp in ALL_FIELDS if _is(tp, float)]
SEED_KEYS = [k for k, _ in ALL_FIELDS if k.rsplit(".", 1)[-1] in ("seed", "seeds")]


def _set(tree: dict, key: str, value: Any) -> dict:
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if node is None:
            raise AssertionError(key)
    node[last] = value
    return tree


def _load_with(tmp_path: Path, patch: dict[str, Any]) -> str:
    tree = _tree()
    for key, value in patch.items():
        _set(tree, key, value)
    path = _dir(tmp_path) / "params.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True))
    return _one_line_error(path)


def test_the_generated_keys_cover_the_known_cases():
    assert {"training.lr", "finetuning.lr", "model.masked_lm.budget", "tasks.t.threshold", "tasks.t.finetuning.lr"} <= set(FLOAT_KEYS)
    assert {"training.seed", "vocab.seed", "pairs.seed", "evaluate.seed", "finetuning.seed", "finetuning.seeds",
            "tasks.t.finetuning.seed"} <= set(SEED_KEYS)


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 10**400])
def test_every_float_is_finite(tmp_path, key, value):
    msg = _load_with(tmp_path, {key: value})
    assert msg.startswith(f"{tmp_path / 'params.yaml'}: {key}: must be a finite number"), msg


@pytest.mark.parametrize("key, value", [("training.betas", [0.9, float("inf")]), ("tasks.t.class_weights", {"A": float("nan"), "B": 1.0})])
def test_floats_inside_lists_and_maps_are_finite(tmp_path, key, value):
    msg = _load_with(tmp_path, {key: value})
    assert re.search(rf": {re.escape(key)}(\[1\]|\.A): must be a finite number", msg), msg


@pytest.mark.parametrize("key", SEED_KEYS)
@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, 99999999999999999999999])
def test_every_seed_fits_32_bits(tmp_path, key, seed):
    is_list = key.endswith("seeds")
    msg = _load_with(tmp_path, {key: [7, seed] if is_list else seed})
    where = f"{key}[1]" if is_list else key
    assert msg.startswith(f"{tmp_path / 'params.yaml'}: {where}: a seed must be in [0, {SEED_MAX}]"), msg


def test_the_largest_seed_loads(tmp_path):
    tree = _set(_set(_tree(), "training.seed", SEED_MAX), "pairs.seed", 0)
    path = _dir(tmp_path) / "params.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert load_params(path).training.seed == SEED_MAX


def test_ints_past_64_bits_name_the_key(tmp_path):
    msg = _load_with(tmp_path, {"training.max_steps": 2**64})
    assert ": training.max_steps: 18446744073709551616 does not fit a 64-bit integer" in msg, msg


# A key set past its bound alone may first break another check (embedding_size must equal
# hidden_size...): these companions keep the bound the first thing that fails.
COMPANIONS = {
    "model.hidden_size": lambda v: {"model.factorize_embeddings": True, "model.n_heads": 1},
    "model.embedding_size": lambda v: {"model.factorize_embeddings": True},
    "model.n_heads": lambda v: {"model.attention_size": 1},
    "model.pkm_params.memory_size": lambda v: {"model.pkm_params.knn": 1},
    "impl.n_gpus": lambda v: {"training.accum_iters": v},
}
SIZE_KEYS = [k for k in PARAMS_BOUNDS if k not in ("model.vocab_size", "model.max_positions")]  # derived: must be null


@pytest.mark.parametrize("key", SIZE_KEYS)
def test_every_size_has_an_upper_bound(tmp_path, key):
    hi = PARAMS_BOUNDS[key][1] + (2 if key.endswith("k_dim") else 1)  # k_dim must be even
    concrete = key.replace("*", "t")
    patch = {concrete: hi, **{k.replace("*", "t"): v for k, v in COMPANIONS.get(key, lambda v: {})(hi).items()}}
    msg = _load_with(tmp_path, patch)
    assert msg.startswith(f"{tmp_path / 'params.yaml'}: {concrete}: "), msg
    assert "must be in [" in msg, msg


def test_every_bounded_key_exists():
    """A knob renamed or moved must take its bound along: the table's keys are all config keys."""
    from twilbert.config import check_bounds

    params = load_params(REPO / "params.yaml")
    check_bounds(params, PARAMS_BOUNDS)  # KeyError for a key no dataclass has
    names = {f.name for f in dataclasses.fields(FinetuningConfig)}
    task_keys = {k.split(".", 1)[1] for k in PARAMS_BOUNDS if k.startswith("tasks.*.")}
    assert {k.removeprefix("finetuning.") for k in task_keys if k.startswith("finetuning.")} <= names
    assert {k for k in task_keys if "." not in k} <= {f.name for f in dataclasses.fields(TaskConfig)}


def test_a_model_larger_than_memory_is_refused_naming_its_keys(tmp_path, monkeypatch):
    big = {"model.n_encoders": 256, "model.hidden_size": 16384, "model.embedding_size": 16384}  # 825 B parameters
    msg = _load_with(tmp_path, big)
    assert re.search(r": model: 824,9\d\d,\d{3},\d{3} parameters need 12,29\d\.\d GiB .* more than this machine's", msg), msg
    assert msg.endswith("make these smaller: model.n_encoders, model.hidden_size, vocab.vocab_size, model.embedding_size"), msg
    # The repo's own model on a (pretend) 1 MiB machine, and with the machine's memory patched.
    params = load_params(REPO / "params.yaml")
    check_model_fits_memory(params, memory=2**40)
    with pytest.raises(ConfigError, match=r"^model: [\d,]+ parameters need [\d.]+ MiB .* more than this machine's 1\.0 MiB of RAM; "
                       r"make these smaller: .*vocab\.vocab_size"):
        check_model_fits_memory(params, memory=2**20)
    monkeypatch.setattr("pipeline.params.machine_memory_bytes", lambda: 2**20)
    with pytest.raises(ConfigError, match=r"params\.yaml: model: .* parameters need"):
        load_params(REPO / "params.yaml")


# -- the command line -------------------------------------------------------------------------------


CLI_FAULTS = {
    "repeated-key": b"data:\n  pairs: [data/pairs.tsv]\ntraining:\n  lr: 0.1\ntraining:\n  epochs: 2\n",
    "not-utf8": "data:\n  pairs: [datos/año.tsv]\n".encode("latin-1"),
    "syntax": b"data:\n  pairs: [data/pairs.tsv\n",
    "empty": b"",
    "inf": b"data:\n  pairs: [data/pairs.tsv]\ntraining:\n  lr: .inf\n",
    "seed": b"data:\n  pairs: [data/pairs.tsv]\ntraining:\n  seed: 99999999999999999999999\n",
}


@pytest.mark.parametrize("fault", ["repeated-key", "not-utf8"])
def test_the_cli_exits_2_with_one_line_and_no_traceback(tmp_path, fault):
    path = _dir(tmp_path) / "bad.yaml"
    path.write_bytes(CLI_FAULTS[fault])
    run = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "normalize", "--params", str(path), "--out-dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}:") and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("fault", sorted(CLI_FAULTS))
def test_every_fault_through_a_stage_command_is_one_line(tmp_path, fault):
    from typer.testing import CliRunner

    from pipeline.cli import app

    path = _dir(tmp_path) / "bad.yaml"
    path.write_bytes(CLI_FAULTS[fault])
    result = CliRunner().invoke(app, ["normalize", "--params", str(path), "--out-dir", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), result.output

"""Generated faults in a pre-training checkpoint: for every file of the newest checkpoint (listed, not
named here) and of its run directory, truncation, random bytes, non-UTF-8 bytes, valid JSON of the
wrong type and deletion each end in a fallback to the previous checkpoint (or, for files resumption
does not need, a resume from the newest), never in a traceback. A model directory whose
``config.json`` is crafted (sizes out of range, wrong types) is refused in one line."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_run, tiny_training
from twilbert.config import to_dict
from twilbert.train.checkpoint import CONFIG_FILE, CheckpointError, model_config, read_model_config, save_checkpoint
from twilbert.train.pretrain import pretrain
from twilbert.train.run_store import RUN_FILE, choose_resume_checkpoint, list_checkpoints, list_runs


def truncate(path: Path, rng: random.Random) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: rng.randrange(len(data))] if data else b"")


def random_bytes(path: Path, rng: random.Random) -> None:
    path.write_bytes(rng.randbytes(max(1, path.stat().st_size)))


def not_utf8(path: Path, rng: random.Random) -> None:
    path.write_bytes(b"\xff\xfe\x80" + path.read_bytes()[3:])


WRONG_TYPES = ["123", "[]", '"text"', "null", "true", "[1, 2, 3]", '{"x": NaN}']


def wrong_json_type(path: Path, rng: random.Random) -> None:
    path.write_text(rng.choice(WRONG_TYPES))


def delete(path: Path, rng: random.Random) -> None:
    path.unlink()


FAULTS = {"truncate": truncate, "random_bytes": random_bytes, "not_utf8": not_utf8, "wrong_json_type": wrong_json_type, "delete": delete}


def faults_for(path: Path) -> list[str]:
    return [f for f in FAULTS if f != "wrong_json_type" or path.suffix == ".json"]


def apply(path: Path, fault: str, seed: int = 0) -> None:
    FAULTS[fault](path, random.Random(seed))


# --------------------------------------------------------------------------------------------------
# two step checkpoints of a real (tiny) pre-training run


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("ckpt-faults"))


def run(inputs, out_dir: Path, **kw):
    return pretrain(
        model_cfg=tiny_model(inputs["vocab_size"]), training=tiny_training(epochs=1), run=tiny_run(checkpoint_every=1), impl=cpu_impl(),
        shards_dir=inputs["shards"], tokenizer_path=inputs["tokenizer"], out_dir=out_dir, progress=False, **kw,
    )


@pytest.fixture(scope="module")
def stopped(inputs, tmp_path_factory) -> Path:
    """A run stopped after step 3: checkpoints step-2 and step-3 (the last two are kept)."""
    out = tmp_path_factory.mktemp("stopped")
    run(inputs, out, stop_after_steps=3)
    return out


def layout(out: Path) -> tuple[Path, Path, dict]:
    """(run directory, newest checkpoint, run config) of the one run config under ``out``."""
    [run_dir] = list_runs(out / "checkpoints")
    config = json.loads((run_dir / RUN_FILE).read_text())["run_config"]
    return run_dir, list_checkpoints(run_dir)[-1], config


def copy(stopped: Path, dest: Path) -> Path:
    shutil.copytree(stopped, dest)
    return dest


def test_the_fixture_has_two_checkpoints(stopped):
    run_dir, newest, _ = layout(stopped)
    assert [p.name for p in list_checkpoints(run_dir)] == ["step-00000002", "step-00000003"]
    assert len(list(newest.iterdir())) >= 4


def test_every_fault_in_every_checkpoint_file_falls_back(stopped, tmp_path):
    messages = []
    _, newest, _ = layout(stopped)
    cases = [(name, fault) for name in sorted(p.name for p in newest.iterdir()) for fault in faults_for(newest / name)]
    assert len(cases) >= 16
    for i, (name, fault) in enumerate(cases):
        out = copy(stopped, tmp_path / f"case-{i}")
        run_dir, newest_copy, config = layout(out)
        apply(newest_copy / name, fault, seed=i)
        chosen = choose_resume_checkpoint(out / "checkpoints", config, say=messages.append)
        assert chosen == run_dir / "step-00000002", (name, fault, chosen)
        assert "step-00000003 is unusable" in messages[-1] and "falling back" in messages[-1], (name, fault)
        assert "\n" not in messages[-1]


@pytest.mark.parametrize("fault", faults_for(Path(RUN_FILE)))
def test_a_damaged_run_file_does_not_block_resumption(stopped, tmp_path, fault):
    """run.json is for humans (and to list another config's differences): the newest checkpoint stays usable."""
    out = copy(stopped, tmp_path / "out")
    run_dir, newest, config = layout(out)
    apply(run_dir / RUN_FILE, fault)
    assert choose_resume_checkpoint(out / "checkpoints", config, say=lambda m: None) == newest
    other = {**config, "x": 1}  # another config: the damaged run.json is only reported
    said = []
    assert choose_resume_checkpoint(out / "checkpoints", other, say=said.append) is None
    assert any("starting fresh" in m for m in said)


@pytest.mark.parametrize("fault", ["not_utf8", "wrong_json_type"])
def test_pretraining_resumes_from_the_previous_checkpoint(inputs, stopped, tmp_path, capsys, fault):
    """The defect as found: checksums.json replaced by binary bytes or by ``123`` blocked every rerun."""
    out = copy(stopped, tmp_path / "out")
    _, newest, _ = layout(out)
    (newest / "checksums.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff" if fault == "not_utf8" else b"123")
    capsys.readouterr()
    summary = run(inputs, out, stop_after_steps=4)
    err = capsys.readouterr().err
    assert "step-00000003 is unusable" in err and "checksums.json" in err and "Traceback" not in err
    assert summary["resumed_from_step"] == 2


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), content=st.binary(max_size=256))
def test_any_content_of_any_checkpoint_file_falls_back(stopped, tmp_path_factory, data, content):
    _, newest, _ = layout(stopped)
    name = data.draw(st.sampled_from(sorted(p.name for p in newest.iterdir())))
    out = copy(stopped, tmp_path_factory.mktemp("any") / "out")
    run_dir, newest_copy, config = layout(out)
    (newest_copy / name).write_bytes(content)
    assert choose_resume_checkpoint(out / "checkpoints", config, say=lambda m: None) == run_dir / "step-00000002"


# --------------------------------------------------------------------------------------------------
# crafted model config.json: checksums recomputed, so only validation can refuse it


def crafted(tmp_path: Path, inputs, edit) -> Path:
    import torch

    cfg = to_dict(tiny_model(inputs["vocab_size"]))
    edit(cfg)
    save_checkpoint(tmp_path / "m", torch.nn.Linear(1, 1), cfg, rng=False)
    return tmp_path / "m"


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda c: c.update(vocab_size=10**12), "model.vocab_size: must be in [6, 1048576], got 1000000000000"),
        (lambda c: c.update(vocab_size=1e12), "model.vocab_size: expected int | None, got float"),
        (lambda c: c.update(max_positions=10**9), "model.max_positions: must be in"),
        (lambda c: c.update(n_encoders="2"), "model.n_encoders: expected int, got str"),
        (lambda c: c.update(hidden_size=2**14, embedding_size=2**14, n_encoders=256), "more than this machine's"),
        (lambda c: c.pop("vocab_size"), "model.vocab_size: missing"),
        (lambda c: c.update(bogus=1), "model.bogus: unknown key"),
    ],
)
def test_a_crafted_model_config_is_refused_in_one_line(tmp_path, inputs, edit, fragment):
    directory = crafted(tmp_path, inputs, edit)
    with pytest.raises(CheckpointError) as info:
        read_model_config(directory)
    message = str(info.value)
    assert message.startswith(f"{directory / CONFIG_FILE}: ") and fragment in message and "\n" not in message


def test_model_config_accepts_both_layouts_and_checks_memory(inputs):
    cfg = to_dict(tiny_model(inputs["vocab_size"]))
    assert model_config(cfg) == model_config({"model": cfg, "other": 1}) == tiny_model(inputs["vocab_size"])
    with pytest.raises(CheckpointError, match="refusing to load it"):
        model_config(cfg, memory=1000)

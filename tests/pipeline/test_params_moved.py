"""Keys that left a recipe section (``MOVED_KEYS``) still load at their old place, with one note."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import twilbert.config
from pipeline.params import MOVED_KEYS, Params, load_params, move_deprecated_keys
from twilbert.config import ConfigError, from_dict

REPO = Path(__file__).resolve().parents[2]
OLD_VALUES = {"training.n_gpus": 2, "finetuning.pred_batch_size": 7, "training.log_every": 3, "training.checkpoint_every": 4,
              "training.max_bad_steps": 6, "training.on_config_change": "error", "training.resume_from": "elsewhere",
              "finetuning.max_bad_steps": 6}


def _write(tmp_path: Path, tree: dict) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "pairs.tsv").write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": {"pairs": ["data/pairs.tsv"]}, **tree}))
    return path


def _nested(flat: dict) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        section, leaf = key.split(".")
        tree.setdefault(section, {})[leaf] = value
    return tree


def test_every_moved_key_has_a_value_here_and_a_new_place():
    assert set(OLD_VALUES) == set(MOVED_KEYS)
    fresh = Params()
    for new in MOVED_KEYS.values():
        section, leaf = new.split(".")
        assert hasattr(getattr(fresh, section), leaf), new
    for old in MOVED_KEYS:
        section, leaf = old.split(".")
        assert not hasattr(getattr(fresh, section), leaf), old  # gone from the recipe section


def test_old_keys_load_at_their_new_place_with_one_note_each(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(twilbert.config, "_NOTED", set())
    tree = _nested({**OLD_VALUES, "training.accum_iters": 2})
    p = load_params(_write(tmp_path, tree))
    for old, new in MOVED_KEYS.items():
        section, leaf = new.split(".")
        assert getattr(getattr(p, section), leaf) == OLD_VALUES[old], (old, new)
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == len(MOVED_KEYS)
    for old, new in MOVED_KEYS.items():
        assert sum(old in line and new in line for line in notes) == 1, (old, notes)
    load_params(_write(tmp_path, tree))  # once per process: no second note
    assert capsys.readouterr().err == ""


def test_old_and_new_place_both_set_is_an_error_naming_both(tmp_path):
    tree = {"training": {"log_every": 3}, "run": {"log_every": 3}}
    with pytest.raises(ConfigError, match=r"params\.yaml: training\.log_every: moved to run\.log_every, and run\.log_every sets it too"):
        load_params(_write(tmp_path, tree))


def test_two_old_places_of_one_key_must_agree(tmp_path):
    same = {"training": {"max_bad_steps": 4}, "finetuning": {"max_bad_steps": 4}}
    assert load_params(_write(tmp_path, same)).run.max_bad_steps == 4
    differ = {"training": {"max_bad_steps": 4}, "finetuning": {"max_bad_steps": 9}}
    with pytest.raises(ConfigError, match=r"finetuning\.max_bad_steps: moved to run\.max_bad_steps, and training\.max_bad_steps sets it too"):
        load_params(_write(tmp_path, differ))


def test_a_task_override_of_a_moved_key_names_the_new_key():
    raw = {"tasks": {"t": {"finetuning": {"pred_batch_size": 8}}}}
    with pytest.raises(ConfigError, match=r"tasks\.t\.finetuning\.pred_batch_size: moved to impl\.pred_batch_size"):
        move_deprecated_keys(raw)


def test_the_repo_params_use_no_old_key():
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    assert from_dict(Params, move_deprecated_keys(raw)) == from_dict(Params, raw)

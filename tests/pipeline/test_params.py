"""params.yaml loads into frozen dataclasses; bad configs fail with the dotted key named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from pipeline.params import Params, load_params
from twilbert.config import ConfigError, from_dict, to_dict

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, tree: dict) -> Path:
    # Keep file references valid: params paths are relative to the params file's folder.
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "pairs.tsv").write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(tree, allow_unicode=True))
    return p


def _base() -> dict:
    return {"data": {"pairs": ["data/pairs.tsv"]}}


def test_repo_params_load_and_round_trip():
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    assert dataclasses.is_dataclass(params) and params.__dataclass_params__.frozen
    again = from_dict(Params, to_dict(params))
    assert again == params
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.training.batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "patch, key, fragment",
    [
        ({"model": {"n_encoder": 3}}, "model.n_encoder", "did you mean 'n_encoders'"),
        ({"trainin": {"epochs": 1}}, "trainin", "did you mean 'training'"),
        ({"model": {"masked_lm": {"budget": 1.5}}}, "model.masked_lm.budget", "(0, 1)"),
        ({"training": {"batch_size": 1.5}}, "training.batch_size", "expected int"),
        ({"training": {"epochs": "two"}}, "training.epochs", "expected int"),
        ({"model": {"cross_sharing": "yes"}}, "model.cross_sharing", "true/false"),
        ({"model": {"hidden_size": 250, "embedding_size": 250, "n_heads": 4}}, "model.hidden_size", "divisible"),
        ({"model": {"embedding_size": 128}}, "model.embedding_size", "factorize_embeddings"),
        ({"model": {"pkm": True, "pkm_params": {"in_layers": [10]}}}, "model.pkm_params.in_layers", "do not exist"),
        ({"model": {"masked_lm": {"type": "words"}}}, "model.masked_lm.type", "one of"),
        ({"model": {"masked_lm": {"probs": {"mask": 0.8, "random": 0.1, "keep": 0.2}}}}, "model.masked_lm.probs.mask", "sum to 1"),
        ({"training": {"optimizer": "sgd"}}, "training.optimizer", "one of"),
        ({"representation": {"max_len": 2}}, "representation.max_len", "[4, 1024]"),
        ({"model": {"vocab_size": 99}}, "model.vocab_size", "derived"),
        ({"data": {"pairs": ["data/missing.tsv"]}}, "data.pairs[0]", "no such file"),
        # accum_iters counts an update's micro-batches over all processes: n_gpus must share them.
        ({"training": {"n_gpus": 8, "accum_iters": 4, "batch_size": 64}}, "training.accum_iters", "batch_size 8 x accum_iters 32"),
        ({"impl": {"n_gpus": 8}, "training": {"accum_iters": 4, "batch_size": 64}}, "training.accum_iters", "(impl.n_gpus is 8)"),
    ],
)
def test_bad_params_name_the_key(tmp_path, patch, key, fragment):
    tree = _base()
    for section, value in patch.items():
        if isinstance(value, dict) and isinstance(tree.get(section), dict):
            tree[section] = {**tree[section], **value}
        else:
            tree[section] = value
    path = _write(tmp_path, tree)
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: {key}"), msg
    assert fragment in msg, msg


def test_task_file_missing_names_the_task_key(tmp_path):
    tree = _base()
    tree["tasks"] = {
        "senti": {
            "train_file": "data/pairs.tsv",
            "dev_file": "data/pairs.tsv",
            "test_file": "data/nope.tsv",
            "categories": {"N": 0, "P": 1},
        }
    }
    with pytest.raises(ConfigError, match=r"tasks\.senti\.test_file: no such file 'data/nope.tsv'"):
        load_params(_write(tmp_path, tree))


def test_task_inputs_must_fit_the_encoder_positions_when_params_load(tmp_path):
    """Caught at load, not by the fine-tune stage after pre-training (2 * max_len + 3 positions)."""
    base = {"train_file": "data/pairs.tsv", "dev_file": "data/pairs.tsv", "test_file": "data/pairs.tsv", "categories": {"A": 0, "B": 1}}
    tree = {**_base(), "representation": {"max_len": 40}, "finetuning": {"max_len": 48}}
    tree["tasks"] = {"single": base}  # 48 + 2 <= 83: fits
    assert load_params(_write(tmp_path, tree)).tasks["single"].aux_header is None
    tree["tasks"] = {"single": base, "pair": {**base, "aux_header": "TARGET"}}  # 2 * 48 + 3 = 99 > 83
    with pytest.raises(ConfigError, match=r"finetuning\.max_len: 48 tokens per segment \(a text pair\) need 99 positions, "
                       r"the encoder has 83 .* use max_len <= 40 for task 'pair'"):
        load_params(_write(tmp_path, tree))
    tree["tasks"]["pair"]["finetuning"] = {"max_len": 41}  # a task's own override is named as such
    with pytest.raises(ConfigError, match=r"tasks\.pair\.finetuning\.max_len: 41 tokens"):
        load_params(_write(tmp_path, tree))
    tree["tasks"]["pair"]["finetuning"] = {"max_len": 40}
    assert load_params(_write(tmp_path, tree)).tasks["pair"].finetuning == {"max_len": 40}
    # Another checkpoint has its own position table: the fine-tune stage checks against that one.
    tree["tasks"]["pair"]["finetuning"] = {"path_load_weights": "models/elsewhere"}
    assert load_params(_write(tmp_path, tree), check_files=False)


def test_task_categories_and_weights_validated(tmp_path):
    base = {"train_file": "data/pairs.tsv", "dev_file": "data/pairs.tsv", "test_file": "data/pairs.tsv"}
    tree = _base()
    tree["tasks"] = {"t": {**base, "categories": {"A": 0, "B": 2}}}
    with pytest.raises(ConfigError, match=r"tasks\.t\.categories: indices must be 0\.\.1"):
        load_params(_write(tmp_path, tree))
    tree["tasks"] = {"t": {**base, "categories": {"A": 0, "B": 1}, "class_weights": {"A": 1.0, "C": 2.0}}}
    with pytest.raises(ConfigError, match=r"tasks\.t\.class_weights: labels not in categories: \['C'\]"):
        load_params(_write(tmp_path, tree))
    tree["tasks"] = {"t": {**base, "categories": {"A": 0, "B": 1}, "class_metric": 0, "stance_f1": ["A", "B"]}}
    params = load_params(_write(tmp_path, tree))
    assert params.tasks["t"].class_metric == 0  # class 0 is a real choice, not "unset"


def test_task_type_key_and_the_old_booleans(tmp_path, monkeypatch, capsys):
    """``type`` names the task type; an old params file's ``regression: true`` still loads, with a note."""
    import twilbert.config

    monkeypatch.setattr(twilbert.config, "_NOTED", set())
    base = {"train_file": "data/pairs.tsv", "dev_file": "data/pairs.tsv", "test_file": "data/pairs.tsv"}
    tree = _base()
    reg = {**base, "eval_metric": "pearson", "finetuning": {"loss": "mse"}}
    tree["tasks"] = {"r": {**reg, "type": "regression"}, "m": {**base, "type": "multi_label", "categories": {"A": 0}, "finetuning": {"loss": "bce"}}}
    params = load_params(_write(tmp_path, tree))
    assert (params.tasks["r"].type, params.tasks["m"].type) == ("regression", "multi_label")
    assert to_dict(params)["tasks"]["r"]["type"] == "regression" and "regression" not in to_dict(params)["tasks"]["r"]
    tree["tasks"] = {"r": {**reg, "regression": True}}
    assert load_params(_write(tmp_path, tree)).tasks["r"].type == "regression"
    assert "note: tasks.r.regression is deprecated; write tasks.r.type: regression instead" in capsys.readouterr().err
    tree["tasks"] = {"r": {**base, "type": "ordinal", "categories": {"A": 0, "B": 1}}}
    with pytest.raises(ConfigError, match=r"params\.yaml: tasks\.r\.type: unknown task type 'ordinal'"):
        load_params(_write(tmp_path, tree))


def test_invalid_yaml_and_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_every_dvc_stage_param_exists_in_schema():
    """dvc.yaml may only declare params keys that the schema knows (a typo there would silently
    never invalidate the stage)."""
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    tree = to_dict(load_params(REPO / "params.yaml"))

    def has(key: str) -> bool:
        node = tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    stages = dvc["stages"]
    seen = 0
    for name, stage in stages.items():
        body = stage.get("do", stage)
        for key in body.get("params", []):
            if isinstance(key, str) and "${" not in key:
                seen += 1
                assert has(key), f"dvc.yaml stage {name}: params key {key!r} is not in the schema"
    assert seen > 0


def test_yaml11_scientific_floats_are_numbers(tmp_path):
    """PyYAML reads `1e-4` as a string (YAML 1.1); float keys must still accept it, int keys must not."""
    tree = _base()
    tree["training"] = {"lr": "1e-4", "eps": "1E-8"}
    p = load_params(_write(tmp_path, tree))
    assert p.training.lr == 1e-4 and p.training.eps == 1e-8
    tree["training"] = {"batch_size": "1e2"}
    with pytest.raises(ConfigError, match="training.batch_size: expected int"):
        load_params(_write(tmp_path, tree))
    tree["training"] = {"lr": "fast"}
    with pytest.raises(ConfigError, match="training.lr: expected a number"):
        load_params(_write(tmp_path, tree))


@pytest.mark.parametrize(
    "rules, key, fragment",
    [
        ({"emoji": "name", "emoji_wrapper": "user"}, "emoji_wrapper", "placeholder tokens must differ: 'user' is also user_token"),
        ({"user_token": "url"}, "user_token", "'url' is also url_token"),
        ({"hashtags": "replace", "hashtag_token": "url"}, "hashtag_token", "'url' is also url_token"),
        ({"user_token": "Usuario"}, "user_token", "must be lower-case when lowercase is on"),
        ({"preset": "pysentimiento", "emoji_wrapper": "EMOJI"}, "emoji_wrapper", "must be lower-case"),  # preset lowercase is off ...
    ],
)
def test_rule_combinations_are_checked_when_params_load(tmp_path, rules, key, fragment):
    """These cross-field checks used to run only when a stage called rules.effective(), without the
    file or the section in the message (and a clash always blamed url_token)."""
    tree = {**_base(), "normalize": {"rules": rules}}
    if rules.get("preset") == "pysentimiento":
        tree["normalize"]["rules"] = {**rules, "lowercase": True}  # ... so turn it on
    path = _write(tmp_path, tree)
    with pytest.raises(ConfigError) as exc:
        load_params(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: normalize.rules.{key}: "), msg
    assert fragment in msg and "\n" not in msg, msg


def test_distinct_and_lower_case_placeholders_load(tmp_path):
    tree = {**_base(), "normalize": {"rules": {"emoji": "name", "emoji_wrapper": "emoji", "user_token": "usuario"}}}
    params = load_params(_write(tmp_path, tree))
    assert params.normalize.rules.effective().emoji_wrapper == "emoji"
    # A clash only matters for the rules that are on: with mentions off, user_token is not inserted.
    tree = {**_base(), "normalize": {"rules": {"mentions": False, "user_token": "url"}}}
    load_params(_write(tmp_path, tree))

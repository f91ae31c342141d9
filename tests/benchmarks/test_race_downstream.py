"""The race's downstream part on the bundled sample task: one recipe for every init, the baseline
beside them, seeded runs that repeat exactly, and a random init that owes nothing to a checkpoint."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.race_downstream import downstream, task_config
from tests.finetune.test_finetune_data import make_tokenizer
from twilbert.config import ConfigError, to_dict
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import Tokenizer
from twilbert.train.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
TASKS = REPO / "data" / "sample" / "tasks"
RULES = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["normalize"]["rules"]


def pretrained_dir(path: Path, tok: Path, weights_seed: int) -> Path:
    """A tiny "pre-trained" model dir as the pretrain stage writes one (final/, pretrain.json)."""
    vocab = Tokenizer.from_file(tok).vocab_size
    cfg = ModelConfig(hidden_size=16, embedding_size=16, n_encoders=1, n_heads=2).resolved(vocab_size=vocab, max_len=12)
    torch.manual_seed(weights_seed)
    save_checkpoint(path / "final", TWilBERT(cfg), to_dict(cfg), rng=False)
    (path / "final" / "pretrain.json").write_text(json.dumps({"tokenizer_sha256": Tokenizer.from_file(tok).sha256}))
    return path / "final"


def saved_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The fine-tuned encoder and head as saved (the pre-training heads are not: unused)."""
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("race")
    tok = make_tokenizer(root / "vocab")
    return root, tok, pretrained_dir(root / "pre_a", tok, 0), pretrained_dir(root / "pre_b", tok, 1)


def run(root: Path, tok: Path, inits: dict, seeds: list[int], workdir: str) -> tuple[dict, list[str]]:
    lines: list[str] = []
    res = downstream(inits, data_dir=TASKS, tasks=["sentiment"], vocab_dir=tok.parent, rules_params=RULES, workdir=root / workdir,
                     seeds=seeds, device="cpu", epochs=1, max_len=12, batch_size=8, lr=1e-2, log=lines.append)
    return res, lines


def test_categories_are_the_sorted_train_labels():
    assert task_config(TASKS / "sentiment").categories == {"N": 0, "NEU": 1, "P": 2}


def test_a_system_named_baseline_is_refused(setup):
    root, tok, pre_a, _ = setup
    with pytest.raises(ConfigError, match=r"^inits\.baseline: "):
        run(root, tok, {"baseline": pre_a}, [1], "w0")
    with pytest.raises(ConfigError, match=r"^inits: a random init needs"):
        run(root, tok, {"random": None}, [1], "w0")


def test_every_init_with_one_recipe_beside_the_baseline(setup):
    root, tok, pre_a, pre_b = setup
    first, lines = run(root, tok, {"ours": pre_a, "random": None}, [1, 2], "w1")

    # structure: the baseline and every system, test macro-F1 per seed in [0, 1]
    assert set(first) == {"sentiment"}
    entry = first["sentiment"]
    assert set(entry) == {"ours", "random", "baseline"}
    assert 0.0 <= entry["baseline"]["macro_f1"] <= 1.0
    for system in ("ours", "random"):
        r = entry[system]
        assert len(r["runs"]) == 2 and all(math.isfinite(f) and 0.0 <= f <= 1.0 for f in r["runs"])
        assert r["mean"] == pytest.approx(sum(r["runs"]) / 2)
        assert r["sd"] == pytest.approx(abs(r["runs"][0] - r["runs"][1]) / math.sqrt(2))
        # only the best-dev seed keeps its model, which loads as a product model dir
        kept = Path(r["model_dir"])
        assert kept == root / "w1" / "sentiment" / system / str(r["chosen_seed"]) / "model"
        assert sorted(p.parent.name for p in (root / "w1" / "sentiment" / system).glob("*/model")) == [str(r["chosen_seed"])]
        assert all((root / "w1" / "sentiment" / system / str(s) / "reports" / "metrics.json").is_file() for s in (1, 2))
        import twilbert

        assert len(twilbert.load(kept).predict(["qué bien, me encanta"])) == 1
    assert len(lines) == 1 + 2 * 2  # the baseline, then one line per fine-tune
    assert all(line.startswith("downstream sentiment ") for line in lines)

    # determinism: the same seed gives the same F1, whatever other seeds run beside it
    again, _ = run(root, tok, {"ours": pre_a, "random": None}, [1], "w2")
    for system in ("ours", "random"):
        assert again["sentiment"][system]["runs"] == [first["sentiment"][system]["runs"][0]]
    clockless = lambda r: {k: v for k, v in r["sentiment"]["baseline"].items() if k != "seconds"}  # noqa: E731
    assert clockless(again) == clockless(first)

    # random ignores the checkpoint's weights: other pre-trained weights, the same random model
    other, _ = run(root, tok, {"ours": pre_b, "random": None}, [1], "w3")
    assert other["sentiment"]["random"]["runs"] == again["sentiment"]["random"]["runs"]
    rand2, rand3 = (saved_weights(Path(r["sentiment"]["random"]["model_dir"])) for r in (again, other))
    assert all(torch.equal(rand2[k], rand3[k]) for k in rand2)
    ours2, ours3 = (saved_weights(Path(r["sentiment"]["ours"]["model_dir"])) for r in (again, other))
    assert not all(torch.equal(ours2[k], ours3[k]) for k in ours2)  # the pre-trained init does matter
    # and the random model is not the checkpoint fine-tuned: its embeddings started elsewhere
    pre = TWilBERT(ModelConfig(hidden_size=16, embedding_size=16, n_encoders=1, n_heads=2).resolved(
        vocab_size=Tokenizer.from_file(tok).vocab_size, max_len=12))
    load_checkpoint(pre_a, pre)
    assert not torch.equal(rand2["encoder.embeddings.token.weight"], pre.embeddings.token.weight)

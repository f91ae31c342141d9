"""twilbert/model/size.py: the parameter count from a config equals the built model's, and the size
bounds refuse a crafted model config before anything is allocated."""

from __future__ import annotations

import pytest

from twilbert.config import ConfigError, check_bounds, from_dict
from twilbert.model import ModelConfig, TWilBERT
from twilbert.model.size import MODEL_BOUNDS, TRAINING_BYTES_PER_PARAMETER, parameter_count, training_memory_bytes

BASE = {"hidden_size": 64, "embedding_size": 64, "n_encoders": 2, "n_heads": 4}
PKM = {"memory_size": 16, "knn": 4, "k_dim": 16, "n_heads": 2}
CONFIGS = {
    "default": {},
    "factorised": {"factorize_embeddings": True, "embedding_size": 32},
    "shared-pre-ln-no-bias": {"cross_sharing": True, "n_encoders": 3, "norm": "pre", "attention_bias": False, "attention_size": 8},
    "pkm": {"pkm": True, "pkm_params": {**PKM, "in_layers": [1]}},
    "pkm-factorised-shared": {
        "pkm": True, "factorize_embeddings": True, "embedding_size": 32, "n_encoders": 3, "cross_sharing": True,
        "pkm_params": {**PKM, "in_layers": [0, 1], "factorize_embeddings": True, "value_size": 12, "batch_norm": False},
    },
    "all-pkm-shared": {"pkm": True, "cross_sharing": True, "pkm_params": {**PKM, "in_layers": [0, 1]}},
    "tied-transform-rop-hidden": {"tie_mlm_decoder": True, "factorize_embeddings": True, "embedding_size": 32, "mlm_transform": True,
                                  "rop": {"n_hidden": 2, "hidden_size": 24}},
    "tied-no-rop-no-emb-ln": {"tie_mlm_decoder": True, "factorize_embeddings": True, "embedding_size": 32, "rop": {"use_rop": False},
                              "embedding_layer_norm": False},
    "transform": {"mlm_transform": True, "hidden_size": 48, "embedding_size": 48, "n_heads": 3},
}


@pytest.mark.parametrize("overrides", list(CONFIGS.values()), ids=list(CONFIGS))
def test_parameter_count_equals_the_built_model(overrides):
    cfg = from_dict(ModelConfig, {**BASE, **overrides}).resolved(vocab_size=300, max_len=20)
    built = sum(p.numel() for p in TWilBERT(cfg).parameters())
    assert sum(parameter_count(cfg).values()) == built
    assert training_memory_bytes(cfg) == TRAINING_BYTES_PER_PARAMETER * built


def test_parts_follow_their_keys():
    cfg = from_dict(ModelConfig, BASE).resolved(vocab_size=300, max_len=20)
    wider_vocab = parameter_count(cfg.resolved(vocab_size=600, max_len=20))
    deeper = parameter_count(from_dict(ModelConfig, {**BASE, "n_encoders": 4}).resolved(vocab_size=300, max_len=20))
    parts = parameter_count(cfg)
    assert wider_vocab["encoder"] == parts["encoder"] and wider_vocab["embeddings"] > parts["embeddings"]
    assert deeper["encoder"] == 2 * parts["encoder"] and deeper["embeddings"] == parts["embeddings"] and parts["pkm"] == 0


def test_an_unresolved_config_has_no_count():
    with pytest.raises(ValueError, match="resolved"):
        parameter_count(ModelConfig())


# Keep the config's own checks (embedding_size == hidden_size unless factorised, H % n_heads) passing.
COMPANIONS = {
    "hidden_size": {"factorize_embeddings": True, "n_heads": 1},
    "embedding_size": {"factorize_embeddings": True},
    "n_heads": {"attention_size": 1},
}


@pytest.mark.parametrize("key", sorted(MODEL_BOUNDS))
def test_a_crafted_model_config_past_a_bound_is_refused_naming_the_key(key):
    """E.g. a model directory's config.json with vocab_size 10**12 (256 TB of embeddings)."""
    check_bounds(ModelConfig(), MODEL_BOUNDS, "model")  # every key exists
    tree: dict = {**BASE}
    *parents, last = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = MODEL_BOUNDS[key][1] + 2  # + 2 keeps k_dim even
    tree.update(COMPANIONS.get(key, {}))
    if key == "pkm_params.memory_size":
        node["knn"] = 1
    cfg = from_dict(ModelConfig, tree, "model")  # the config's own checks pass: only the bound is broken
    with pytest.raises(ConfigError, match=rf"^model\.{key.replace('.', '[.]')}: must be in \[\d+, \d+\], got \d+$"):
        check_bounds(cfg, MODEL_BOUNDS, "model")

"""The weight and config maps of ``twilbert.hf.weights``: every parameter crosses the boundary and comes
back unchanged, under exactly the names transformers uses, for every family and variant."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tests.inference.test_hf import VARIANTS, randomised, tiny
from twilbert.hf import import_problems, mlm_head_exportable
from twilbert.hf.weights import FAMILIES, family_of, from_hf_state_dict, hf_config_dict, model_config_from_hf, to_hf_state_dict

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

VOCAB = 150


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_weight_map_round_trips_every_parameter(variant):
    ours = randomised(tiny(VOCAB, **VARIANTS[variant][0]))
    cfg, sd = ours.config, ours.state_dict()
    head = mlm_head_exportable(cfg)
    back = from_hf_state_dict(to_hf_state_dict(ours, with_mlm_head=head), cfg, family_of(cfg).model_type, with_mlm_head=head)
    for key, value in back.items():
        if key in sd:
            assert torch.equal(value, sd[key]), key
        else:  # attention_bias: false (no attention biases) is exported as zero biases
            assert key.split(".")[-3:-1] in (["attn", "qkv"], ["attn", "out"]) and key.endswith(".bias") and not value.any(), key
    carried = {k for k in sd if not k.startswith("rop_head.") and (head or not k.startswith("mlm_head."))}
    assert carried <= set(back), carried - set(back)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_weight_map_names_exactly_the_transformers_parameters(variant):
    cfg = tiny(VOCAB, **VARIANTS[variant][0])
    family, head = family_of(cfg), mlm_head_exportable(cfg)
    hf_cfg = family.hf_class("Config")(**hf_config_dict(cfg))
    if head:
        expected = set(family.hf_class("ForMaskedLM")(hf_cfg).state_dict())
    else:
        expected = {f"{family.model_type}.{k}" for k in family.hf_class("Model")(hf_cfg, add_pooling_layer=False).state_dict()}
    assert set(to_hf_state_dict(randomised(cfg), with_mlm_head=head)) == expected


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_config_map_round_trips_the_architecture(variant):
    cfg = tiny(VOCAB, **VARIANTS[variant][0])
    family = family_of(cfg)
    hf_cfg = family.hf_class("Config")(**hf_config_dict(cfg))
    assert hf_cfg.model_type == family.model_type and import_problems(hf_cfg) == []
    back = model_config_from_hf(hf_cfg, factorize=cfg.factorize_embeddings)
    kept = ("vocab_size", "max_positions", "hidden_size", "embedding_size", "n_encoders", "n_heads", "cross_sharing", "layer_norm_eps")
    for key in kept + ("tie_mlm_decoder",):
        assert getattr(back, key) == getattr(cfg, key), key


def test_families_are_keyed_by_transformers_model_type_and_other_types_are_refused():
    for model_type, family in FAMILIES.items():
        assert family.model_type == model_type == family.hf_class("Config")().model_type
    assert import_problems(SimpleNamespace(model_type="deberta-v2")) == [  # roberta is a family of its own
        "model_type 'deberta-v2': only bert, albert, roberta and xlm-roberta checkpoints can be imported"
    ]

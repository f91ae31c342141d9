"""Initial weights: which model keys may differ from the checkpoint is decided by a rule."""

from __future__ import annotations

from twilbert.config import flatten, to_dict
from twilbert.model.config import ModelConfig
from twilbert.train.initial_weights import architecture, training_only


def test_the_rule_drops_masking_loss_weights_dropouts_and_init():
    full = flatten(to_dict(ModelConfig()))
    dropped = sorted(set(full) - set(flatten(architecture(to_dict(ModelConfig())))))
    assert dropped == sorted(k for k in full if training_only(k))
    # today's ModelConfig: masking, the two loss weights, five dropouts and the init range
    assert {k.split(".")[0] if k.startswith("masked_lm.") else k for k in dropped} == {
        "masked_lm", "rop.loss_weight", "input_dropout", "output_dropout", "attention_dropout", "initializer_range",
        "pkm_params.input_dropout", "pkm_params.output_dropout",
    }


def test_architecture_keys_stay():
    arch = flatten(architecture(to_dict(ModelConfig())))
    for key in ("hidden_size", "n_encoders", "n_heads", "norm", "rop.use_rop", "rop.hidden_size", "pkm_params.memory_size", "tie_mlm_decoder"):
        assert key in arch, key
    assert "masked_lm" not in architecture(to_dict(ModelConfig()))  # a section of training-only keys goes whole

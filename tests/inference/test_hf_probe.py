"""The parity probes of ``twilbert.hf.probe``: a batch shaped like real input (pairs, padding), and
differences that are ~0 for an exact conversion and large for a wrong one."""

from __future__ import annotations

import pytest
import torch

from tests.inference.test_hf import randomised, tiny
from twilbert.hf import to_hf_model
from twilbert.hf.probe import hidden_state_difference, mlm_logit_difference, probe_batch
from twilbert.tokens import CLS_ID, PAD_ID, SEP_ID

pytest.importorskip("transformers")


def test_probe_batch_is_padded_pairs_of_three_lengths():
    ids, types, mask = probe_batch(vocab_size=50, max_positions=41)
    assert ids.shape == types.shape == mask.shape == (3, 24)
    lengths = mask.sum(1).tolist()
    assert lengths == [24, 12, 8]
    for row, n in enumerate(lengths):
        assert ids[row, 0] == CLS_ID and ids[row, n - 1] == SEP_ID
        assert (ids[row, n:] == PAD_ID).all() and (types[row, n:] == 0).all()
        assert types[row, : n // 2].eq(0).all() and types[row, n // 2 : n].eq(1).all()  # segment B: the second half
    assert torch.equal(probe_batch(50, 41)[0], ids) and not torch.equal(probe_batch(50, 41, seed=1)[0], ids)
    assert probe_batch(50, 9)[0].shape == (3, 9)  # never longer than the position table


def test_probes_are_zero_for_an_exact_conversion_and_large_for_a_wrong_one():
    ours = randomised(tiny(150, mlm_transform=True))
    theirs = to_hf_model(ours, with_mlm_head=True)
    assert hidden_state_difference(ours, theirs.bert) <= 1e-5
    assert mlm_logit_difference(ours, theirs) <= 1e-4
    with torch.no_grad():
        theirs.bert.encoder.layer[-1].output.LayerNorm.bias.add_(0.5)
    assert hidden_state_difference(ours, theirs.bert) >= 0.4
    assert mlm_logit_difference(ours, theirs) > 1e-2

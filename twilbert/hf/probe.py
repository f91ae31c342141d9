"""Parity probes: the same small random batch through our model and a transformers one.

Every export and import runs them: a conversion is accepted only when the hidden states (and the MLM
logits, when a head is carried) agree within float rounding (``PARITY_TOL``), so a wrong weight map
fails at conversion time instead of giving a quietly different model.
"""

from __future__ import annotations

import torch

from twilbert.model.twilbert import TWilBERT
from twilbert.tokens import CLS_ID, IGNORE_INDEX, PAD_ID, SEP_ID


def probe_batch(vocab_size: int, max_positions: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, token types, mask) of 3 sequences of different lengths (padding included), pairs included."""
    g = torch.Generator().manual_seed(seed)
    T = min(max_positions, 24)
    lengths = [T, max(3, T // 2), max(3, T // 3)]
    ids = torch.randint(5, vocab_size, (3, T), generator=g)  # (3, T)
    pos = torch.arange(T)[None, :]  # (1, T)
    mask = pos < torch.tensor(lengths)[:, None]  # (3, T)
    ids[:, 0] = CLS_ID
    ids[torch.arange(3), torch.tensor(lengths) - 1] = SEP_ID
    ids = ids.masked_fill(~mask, PAD_ID)
    types = ((pos >= torch.tensor(lengths)[:, None] // 2) & mask).long()  # second half is segment B
    return ids, types, mask


def _their_types(theirs: torch.nn.Module, types: torch.Tensor) -> torch.Tensor:
    """A one-row token-type table (RoBERTa) takes segment 0 everywhere: ours then has two equal rows."""
    return types if getattr(theirs.config, "type_vocab_size", 2) > 1 else torch.zeros_like(types)


@torch.inference_mode()
def hidden_state_difference(ours: TWilBERT, theirs: torch.nn.Module, seed: int = 0) -> float:
    """Max |difference| of the final hidden states at real tokens, ours vs an HF base model."""
    ours.eval()
    theirs.eval()
    ids, types, mask = probe_batch(ours.config.vocab_size, ours.config.max_positions, seed)
    a = ours.encode(ids, types, mask)  # (3, T, H)
    b = theirs(input_ids=ids, token_type_ids=_their_types(theirs, types), attention_mask=mask.long()).last_hidden_state  # (3, T, H)
    return float((a - b).abs()[mask].max())


@torch.inference_mode()
def mlm_logit_difference(ours: TWilBERT, theirs: torch.nn.Module, seed: int = 0) -> float:
    """Max |difference| of the MLM logits at real tokens, ours vs an HF *ForMaskedLM model."""
    ours.eval()
    theirs.eval()
    ids, types, mask = probe_batch(ours.config.vocab_size, ours.config.max_positions, seed)
    a = ours(ids, types, mask, mlm_labels=torch.where(mask, ids, IGNORE_INDEX)).mlm_logits  # (N, V)
    b = theirs(input_ids=ids, token_type_ids=_their_types(theirs, types), attention_mask=mask.long()).logits[mask]  # (N, V)
    return float((a - b).abs().max())

"""Static MLM shapes (``masked_lm.static_targets``): the head sees a fixed number of target slots per
batch shape, padded with ignored rows, while the number of real targets still follows the budget."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from twilbert.data.batching import pad_length
from twilbert.data.masking import mask_tokens, maskable_positions
from twilbert.model import CLS_ID, IGNORE_INDEX, N_SPECIAL, PAD_ID, SEP_ID, MaskedLMConfig, ModelConfig, TWilBERT
from tests.train.loss_oracle import masked_cross_entropy

V = 500
MAX_SEG = 40  # tweet segments of 3..40 tokens, as the pipeline preset's representation.max_len


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=V, max_positions=2 * MAX_SEG + 8, embedding_size=32, hidden_size=32, n_encoders=2, n_heads=4)
    base.update(kw)
    return ModelConfig(**base)


def bucketed_pair_batches(n_rows: int, batch_size: int, seed: int, bucket_width: int = 8):
    """Real-sized training batches: ``[CLS] a [SEP] b [SEP]`` rows with segment lengths uniform in
    [3, 40], grouped by length bucket and cut into batches (as LengthBucketBatches, so a bucket's last
    batch may be partial), right-padded to a multiple of 8, in random batch order."""
    g = torch.Generator().manual_seed(seed)
    len_a = torch.randint(3, MAX_SEG + 1, (n_rows,), generator=g)
    len_b = torch.randint(3, MAX_SEG + 1, (n_rows,), generator=g)
    total = len_a + len_b + 3
    bucket = total // bucket_width
    batches = []
    for k in bucket.unique().tolist():
        rows = torch.nonzero(bucket == k).squeeze(1)
        batches += list(rows.split(batch_size))
    for p in torch.randperm(len(batches), generator=g).tolist():
        idx = batches[p]
        T = pad_length(int(total[idx].max()), 8)
        t = torch.arange(T)
        a_end, b_end = 1 + len_a[idx, None], 2 + len_a[idx, None] + len_b[idx, None]  # (B, 1) [SEP] positions
        ids = torch.randint(N_SPECIAL, V, (len(idx), T), generator=g)
        ids = torch.where(t == 0, CLS_ID, ids)
        ids = torch.where((t == a_end) | (t == b_end), SEP_ID, ids)
        ids = torch.where(t > b_end, PAD_ID, ids)
        types = (t > a_end).long().expand_as(ids) * (ids != PAD_ID)
        yield ids, types, ids != PAD_ID


def test_static_head_equals_the_dynamic_head_on_real_rows():
    """Same logits and targets on the N real rows, ignored filler rows after them, same loss, same
    gradients: static_targets changes shapes, not results."""
    torch.manual_seed(0)
    cfg = tiny(tie_mlm_decoder=True, mlm_transform=True)
    model = TWilBERT(cfg)
    masking = replace(cfg.masked_lm, static_targets=True)
    ids, types, mask = next(bucketed_pair_batches(64, 16, seed=1))
    masked, labels = mask_tokens(ids, maskable_positions(ids, mask), masking, V, generator=torch.Generator().manual_seed(2))
    K = masking.target_slots(ids.numel())
    N = int((labels != IGNORE_INDEX).sum())
    assert 0 < N < K

    dyn = model(masked, types, mask, labels)
    dyn_loss = masked_cross_entropy(dyn.mlm_logits, dyn.mlm_targets)
    dyn_grads = torch.autograd.grad(dyn_loss, list(model.parameters()), allow_unused=True)
    st = model(masked, types, mask, labels, mlm_slots=K)
    st_loss = masked_cross_entropy(st.mlm_logits, st.mlm_targets)
    st_grads = torch.autograd.grad(st_loss, list(model.parameters()), allow_unused=True)

    assert st.mlm_logits.shape == (K, V) and st.mlm_targets.shape == (K,)
    assert torch.equal(st.mlm_targets[:N], dyn.mlm_targets) and (st.mlm_targets[N:] == IGNORE_INDEX).all()
    torch.testing.assert_close(st.mlm_logits[:N], dyn.mlm_logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(st_loss, dyn_loss, rtol=1e-6, atol=1e-7)
    for a, b in zip(st_grads, dyn_grads):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


class RecordOps(TorchDispatchMode):
    """Names of the ATen ops run inside the ``with`` block."""

    def __init__(self):
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name == "aten.index" and any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]):
            name = "aten.index(bool mask)"  # x[mask]: its shape is the number of True values
        self.ops.add(name)
        return func(*args, **(kwargs or {}))


# ops whose output shape depends on tensor *values* (or that copy a value to the host): what makes
# torch.compile fall back to unbacked shapes and makes a CUDA step wait for the GPU
DATA_DEPENDENT = {
    "aten.index(bool mask)",
    "aten.nonzero",
    "aten.masked_select",
    "aten._local_scalar_dense",
    "aten.unique",
    "aten._unique2",
}


def test_static_head_runs_no_data_dependent_op():
    """The fixed-slot head and its loss (forward and backward) run no op with a value-dependent
    shape and no host sync; the dynamic head's boolean gather does (a nonzero), which is the point."""
    cfg = tiny(tie_mlm_decoder=True)
    model = TWilBERT(cfg)
    ids, types, mask = next(bucketed_pair_batches(64, 16, seed=1))
    labels = torch.where(torch.rand(ids.shape) < 0.15, ids, IGNORE_INDEX)
    hidden = torch.randn(*ids.shape, cfg.hidden_size, requires_grad=True)
    table = model.embeddings.token.weight
    with RecordOps() as static:
        logits, targets = model.mlm_head(hidden, labels, table, slots=cfg.masked_lm.target_slots(ids.numel()))
        masked_cross_entropy(logits, targets).backward()
    with RecordOps() as dynamic:
        logits, targets = model.mlm_head(hidden, labels, table)
        masked_cross_entropy(logits, targets).backward()
    assert not static.ops & DATA_DEPENDENT, static.ops & DATA_DEPENDENT
    assert dynamic.ops & DATA_DEPENDENT  # the recorder does see them


def test_static_head_rejects_impossible_slot_counts():
    model = TWilBERT(tiny())
    ids, types, mask = next(bucketed_pair_batches(8, 4, seed=3))
    labels = torch.where(maskable_positions(ids, mask), ids, IGNORE_INDEX)
    with pytest.raises(ValueError, match="slots"):
        model(ids, types, mask, labels, mlm_slots=ids.numel() + 1)
    out = model(ids, types, mask, labels, mlm_slots=0)
    assert out.mlm_logits.shape == (0, V)


@pytest.mark.parametrize("masking", [MaskedLMConfig(type="span"), MaskedLMConfig(type="token")], ids=["span", "token"])
def test_target_shape_is_constant_over_many_variable_batches(masking):
    """300 bucketed batches of 32 tweet pairs: the MLM logits have one shape per batch shape (and a
    single shape for all batches when they are padded to the longest pair), however many real targets
    each batch holds, no real target is lost, and the real targets still make up the budget."""
    masking = replace(masking, static_targets=True)
    model_cfg = tiny(masked_lm=masking)
    head = TWilBERT(model_cfg).mlm_head  # the encoder does not matter for shapes
    gm = torch.Generator().manual_seed(7)
    shapes: dict[tuple[int, int], set] = defaultdict(set)
    real_counts: dict[tuple[int, int], set] = defaultdict(set)
    T_max = pad_length(2 * MAX_SEG + 3, 8)
    global_shapes, n_maskable, n_real, deviations = set(), 0, 0, []
    with torch.no_grad():
        for ids, types, mask in bucketed_pair_batches(32 * 300, 32, seed=5):
            maskable = maskable_positions(ids, mask)
            _, labels = mask_tokens(ids, maskable, masking, V, generator=gm)
            K = masking.target_slots(ids.numel())  # what MaskedBatches puts in batch["mlm_slots"]
            hidden = torch.randn(*ids.shape, model_cfg.hidden_size)  # (B, T, H)
            logits, targets = head(hidden, labels, slots=K)
            shapes[tuple(ids.shape)].add((tuple(logits.shape), tuple(targets.shape)))
            real = int((targets != IGNORE_INDEX).sum())
            assert real == int((labels != IGNORE_INDEX).sum())  # no real target lost to the fixed shape
            real_counts[tuple(ids.shape)].add(real)
            n_maskable += int(maskable.sum())
            n_real += real
            deviations.append((labels != IGNORE_INDEX).sum(1) - masking.budget * maskable.sum(1))
            # the same labels padded to the longest possible pair: one shape for every batch of 32
            if ids.shape[0] == 32:
                padded = torch.nn.functional.pad(labels, (0, T_max - labels.shape[1]), value=IGNORE_INDEX)
                hidden = torch.nn.functional.pad(hidden, (0, 0, 0, T_max - labels.shape[1]))
                logits, targets = head(hidden, padded, slots=masking.target_slots(padded.numel()))
                global_shapes.add(tuple(logits.shape))
                assert int((targets != IGNORE_INDEX).sum()) == real
    assert len(shapes) > 5  # several buckets (and partial batches)...
    for shape, seen in shapes.items():
        assert len(seen) == 1, f"batch shape {shape}: MLM shapes {seen}"  # ...one MLM shape each
    assert max(len(c) for c in real_counts.values()) > 10  # while the real count varies batch to batch
    assert len(global_shapes) == 1
    frac = n_real / n_maskable
    d = torch.cat(deviations).double()
    tol = 4 * math.sqrt(float((d**2).sum())) / n_maskable  # 4 standard errors, estimated from the sample
    assert tol < 0.01 and abs(frac - masking.budget) <= tol, (frac, tol)

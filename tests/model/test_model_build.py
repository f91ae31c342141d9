"""Model construction: shapes of every variant, heads at targets only, init statistics, parameter
counts against the original TWilBERT, the FLOPs estimate against torch's FLOP counter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from twilbert.config import ConfigError
from twilbert.model import (
    IGNORE_INDEX,
    ORIGINAL_SIZES,
    ModelConfig,
    PKMConfig,
    ProductKeyMemory,
    ROPConfig,
    TWilBERT,
    preset_config,
)

V, P = 40, 24  # tiny vocabulary and position table


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=V, max_positions=P, embedding_size=32, hidden_size=32, n_encoders=3, n_heads=4)
    base.update(kw)
    return ModelConfig(**base)


PKM = PKMConfig(k_dim=8, memory_size=6, n_heads=2, knn=3, in_layers=(1,))

VARIANTS = {
    "plain": tiny(),
    "attention_width_ne_H": tiny(attention_size=6, attention_bias=False),  # A*d_k = 24 != H = 32
    "factorised_shared_preln": tiny(factorize_embeddings=True, embedding_size=16, cross_sharing=True, norm="pre"),
    "pkm_bn": tiny(pkm=True, pkm_params=PKM),
    "pkm_factorised_values": tiny(
        pkm=True,
        factorize_embeddings=True,
        embedding_size=16,
        pkm_params=PKMConfig(
            k_dim=8, memory_size=6, n_heads=2, knn=3, in_layers=(0, 2), factorize_embeddings=True, value_size=8
        ),
    ),
    "everything": tiny(
        factorize_embeddings=True,
        embedding_size=16,
        cross_sharing=True,
        norm="pre",
        pkm=True,
        pkm_params=PKM,
        tie_mlm_decoder=True,
        mlm_transform=True,
        rop=ROPConfig(n_hidden=2, hidden_size=12),
        embedding_layer_norm=False,
    ),
    "no_rop": tiny(rop=ROPConfig(use_rop=False)),
}


def batch(B=3, T=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, V, (B, T), generator=g)
    types = (torch.arange(T) >= T // 2).long().expand(B, T)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, -3:] = False
    labels = torch.full((B, T), IGNORE_INDEX)
    labels[0, 2], labels[1, 1], labels[1, 4], labels[2, 7] = 7, 8, 9, 10
    return ids, types, mask, labels


@pytest.mark.parametrize("name", list(VARIANTS))
def test_shapes(name):
    cfg = VARIANTS[name]
    model = TWilBERT(cfg)
    ids, types, mask, labels = batch()
    h = model.encode(ids, types, mask)
    assert h.shape == (3, 9, 32)
    out = model(ids, types, mask, mlm_labels=labels)
    assert out.hidden.shape == (3, 9, 32)
    assert out.mlm_logits.shape == (4, V)  # only the 4 targets
    assert out.mlm_targets.tolist() == [7, 8, 9, 10]  # row-major order
    if cfg.rop.use_rop:
        assert out.rop_logits.shape == (3, 2)
    else:
        assert out.rop_logits is None
    assert torch.isfinite(out.mlm_logits).all()
    (out.mlm_logits.sum() + (out.rop_logits.sum() if out.rop_logits is not None else 0)).backward()


def test_variant_structure():
    m = TWilBERT(VARIANTS["everything"])
    assert m.encoder.layer_plan == (0, 1, 0)  # layers 0 and 2 share a block, layer 1 is a memory
    assert len(m.encoder.blocks) == 2
    assert isinstance(m.encoder.blocks[1].ffn, ProductKeyMemory)
    assert m.encoder.final_norm is not None
    assert m.mlm_head.decoder is None  # tied: the token table is the decoder
    m = TWilBERT(VARIANTS["pkm_factorised_values"])
    pkm = m.encoder.blocks[0].ffn
    assert pkm.values.weight.shape == (36, 8) and pkm.value_proj.in_features == 8
    assert len(m.pkm_value_parameters()) == 2
    att = TWilBERT(VARIANTS["attention_width_ne_H"]).encoder.blocks[0].attn
    assert att.qkv.weight.shape == (3 * 24, 32) and att.out.weight.shape == (32, 24) and att.qkv.bias is None


def test_defaults_and_errors():
    ids = torch.randint(5, V, (2, 5))
    m = TWilBERT(tiny()).eval()
    # token_type_ids=None is segment A, position_ids=None is 0..T-1
    explicit = m.encode(ids, torch.zeros_like(ids), None, torch.arange(5).expand(2, 5))
    torch.testing.assert_close(m.encode(ids), explicit)
    with pytest.raises(ConfigError, match="vocab_size"):
        TWilBERT(ModelConfig())
    with pytest.raises(ValueError, match="backend"):
        TWilBERT(tiny(), attention="flash9000")
    with pytest.raises(ValueError, match="max_positions"):
        m.encode(torch.randint(5, V, (1, P + 1)))
    with pytest.raises(TypeError, match="bool"):
        m.encode(ids, attention_mask=torch.ones(2, 5, dtype=torch.long))


def test_mlm_logits_are_the_decoder_at_targets():
    """Independent recomputation: logits = W h[b, t] + bias at each target (untied and tied+factorised)."""
    ids, types, mask, labels = batch()
    for cfg in (tiny(), VARIANTS["everything"]):
        m = TWilBERT(cfg).eval()
        out = m(ids, types, mask, mlm_labels=labels)
        head = m.mlm_head
        W = m.embeddings.token.weight if cfg.tie_mlm_decoder else head.decoder.weight
        pos = [(0, 2), (1, 1), (1, 4), (2, 7)]
        expected = torch.stack([head.transform(out.hidden[b, t]) @ W.T + head.bias for b, t in pos])
        torch.testing.assert_close(out.mlm_logits, expected)
        if cfg.tie_mlm_decoder:
            assert W.shape == (V, 16)  # the E-wide token table: the head projects H -> E first
            m.zero_grad()
            out.mlm_logits.logsumexp(-1).sum().backward()
            assert m.embeddings.token.weight.grad is not None
    assert all("decoder" not in k for k in TWilBERT(VARIANTS["everything"]).state_dict())  # no aliased tensor


def _truncated_std(std: float, cut: float = 2.0) -> float:
    """Std of N(0, std^2) truncated to +-cut*std (closed form), what TF's TruncatedNormal(0, std) gives."""
    phi = math.exp(-cut * cut / 2) / math.sqrt(2 * math.pi)
    Z = math.erf(cut / math.sqrt(2))  # P(|x| < cut)
    return std * math.sqrt(1 - 2 * cut * phi / Z)


def test_init_statistics_including_heads():
    r = 0.03
    cfg = tiny(
        hidden_size=64, embedding_size=64, vocab_size=300, initializer_range=r, mlm_transform=True,
        rop=ROPConfig(n_hidden=1, hidden_size=64),
        pkm=True, pkm_params=PKMConfig(k_dim=16, memory_size=16, n_heads=2, knn=4, in_layers=(2,)),
    )
    m = TWilBERT(cfg)
    expected_std = _truncated_std(r)
    checked = []
    for name, mod in m.named_modules():
        if isinstance(mod, (nn.Linear, nn.Embedding, nn.EmbeddingBag)):
            w = mod.weight.detach().flatten()
            assert w.abs().max() <= 2 * r + 1e-7, name
            n = w.numel()
            assert abs(w.mean()) < 5 * expected_std / math.sqrt(n), name  # mean 0, not the original heads' 0.02
            if n >= 2000:
                assert abs(w.std() / expected_std - 1) < 0.1, (name, w.std(), expected_std)
            if getattr(mod, "bias", None) is not None:
                assert (mod.bias == 0).all(), name
            checked.append(name)
        if isinstance(mod, (nn.LayerNorm, nn.BatchNorm1d)):
            assert (mod.weight == 1).all() and (mod.bias == 0).all(), name
    assert {"mlm_head.decoder", "mlm_head.transform.0", "rop_head.hidden.0", "rop_head.classifier"} <= set(checked)
    assert (m.mlm_head.bias == 0).all()
    # ROP + MLM head weights pooled: the original's bug would give mean 0.02, std 0.05
    heads = torch.cat(
        [p.detach().flatten() for n, p in m.named_parameters() if n.startswith(("rop_head", "mlm_head")) and p.dim() == 2]
    )
    assert abs(heads.mean()) < 1e-3 and abs(heads.std() / expected_std - 1) < 0.05
    keys = m.encoder.blocks[2].ffn.keys.detach()
    bound = 1 / math.sqrt(8)
    assert keys.abs().max() <= bound and abs(keys.std() / (bound / math.sqrt(3)) - 1) < 0.15  # uniform(+-b)


# Original TWilBERT sizes, counted by model.summary() of the original's notebook (why ours differ:
# docs/deviations.md#token-table-rows).
ORIGINAL_PARAMS = {"twilbert-base": 81_747_508, "twilbert-large": 131_334_196}


@pytest.mark.parametrize("name", list(ORIGINAL_PARAMS))
def test_preset_parameter_counts_match_the_original(name):
    cfg = preset_config(name, **ORIGINAL_SIZES)
    with torch.device("meta"):  # no memory, no init cost
        m = TWilBERT(cfg)
    ours = m.num_parameters()
    # The original's token table had vocab_size + 1 rows for a vocab_size-way softmax; the extra row was
    # never used, ours has exactly vocab_size rows: one row of width E = 768 fewer
    # (docs/deviations.md#token-table-rows).
    unused_row = cfg.embedding_size
    print(f"{name}: ours {ours:,} vs original {ORIGINAL_PARAMS[name]:,} (difference {unused_row} = one unused token row)")
    assert ours + unused_row == ORIGINAL_PARAMS[name]
    # and by hand, block by block: Q, K, V (A·H·d each, no biases), output (A·d·H), FFN (H·4H + 4H and
    # 4H·H + H), two LayerNorms (2·2H)
    H, A, d = 768, cfg.n_heads, 64
    block = A * 3 * H * d + A * d * H + (H * 4 * H + 4 * H) + (4 * H * H + H) + 4 * H
    enc = sum(p.numel() for p in m.encoder.parameters())
    assert enc == cfg.n_encoders * block
    assert block == {6: 5_905_152, 12: 7_084_800}[A]
    assert m.num_parameters(unique=False) == ours  # nothing shared or tied


@pytest.mark.parametrize("name", list(ORIGINAL_PARAMS))
def test_preset_parameter_count_as_the_pipeline_builds_it(name):
    """The preset as ``twilbert preset`` + the pretrain stage build it: vocabulary from
    ``vocab.vocab_size`` (30 000), positions from ``representation.max_len`` (2 * max_len + 3). Every
    vocabulary entry costs a token-table row (E), a decoder row (H) and a decoder bias; every position a
    position-table row (E). The count differs from the original-sizes build by exactly that."""
    from pipeline.presets import preset_overrides

    overrides = preset_overrides(name)
    cfg = preset_config(name).resolved(vocab_size=overrides["vocab.vocab_size"], max_len=overrides["representation.max_len"])
    original = preset_config(name, **ORIGINAL_SIZES)
    with torch.device("meta"):
        ours, at_original_sizes = TWilBERT(cfg).num_parameters(), TWilBERT(original).num_parameters()
    d_vocab = cfg.vocab_size - original.vocab_size
    d_pos = cfg.max_positions - original.max_positions
    per_vocab_entry = cfg.embedding_size + cfg.hidden_size + 1  # token row + untied decoder row + bias
    assert not cfg.tie_mlm_decoder and not cfg.factorize_embeddings
    assert ours - at_original_sizes == d_vocab * per_vocab_entry + d_pos * cfg.embedding_size
    vs_original = ours - ORIGINAL_PARAMS[name]
    assert vs_original == -cfg.embedding_size + d_vocab * per_vocab_entry + d_pos * cfg.embedding_size
    print(
        f"{name} as the pipeline builds it (vocab {cfg.vocab_size}, {cfg.max_positions} positions): {ours:,} "
        f"parameters, {vs_original:+,} vs the original's {ORIGINAL_PARAMS[name]:,}: one unused token row "
        f"(-{cfg.embedding_size}), {d_vocab:+} vocabulary entries x {per_vocab_entry} and {d_pos:+} positions x "
        f"{cfg.embedding_size} (the original sized its table for max_len 128, but no sequence was longer than 83)"
    )


def test_preset_config_overrides_and_validation():
    cfg = preset_config("twilbert-base", rop={"use_rop": False}, vocab_size=100, max_positions=20)
    assert cfg.rop.use_rop is False and cfg.rop.hidden_size == 512 and cfg.n_encoders == 6
    with pytest.raises(KeyError):
        preset_config("twilbert-huge")
    with pytest.raises(ConfigError, match="model.n_encoder"):
        preset_config("twilbert-base", n_encoder=3)


@pytest.mark.parametrize("with_pkm", [False, True], ids=["plain", "pkm"])
def test_flops_estimate_against_a_flop_counter(with_pkm):
    """estimate_flops_per_token against matmul FLOPs *measured* by torch's FlopCounterMode on a real
    forward + backward (MLM at ~15% of the positions, ROP on [CLS], attention width A*d_k != H).

    FlopCounterMode counts matrix products only (mm, addmm, bmm; an eager-attention model so that the
    attention products are plain bmm). The estimate's ``6 N`` also counts every bias and norm gain as if
    it were a matmul weight, and adds the PKM value read (an embedding_bag, not a matmul). So the
    estimate must exceed the count by exactly 6 * (vector parameters each token passes) per token
    + 6 * (MLM bias) per target + 6 * (ROP bias) per row + 3 * (PKM value read) per token, and by
    less than 3% in all. Softmax, GELU, LayerNorm and top-k element-wise work is in neither number.
    """
    from torch.utils.flop_counter import FlopCounterMode

    pkm = PKMConfig(k_dim=16, memory_size=32, n_heads=2, knn=4, in_layers=(1,))
    cfg = tiny(vocab_size=1000, max_positions=64, hidden_size=64, embedding_size=64, attention_size=12, pkm=with_pkm, pkm_params=pkm)
    m = TWilBERT(cfg, attention="eager")
    B, T = 4, 32
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (B, T), generator=g)
    is_target = torch.rand(B, T, generator=g) < 0.15
    labels = torch.where(is_target, ids, IGNORE_INDEX)
    n_targets, tokens = int(is_target.sum()), B * T
    with FlopCounterMode(display=False) as counter:
        out = m(ids, None, None, labels)
        (torch.nn.functional.cross_entropy(out.mlm_logits, out.mlm_targets) + out.rop_logits.logsumexp(-1).sum()).backward()
    counted = counter.get_total_flops()
    estimated = m.estimate_flops_per_token(T, mlm_fraction=n_targets / tokens) * tokens

    vectors = sum(p.numel() for b in m.encoder.layer_plan for p in m.encoder.blocks[b].parameters() if p.dim() == 1)
    vectors += sum(p.numel() for p in m.embeddings.norm.parameters())  # embedding LayerNorm
    not_matmul = 6 * tokens * vectors + 6 * n_targets * cfg.vocab_size + 6 * B * 2
    if with_pkm:
        not_matmul += 3 * tokens * 2 * pkm.n_heads * pkm.knn * cfg.hidden_size  # embedding_bag fwd + bwd
    print(f"FLOPs fwd+bwd: counted {counted:,}, estimated {estimated:,.0f} (+{estimated / counted - 1:.2%})")
    assert estimated - counted == pytest.approx(not_matmul, rel=1e-9)
    assert 0 < estimated / counted - 1 < 0.03
    mfu = m.estimate_mfu(tokens_per_s=1e6, peak_flops=1e15, seq_len=T)
    assert mfu == pytest.approx(m.estimate_flops_per_token(T) * 1e6 / 1e15)


def test_sharing_counts():
    shared = TWilBERT(tiny(cross_sharing=True, n_encoders=4))
    unshared = TWilBERT(tiny(n_encoders=4))
    block = sum(p.numel() for p in shared.encoder.blocks[0].parameters())
    assert shared.num_parameters() + 3 * block == unshared.num_parameters()
    assert shared.num_parameters(unique=False) == unshared.num_parameters()
    tables = sum(p.numel() for p in unshared.embeddings.parameters())  # embedding LN is 2*32
    assert unshared.num_parameters(non_embedding=True) == unshared.num_parameters() - tables + 64


def test_non_embedding_count_keeps_a_tied_decoder():
    m = TWilBERT(tiny(tie_mlm_decoder=True))
    e = m.embeddings
    token, pos, seg = e.token.weight.numel(), e.position.weight.numel(), e.segment.weight.numel()
    assert m.num_parameters(non_embedding=True) == m.num_parameters() - pos - seg
    assert m.num_parameters(unique=False) == m.num_parameters() + token  # the table is used twice
    assert m.num_parameters(unique=False, non_embedding=True) == m.num_parameters() - pos - seg

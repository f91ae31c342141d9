"""What only a GPU can show: bf16 autocast, torch.compile on bucketed shapes, the SDPA kernels, PKM and
a checkpoint round trip from GPU to CPU, each against a reference computed beside it.

Marked ``cuda`` and skipped without a CUDA device (``make test`` on a CPU machine skips them all;
``benchmarks/gpu_suite.sh`` runs them on a lent GPU). ``TWILBERT_TEST_DEVICE=cpu`` runs the same checks
on CPU: a check of the tests themselves, not of any GPU kernel.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch

from tests.model.test_model_equivalence import PKM, padded_batch, tiny
from tests.train.test_pretrain_fixtures import build_inputs, cpu_impl, tiny_model, tiny_run, tiny_training
from twilbert.finetune.model import load_encoder
from twilbert.model import TWilBERT
from twilbert.tokens import IGNORE_INDEX
from twilbert.train.pretrain import pretrain
from twilbert.train.runtime import maybe_compile

DEVICE = torch.device(os.environ.get("TWILBERT_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
]


@pytest.fixture(autouse=True)
def _exact_fp32_matmuls():
    """fp32 comparisons in full fp32: the Pretrainer turns TF32 on for the process (enable_tf32)."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def on_device(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(DEVICE) for t in tensors)


def mlm_labels(ids: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Every third real token a target (its own id), the rest IGNORE_INDEX: (B, T) long."""
    g = torch.Generator().manual_seed(seed)
    pick = (torch.rand(ids.shape, generator=g) < 0.35) & mask.cpu()
    pick[:, 1] = mask[:, 1].cpu()  # at least one target per non-empty row
    return torch.where(pick, ids.cpu(), torch.full_like(ids.cpu(), IGNORE_INDEX)).to(ids.device)


def mlm_loss(model: TWilBERT, ids, types, mask, labels) -> torch.Tensor:
    out = model(ids, types, mask, labels)
    return torch.nn.functional.cross_entropy(out.mlm_logits.float(), out.mlm_targets) + out.hidden.float()[mask].square().mean()


def grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None])  # (P,)


def test_bf16_autocast_forward_backward_is_finite_and_close_to_fp32():
    torch.manual_seed(0)
    model = TWilBERT(tiny(pkm=True, pkm_params=PKM)).to(DEVICE).train()
    ids, types, mask = on_device(*padded_batch())
    labels = mlm_labels(ids, mask)
    fp32 = mlm_loss(model, ids, types, mask, labels)
    fp32.backward()
    g32 = grads(model)
    model.zero_grad(set_to_none=True)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        bf16 = mlm_loss(model, ids, types, mask, labels)
    bf16.backward()
    g16 = grads(model)
    assert math.isfinite(bf16.item()) and torch.isfinite(g16).all()
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0).item() > 0.99  # same direction up to bf16 rounding
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast keeps fp32 master weights


def test_compile_on_bucketed_shapes_compiles_once_per_bucket():
    """Two bucket lengths (T = 16, 24) warm the compiled model: a static graph, then one dynamic-T
    recompile (maybe_compile). Further batches of those lengths compile nothing; the epoch's partial
    batch costs at most one more (dynamic B), and after it nothing compiles again."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    eager = TWilBERT(tiny(max_positions=32)).to(DEVICE).eval()
    compiled = maybe_compile(copy.deepcopy(eager), True)
    torch._dynamo.reset()

    def batch(B: int, T: int, seed: int):
        ids, types, mask = padded_batch(B=min(B, 4), T=T, seed=seed)
        rep = (B + ids.shape[0] - 1) // ids.shape[0]
        ids, types, mask = (t.repeat(rep, 1)[:B] for t in (ids, types, mask))  # (B, T)
        return on_device(ids, types, mask)

    def run(shapes, seed):
        for i, (B, T) in enumerate(shapes):
            ids, types, mask = batch(B, T, seed=seed + i)
            out = compiled(ids, types, mask).hidden  # (B, T, H); the compiled module is its forward
            torch.testing.assert_close(out[mask], eager.encode(ids, types, mask)[mask], rtol=1e-4, atol=1e-4)
        return counters["frames"]["ok"]

    with torch.no_grad():
        buckets = run([(8, 16), (8, 24)], seed=0)
        assert 1 <= buckets <= 2, f"{buckets} compilations for two bucket lengths"
        assert run([(8, 16), (8, 24), (8, 24), (8, 16)], seed=10) == buckets, "recompiled on a bucket already seen"
        partial = run([(5, 16)], seed=20)
        assert partial <= buckets + 1
        assert run([(5, 24), (8, 16), (3, 24), (8, 24)], seed=30) == partial, "recompiled after the shapes were dynamic"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_sdpa_matches_eager_attention(dtype):
    torch.manual_seed(0)
    cfg = tiny(attention_size=8, pkm=True, pkm_params=PKM)
    sdpa = TWilBERT(cfg, attention="sdpa").to(DEVICE).eval()
    eager = TWilBERT(cfg, attention="eager").to(DEVICE).eval()
    eager.load_state_dict(sdpa.state_dict())
    ids, types, mask = on_device(*padded_batch())
    tol = dict(rtol=0, atol=1e-4) if dtype == torch.float32 else dict(rtol=0, atol=5e-2)
    with torch.no_grad(), torch.autocast(DEVICE.type, dtype=dtype, enabled=dtype != torch.float32):
        a, b = sdpa.encode(ids, types, mask), eager.encode(ids, types, mask)  # (B, T, H)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a[mask].float(), b[mask].float(), **tol)


def test_pkm_forward_backward_on_device_equals_cpu():
    torch.manual_seed(0)
    cpu = TWilBERT(tiny(pkm=True, pkm_params=PKM)).train()
    dev = copy.deepcopy(cpu).to(DEVICE)
    ids, types, mask = padded_batch()
    labels = mlm_labels(ids, mask)
    for model, inputs in ((cpu, (ids, types, mask, labels)), (dev, on_device(ids, types, mask, labels))):
        mlm_loss(model, *inputs).backward()
    torch.testing.assert_close(grads(dev).cpu(), grads(cpu), rtol=1e-3, atol=1e-5)
    for (name, a), b in zip(cpu.named_buffers(), dev.buffers()):  # PKM batch-norm running stats
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """A short Pretrainer run on the device (bf16 autocast), as ``twilbert pretrain`` runs it."""
    inputs = build_inputs(tmp_path_factory.mktemp("cuda-inputs"))
    logged = []
    summary = pretrain(
        model_cfg=tiny_model(inputs["vocab_size"]),
        training=tiny_training(max_steps=4),
        impl=cpu_impl(device=str(DEVICE), precision="bf16", num_threads=0),
        run=tiny_run(),
        shards_dir=inputs["shards"],
        tokenizer_path=inputs["tokenizer"],
        out_dir=tmp_path_factory.mktemp("cuda-run"),
        log_fn=lambda m, s: logged.append(m),
        progress=False,
    )
    return summary, logged


def test_short_pretrainer_run_on_device(gpu_run):
    summary, logged = gpu_run
    assert summary["steps"] == 4 and summary["precision"] == "bfloat16"
    assert torch.device(summary["device"]).type == DEVICE.type
    assert len(logged) == 4 and all(math.isfinite(m["loss"]) for m in logged)


def test_checkpoint_saved_on_device_loads_on_cpu_with_the_same_outputs(gpu_run):
    summary, _ = gpu_run
    on_cpu = load_encoder(summary["final_dir"]).eval()
    on_dev = load_encoder(summary["final_dir"]).to(DEVICE).eval()
    assert all(p.device.type == "cpu" for p in on_cpu.parameters())
    ids, types, mask = padded_batch(T=8)
    ids = ids.clamp(max=on_cpu.config.vocab_size - 1)
    with torch.no_grad():
        a = on_cpu(ids, types, mask)
        b = on_dev(*on_device(ids, types, mask))
    torch.testing.assert_close(b.hidden.cpu()[mask], a.hidden[mask], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b.rop_logits.cpu(), a.rop_logits, rtol=1e-4, atol=1e-4)

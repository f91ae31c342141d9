"""Batch parallelism on the CPU (``Predictor.workers``): batches run side by side, one intra-op thread
each, and give the same outputs as one batch at a time (fp32 to float rounding, int8 exactly: its
kernels do not split a batch's sums across threads); the caller keeps its thread count; a worker's
error reaches the caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.inference.test_predict import TEXTS, models  # noqa: F401
from twilbert.inference import InputError


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_parallel_batches_equal_one_batch_at_a_time(models, two_threads, precision):
    import twilbert

    serial = twilbert.load(models["single"], precision=precision, workers=1)
    parallel = twilbert.load(models["single"], precision=precision)  # 0: one worker per torch thread
    assert serial._workers() == 1 and parallel._workers() == 2
    texts = TEXTS * 5  # several batches of 3, of different lengths
    got, want = parallel.outputs(texts, batch_size=3), serial.outputs(texts, batch_size=3)
    assert got.shape == want.shape == (len(texts), len(serial.labels))
    if precision == "int8":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    for pooling in ("cls", "mean"):
        e_got = parallel.embed(texts, pooling=pooling, batch_size=4)
        e_want = serial.embed(texts, pooling=pooling, batch_size=4)
        np.testing.assert_allclose(e_got, e_want, rtol=0, atol=1e-5)
    assert [r["label"] for r in parallel.predict(texts, batch_size=2)] == [r["label"] for r in serial.predict(texts, batch_size=2)]


def test_bf16_autocast_reaches_the_workers(models, two_threads):
    """Autocast is thread-local: each worker enters it, so bf16 in parallel equals bf16 one at a time."""
    import twilbert

    texts = TEXTS * 3
    par = twilbert.load(models["single"], precision="bf16").outputs(texts, batch_size=3)
    one = twilbert.load(models["single"], precision="bf16", workers=1).outputs(texts, batch_size=3)
    fp32 = twilbert.load(models["single"], workers=1).outputs(texts, batch_size=3)
    np.testing.assert_allclose(par, one, rtol=0, atol=1e-5)
    assert np.abs(par - fp32).max() > 0  # really bf16 in the workers, not fp32


def test_the_caller_keeps_its_thread_count(models, two_threads):
    import twilbert

    p = twilbert.load(models["single"])
    p.outputs(TEXTS * 4, batch_size=2)
    assert torch.get_num_threads() == 2  # the workers' one thread each did not stick to the caller


def test_a_worker_error_reaches_the_caller(models, two_threads, monkeypatch):
    import twilbert

    p = twilbert.load(models["single"])

    def broken(*args, **kwargs):
        raise RuntimeError("boom in a worker")

    monkeypatch.setattr(p.classifier, "forward", broken)
    with pytest.raises(RuntimeError, match="boom in a worker"):
        p.outputs(TEXTS * 4, batch_size=2)


def test_negative_workers_are_refused(models):
    import twilbert

    with pytest.raises(InputError, match="workers"):
        twilbert.load(models["single"], workers=-1)


def test_one_batch_keeps_the_callers_thread_and_its_intra_op_threads(models, two_threads, monkeypatch):
    """Workers are capped by the batch count: a single batch (one text, a small pyfunc request) is not
    sent to a one-thread worker while the other core idles."""
    import threading

    import twilbert

    p = twilbert.load(models["single"])
    seen = []
    forward = p.classifier.forward

    def spy(*args, **kwargs):
        seen.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads()))
        return forward(*args, **kwargs)

    monkeypatch.setattr(p.classifier, "forward", spy)
    p.outputs(TEXTS, batch_size=len(TEXTS))
    assert seen == [(True, 2)]
    seen.clear()
    p.outputs(TEXTS * 4, batch_size=len(TEXTS))  # four batches: two workers of one thread each
    assert set(seen) == {(False, 1)}

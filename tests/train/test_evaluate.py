"""evaluate_pretrained: every number re-computed here by a different route (full-vocabulary logits and
F.cross_entropy, sklearn, collections.Counter, a slow one-position-at-a-time PLL loop), and so is every
example of the report (masked input, references, predictions, ROP prediction and probability)."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from tests.train.loss_oracle import pretraining_loss
from twilbert.data.masking import mask_tokens, maskable_positions
from twilbert.data.pairs import PairsConfig, build_pair_shards
from twilbert.data.shards import ShardDataset, iter_rows
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import Tokenizer
from twilbert.text.vocab import VocabConfig, train_vocab
from twilbert.tokens import CLS_ID, MASK_ID, N_SPECIAL, SEP_ID
from twilbert.train.evaluate import evaluate_pretrained

SYLLABLES = "ca sa pe lo mi tu ra no que bien ja je ma ña ción des pa ri to lu go ve fi cho lla gue rá té so ta ba en al es".split()
MAX_LEN = 12
BATCH = 8
SEED = 7


def _lines(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    lexicon = ["".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(120)]
    zipf = 1.0 / np.arange(1, len(lexicon) + 1)  # skewed word frequencies: a real majority token
    return [" ".join(rng.choice(lexicon, rng.integers(2, 10), p=zipf / zipf.sum())) for _ in range(n)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    texts = _lines(260, 0)
    pq.write_table(
        pa.table({"orig_id": [f"o{i}" for i in range(110)], "orig_text": texts[:110],
                  "reply_id": [f"r{i}" for i in range(110)], "reply_text": texts[110:220]}),
        root / "pairs.parquet",
    )
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(40)], "text": texts[220:]}), root / "tweets.parquet")
    tok = Tokenizer.from_file(train_vocab(texts, VocabConfig(vocab_size=120, input_sentence_size=0), root / "v" / "spm"))
    cfg = PairsConfig(valid_fraction=0.3, test_fraction=0.1, rows_per_shard=16, chunk_rows=64)
    build_pair_shards(root / "pairs.parquet", root / "tweets.parquet", tok, cfg, MAX_LEN, root / "shards", progress=False)

    mcfg = ModelConfig(hidden_size=32, embedding_size=32, n_encoders=2, n_heads=2).resolved(vocab_size=tok.vocab_size, max_len=MAX_LEN)
    torch.manual_seed(0)
    model = _trained(TWilBERT(mcfg), ShardDataset(root / "shards", "train"))
    return {"shards": root / "shards", "tok": tok, "model": model, "root": root}


def _trained(model: TWilBERT, ds: ShardDataset, steps: int = 40) -> TWilBERT:
    """A few steps of MLM + ROP so predictions are neither constant nor random."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        ids, types, rop = (torch.from_numpy(x) for x in ds.packed(rng.choice(len(ds), 32, replace=False)))
        real = ids != 0
        masked, labels = mask_tokens(ids, maskable_positions(ids, real), model.config.masked_lm, model.config.vocab_size, generator=g)
        out = model(masked, types, real, mlm_labels=labels)
        loss = pretraining_loss(out, None, torch.where(rop < 0, -100, rop), model.config).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _reference_pass(model: TWilBERT, ds: ShardDataset, per_row: dict | None = None, seed: int = SEED):
    """The documented procedure, by hand: length order, one seeded generator, full-vocabulary logits.
    ``per_row`` (dataset row -> {}) is filled with what the report should show for those rows."""
    order = np.argsort(ds.lengths, kind="stable")
    g = torch.Generator().manual_seed(seed)
    logits, targets, shown, rop_logits, rop_labels = [], [], [], [], []
    with torch.no_grad():
        for s in range(0, len(order), BATCH):
            ids, types, rop = (torch.from_numpy(x) for x in ds.packed(order[s : s + BATCH]))
            real = ids != 0
            masked, labels = mask_tokens(ids, maskable_positions(ids, real), model.config.masked_lm, model.config.vocab_size, generator=g)
            hidden = model.encode(masked, types, real)  # (B, T, H), mask always passed
            everywhere = torch.zeros_like(labels)  # every position a "target": full (B*T, V) logits
            full, _ = model.mlm_head(hidden, everywhere)
            full = full.view(*labels.shape, -1)  # (B, T, V)
            at = labels != -100
            logits.append(full[at])
            targets.append(labels[at])
            shown.append(masked[at] == MASK_ID)
            rop_logits.append(model.rop_head(hidden))
            rop_labels.append(rop)
            for r, row in enumerate(order[s : s + BATCH]):
                if per_row is not None and int(row) in per_row:
                    pos = torch.nonzero(at[r]).squeeze(1)  # (n,) target positions of this row
                    p = torch.softmax(rop_logits[-1][r].double(), -1)  # (2,)
                    per_row[int(row)] = {
                        "masked": masked[r][real[r]].tolist(),
                        "positions": pos.tolist(),
                        "reference": ids[r, pos].tolist(),
                        "predicted": full[r, pos].argmax(-1).tolist(),
                        "rop_label": int(rop[r]),
                        "rop_pred": int(p.argmax()),
                        "p_in_order": float(p[1]),
                    }
    cat = torch.cat
    return cat(logits), cat(targets), cat(shown), cat(rop_logits), cat(rop_labels)


def test_metrics_match_independent_computations(setup):
    model, tok, shards = setup["model"], setup["tok"], setup["shards"]
    ds = ShardDataset(shards, "valid")
    res = evaluate_pretrained(model, shards, "valid", tok, batch_size=BATCH, seed=SEED, pll_sentences=0, report_examples=0)
    m = res.metrics
    logits, targets, shown, rop_logits, rop_labels = _reference_pass(model, ds)

    # MLM
    assert m["rows"] == len(ds) and m["mlm_targets"] == targets.numel() > 20
    ce = F.cross_entropy(logits.double(), targets)
    assert m["mlm_loss"] == pytest.approx(float(ce), rel=1e-5)
    assert m["mlm_perplexity"] == pytest.approx(math.exp(float(ce)), rel=1e-5)
    pred = logits.argmax(-1)
    assert m["mlm_accuracy"] == pytest.approx(float((pred == targets).double().mean()))
    assert 0 < m["mlm_accuracy"] < 1
    assert m["mlm_accuracy_mask_token"] == pytest.approx(float((pred == targets)[shown].double().mean()))

    # Baselines from train-split counts
    counts = Counter()
    for row in iter_rows(shards, "train"):
        counts.update(int(t) for t in row.a)
        counts.update(int(t) for t in row.b)
    maskable = {t: c for t, c in counts.items() if t >= N_SPECIAL}
    total = sum(maskable.values())
    assert m["baseline_train_tokens"] == total
    # the unigram-frequency guesser: the most frequent train token, at every target
    top = max(maskable.values())
    guess = m["baseline_unigram_token_id"]
    assert maskable[guess] == top
    assert m["baseline_unigram_accuracy"] == pytest.approx(sum(int(t) == guess for t in targets) / targets.numel())
    assert m["baseline_unigram_accuracy"] > 0
    # sampling by the train frequencies: expected accuracy = mean frequency of the target
    sampled = sum(maskable.get(int(t), 0) / total for t in targets) / targets.numel()
    assert m["baseline_unigram_sampled_accuracy"] == pytest.approx(sampled, rel=1e-9)
    assert 0 < m["baseline_unigram_sampled_accuracy"] < m["baseline_unigram_accuracy"]
    assert m["baseline_unigram_token_id"] == guess and "baseline_majority_accuracy" not in m
    V = tok.vocab_size
    denom = sum(maskable.values()) + (V - N_SPECIAL)
    unigram_ce = -sum(math.log((maskable.get(int(t), 0) + 1) / denom) for t in targets)
    assert m["baseline_unigram_loss"] == pytest.approx(unigram_ce / targets.numel(), rel=1e-9)
    assert m["baseline_unigram_perplexity"] == pytest.approx(math.exp(unigram_ce / targets.numel()), rel=1e-9)

    # ROP on labelled rows only
    has = rop_labels >= 0
    y, p = rop_labels[has].numpy(), rop_logits[has].argmax(-1).numpy()
    assert m["rop_examples"] == int(has.sum()) > 0 and m["rop_examples"] < len(ds)  # MLM-only rows left out
    assert m["rop_accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["rop_f1"] == pytest.approx(f1_score(y, p, pos_label=1, zero_division=0))
    assert m["rop_precision"] == pytest.approx(precision_score(y, p, pos_label=1, zero_division=0))
    assert m["rop_recall"] == pytest.approx(recall_score(y, p, pos_label=1, zero_division=0))
    assert m["rop_loss"] == pytest.approx(float(F.cross_entropy(rop_logits[has].double(), rop_labels[has])), rel=1e-5)


def test_pseudo_log_likelihood_matches_a_slow_loop(setup):
    model, tok, shards = setup["model"], setup["tok"], setup["shards"]
    ds = ShardDataset(shards, "test")
    res = evaluate_pretrained(model, shards, "test", tok, batch_size=BATCH, seed=SEED, pll_sentences=10_000, report_examples=0)
    segments = {tuple(int(t) for t in r.a) for r in iter_rows(shards, "test")}  # all distinct segments
    total, n_tok, sums = 0.0, 0, []
    with torch.no_grad():
        for seg in segments:
            x = torch.tensor([CLS_ID, *seg, SEP_ID])
            s, n = 0.0, 0
            for t in range(1, len(x) - 1):  # one forward per position
                if x[t] < N_SPECIAL:
                    continue
                xm = x.clone()
                xm[t] = MASK_ID
                hidden = model.encode(xm[None])
                logits, _ = model.mlm_head(hidden, torch.zeros(1, len(x), dtype=torch.long))  # (T, V)
                s += float(torch.log_softmax(logits.double(), -1)[t, x[t]])
                n += 1
            total, n_tok = total + s, n_tok + n
            sums.append((s, n))
    per_sentence = [s / n for s, n in sums]
    m = res.metrics
    assert m["pll_sentences"] == len(segments) > 5
    assert m["pll_tokens"] == n_tok
    assert m["pll_per_token"] == pytest.approx(total / n_tok, rel=1e-5)
    assert m["pll_sentence_mean"] == pytest.approx(np.mean(per_sentence), rel=1e-5)
    assert m["pseudo_perplexity"] == pytest.approx(math.exp(-total / n_tok), rel=1e-5)
    # the original divided by T including [CLS]/[SEP]; ours divides by scored tokens, so it is lower
    original = np.mean([s / (n + 2) for s, n in sums])
    assert m["pll_sentence_mean"] < original < 0


_EXAMPLE = re.compile(r"^### Example \d+ \(row (\d+)\)$(.*?)(?=^### Example|\Z)", re.M | re.S)
_TARGET_ROW = re.compile(r"^\| (\d+) \| `(.*?)` \| `(.*?)` \| `(.*?)` \| (ok|x) \|$", re.M)
_ROP = re.compile(r"^- \*\*ROP\*\*: label (.*?); predicted (\d), p\(in order\) = ([0-9.]+)$", re.M)


def test_deterministic_and_report_examples_match_an_independent_pass(setup):
    model, tok, shards = setup["model"], setup["tok"], setup["shards"]
    kw = dict(batch_size=BATCH, seed=SEED, pll_sentences=4, report_examples=3)
    a = evaluate_pretrained(model, shards, "valid", tok, **kw)
    b = evaluate_pretrained(model, shards, "valid", tok, **kw)
    assert a.metrics == b.metrics and a.report_md == b.report_md
    assert a.metrics["pll_sentences"] == 4
    c = evaluate_pretrained(model, shards, "valid", tok, **{**kw, "seed": SEED + 1})
    assert c.metrics["mlm_loss"] != a.metrics["mlm_loss"]  # the seed really drives the masks

    # the summary table holds every metric, with its value
    for key, value in a.metrics.items():
        (cell,) = re.findall(rf"^\| {re.escape(key)} \| (.*) \|$", a.report_md, re.M)
        if value is None:
            assert cell == "n/a"
        else:
            assert float(cell) == pytest.approx(value, abs=5e-5 if isinstance(value, float) else 0)

    # the examples: rows drawn by the seed; everything they show recomputed by the reference pass
    ds = ShardDataset(shards, "valid")
    sections = _EXAMPLE.findall(a.report_md)
    rows = [int(r) for r, _ in sections]
    assert rows == sorted(np.random.default_rng(SEED).choice(len(ds), size=3, replace=False).tolist())
    want = {r: None for r in rows}
    _reference_pass(model, ds, want)
    piece = tok.id_to_piece
    for (row, body), (_, ref) in zip(sections, sorted(want.items())):
        assert f"- **a**: `{tok.decode(ds[int(row)].a)}`" in body
        masked_line = re.search(r"^- \*\*masked input\*\*: `(.*)`$", body, re.M).group(1)
        assert masked_line.count("[MASK]") == sum(t == MASK_ID for t in ref["masked"])
        table = _TARGET_ROW.findall(body)
        assert [int(p) for p, *_ in table] == ref["positions"] and ref["positions"]
        assert [r for _, _, r, _, _ in table] == [piece(t) for t in ref["reference"]]
        assert [p for _, _, _, p, _ in table] == [piece(t) for t in ref["predicted"]]
        assert [ok == "ok" for *_, ok in table] == [r == p for r, p in zip(ref["reference"], ref["predicted"])]
        hits = sum(r == p for r, p in zip(ref["reference"], ref["predicted"]))
        assert f"- **MLM**: {hits}/{len(ref['reference'])} targets right" in body
        label, pred, prob = _ROP.search(body).groups()
        assert label.startswith(str(ref["rop_label"]) if ref["rop_label"] >= 0 else "none")
        assert int(pred) == ref["rop_pred"] and float(prob) == pytest.approx(ref["p_in_order"], abs=6e-4)
    assert a.report_md.count("p(in order) = ") == 3


def test_without_rop_head_and_with_word_masking(setup):
    tok, shards = setup["tok"], setup["shards"]
    cfg = setup["model"].config
    cfg = replace(cfg, rop=replace(cfg.rop, use_rop=False), masked_lm=replace(cfg.masked_lm, type="word"))
    torch.manual_seed(0)
    res = evaluate_pretrained(TWilBERT(cfg), shards, "valid", tok, batch_size=BATCH, seed=SEED, pll_sentences=2, report_examples=1)
    assert not any(k.startswith("rop_") for k in res.metrics)
    assert res.metrics["mlm_targets"] > 0 and "no ROP head" in res.report_md
    json.dumps(res.metrics, allow_nan=False)  # strict JSON


def test_empty_split_gives_undefined_metrics_not_nan(setup):
    root, tok = setup["root"], setup["tok"]
    cfg = PairsConfig(valid_fraction=0.3, test_fraction=0.0, rows_per_shard=16, chunk_rows=64)
    build_pair_shards(root / "pairs.parquet", None, tok, cfg, MAX_LEN, root / "no-test", progress=False)
    res = evaluate_pretrained(setup["model"], root / "no-test", "test", tok, batch_size=BATCH, seed=0, pll_sentences=3, report_examples=2)
    m = res.metrics
    assert m["rows"] == 0 and m["mlm_targets"] == 0 and m["pll_sentences"] == 0
    assert m["mlm_accuracy"] is None and m["rop_f1"] is None and m["pseudo_perplexity"] is None
    assert m["baseline_train_tokens"] > 0  # the baseline still comes from the train split
    json.dumps(m, allow_nan=False)
    assert "## Examples (0)" in res.report_md


def test_refuses_a_tokenizer_that_does_not_match(setup, tmp_path):
    other = Tokenizer.from_file(train_vocab(_lines(200, 5), VocabConfig(vocab_size=100, input_sentence_size=0), tmp_path / "spm"))
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate_pretrained(setup["model"], setup["shards"], "valid", other, batch_size=4, seed=0, pll_sentences=0, report_examples=0)

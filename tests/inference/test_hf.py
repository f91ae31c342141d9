"""Hugging Face interop: export -> AutoModel/AutoTokenizer gives our hidden states (and MLM logits);
import of random HF BERT/ALBERT checkpoints gives theirs; what cannot be expressed is refused with
every reason listed; the tokenizer encodes like ours."""

from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_DATA
from tests.finetune.test_finetune_data import make_lines
from tests.inference.test_predict import build_models, error_line, run_cli
from twilbert.config import to_dict
from twilbert.hf import HFInteropError, export_hf, import_hf
from twilbert.model.config import ModelConfig, PKMConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import Tokenizer
from twilbert.train.checkpoint import save_checkpoint

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


@pytest.fixture(scope="module")
def spm(tmp_path_factory) -> Path:
    return build_models(tmp_path_factory.getbasetemp() / "inference-models")["spm"]


def random_batch(vocab: int, T: int = 14, seed: int = 0):
    """Ids with [CLS]/[SEP], right padding of different lengths, segment B in the second half."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 9, 4])
    pos = torch.arange(T)[None, :]
    mask = pos < lengths[:, None]  # (3, T)
    ids = torch.randint(5, vocab, (3, T), generator=g).masked_fill(~mask, 0)
    ids[:, 0] = 2
    types = ((pos >= lengths[:, None] // 2) & mask).long()
    return ids, types, mask


def randomised(cfg: ModelConfig, seed: int = 0) -> TWilBERT:
    """A random model whose LayerNorms and biases are not at their (1, 0) init, so a swapped or
    dropped norm/bias would show."""
    torch.manual_seed(seed)
    m = TWilBERT(cfg).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "norm" in name or name.endswith("bias") or "transform.2" in name:
                p.add_(0.1 * torch.randn_like(p))
    return m


def tiny(vocab: int, **kw) -> ModelConfig:
    base = dict(hidden_size=32, embedding_size=32, n_encoders=3, n_heads=4)
    return ModelConfig(**{**base, **kw}).resolved(vocab_size=vocab, max_len=8)


VARIANTS = {  # name: (config overrides, expected HF class)
    "bert-original-attention": (dict(attention_bias=False), "BertModel"),
    "bert-mlm-untied": (dict(mlm_transform=True, tie_mlm_decoder=False), "BertForMaskedLM"),
    "albert-factorised-shared": (dict(factorize_embeddings=True, embedding_size=8, cross_sharing=True, mlm_transform=True, tie_mlm_decoder=True), "AlbertForMaskedLM"),
    "albert-factorised-unshared": (dict(factorize_embeddings=True, embedding_size=8, mlm_transform=True, tie_mlm_decoder=True), "AlbertForMaskedLM"),
    "albert-shared-only": (dict(cross_sharing=True), "AlbertModel"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_then_transformers_gives_our_hidden_states(variant, spm, tmp_path):
    overrides, cls_name = VARIANTS[variant]
    vocab = Tokenizer.from_file(spm).vocab_size
    ours = randomised(tiny(vocab, **overrides))
    save_checkpoint(tmp_path / "ck", ours, to_dict(ours.config), rng=False)
    info = export_hf(tmp_path / "ck", tmp_path / "hf", vocab_model=spm)
    assert info["architecture"] == cls_name
    theirs = transformers.AutoModel.from_pretrained(str(tmp_path / "hf")).eval()
    ids, types, mask = random_batch(vocab)
    with torch.no_grad():
        a = ours.encode(ids, types, mask)  # (3, T, H)
        b = theirs(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state
        np.testing.assert_allclose(a[mask].numpy(), b[mask].numpy(), atol=1e-5)
        if cls_name.endswith("ForMaskedLM"):
            mlm = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf")).eval()
            labels = torch.where(mask, ids, -100)
            ours_logits = ours(ids, types, mask, mlm_labels=labels).mlm_logits  # (N, V) at real tokens
            their_logits = mlm(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits[mask]
            np.testing.assert_allclose(ours_logits.numpy(), their_logits.numpy(), atol=1e-5)
    # and back: the import gives the same function (and recognises the identity E -> H of albert-shared-only)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fresh ROP head (and MLM head where none was exported)
        back = import_hf(tmp_path / "hf", tmp_path / "back")
    assert back["model"]["factorize_embeddings"] == ours.config.factorize_embeddings
    assert back["model"]["cross_sharing"] == ours.config.cross_sharing
    assert back["tokenizer"] is not None  # our own spm.model travels with the export
    from twilbert.finetune.model import load_encoder

    with torch.no_grad():
        again = load_encoder(tmp_path / "back").eval().encode(ids, types, mask)
    np.testing.assert_allclose(again[mask].numpy(), a[mask].numpy(), atol=1e-5)


def hf_checkpoint(kind: str, path: Path, vocab: int = 150, **kw) -> torch.nn.Module:
    """A random HF *ForMaskedLM saved to ``path`` (LayerNorms and biases moved off their init)."""
    base = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                hidden_act="gelu", max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    if kind == "bert":
        model = transformers.BertForMaskedLM(transformers.BertConfig(**{**base, **kw}))
    else:
        model = transformers.AlbertForMaskedLM(transformers.AlbertConfig(**{**base, "embedding_size": 8, **kw}))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(path))
    return model.eval()


@pytest.mark.parametrize(
    "kind,kw",
    [("bert", {}), ("bert", {"tie_word_embeddings": False}), ("albert", {"num_hidden_groups": 1}), ("albert", {"num_hidden_groups": 3})],
)
def test_import_gives_the_hf_models_hidden_states_and_mlm_logits(kind, kw, tmp_path):
    from twilbert.finetune.model import load_encoder

    theirs = hf_checkpoint(kind, tmp_path / "hf", **kw)
    with pytest.warns(UserWarning) as caught:
        info = import_hf(tmp_path / "hf", tmp_path / "tw")
    assert any("ROP head freshly initialised" in str(w.message) for w in caught)
    assert info["mlm_head"] == "imported"
    assert info["tokenizer"] is None and any("no tokenizer in the checkpoint" in w for w in info["warnings"])
    ours = load_encoder(tmp_path / "tw").eval()  # a plain checkpoint: config.json + verified weights
    assert ours.config.cross_sharing == (kw.get("num_hidden_groups") == 1)
    assert ours.config.factorize_embeddings == (kind == "albert")
    ids, types, mask = random_batch(150, seed=1)
    base = theirs.bert if kind == "bert" else theirs.albert
    with torch.no_grad():
        a = ours.encode(ids, types, mask)
        b = base(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).last_hidden_state
        np.testing.assert_allclose(a[mask].numpy(), b[mask].numpy(), atol=1e-5)
        logits = ours(ids, types, mask, mlm_labels=torch.where(mask, ids, -100)).mlm_logits
        np.testing.assert_allclose(logits.numpy(), theirs(input_ids=ids, token_type_ids=types, attention_mask=mask.long()).logits[mask].numpy(), atol=1e-5)


def test_export_refuses_what_transformers_cannot_express(spm, tmp_path):
    vocab = Tokenizer.from_file(spm).vocab_size
    cfg = tiny(vocab, hidden_size=24, embedding_size=24, n_heads=4, attention_size=5, norm="pre", embedding_layer_norm=False,
               pkm=True, pkm_params=PKMConfig(in_layers=(1,), k_dim=8, memory_size=4, knn=2, n_heads=1))
    save_checkpoint(tmp_path / "ck", TWilBERT(cfg), to_dict(cfg), rng=False)
    with pytest.raises(HFInteropError) as err:
        export_hf(tmp_path / "ck", tmp_path / "hf", vocab_model=spm)
    msg = str(err.value)
    for reason in ("pkm", "norm: pre", "embedding_layer_norm: false", "attention_size: 5 x n_heads 4 != hidden_size 24"):
        assert reason in msg, msg
    line = error_line(run_cli("export-hf", "--model", str(tmp_path / "ck"), "--out", str(tmp_path / "hf"), "--vocab-model", str(spm)))
    assert "pkm" in line and "norm: pre" in line


def test_import_refusals_and_approximate_gelu(tmp_path):
    hf_checkpoint("bert", tmp_path / "tanh", hidden_act="gelu_new")
    with pytest.raises(HFInteropError, match="approximate-gelu"):
        import_hf(tmp_path / "tanh", tmp_path / "out")
    with pytest.warns(UserWarning):
        info = import_hf(tmp_path / "tanh", tmp_path / "out", approximate_gelu=True)
    assert 0 < info["max_abs_diff_hidden"] < 1e-2  # close, not equal: the activation differs
    hf_checkpoint("bert", tmp_path / "wide", intermediate_size=100)
    hf_checkpoint("albert", tmp_path / "groups", num_hidden_layers=4, num_hidden_groups=2)
    for name, reason in (("wide", "intermediate_size 100 != 4 x hidden_size 32"), ("groups", "num_hidden_groups 2")):
        with pytest.raises(HFInteropError, match=reason):
            import_hf(tmp_path / name, tmp_path / "out")
    line = error_line(run_cli("import-hf", "--model", str(tmp_path / "wide"), "--out", str(tmp_path / "o")))
    assert "intermediate_size" in line
    res = run_cli("import-hf", "--model", str(tmp_path / "tanh"), "--out", str(tmp_path / "o2"), "--approximate-gelu")
    assert res.exit_code == 0 and "ROP head freshly initialised" in res.output


def test_missing_transformers_is_a_clear_error(spm, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    cfg = tiny(Tokenizer.from_file(spm).vocab_size)
    save_checkpoint(tmp_path / "ck", TWilBERT(cfg), to_dict(cfg), rng=False)
    with pytest.raises(HFInteropError, match=r"pip install -e \.\[hf\]"):
        export_hf(tmp_path / "ck", tmp_path / "hf", vocab_model=spm)


# --------------------------------------------------------------------------------------------------
# tokenizer


def check_tokenizer(spm: Path, texts: list[str], tmp_path: Path) -> tuple[int, int]:
    """(mismatching texts, of which not equal-score ties) between AutoTokenizer and our Tokenizer."""
    from twilbert.hf import save_hf_tokenizer

    save_hf_tokenizer(spm, tmp_path / "tok", model_max_length=64)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    ours = Tokenizer.from_file(spm)
    a = ours.encode_batch(texts)
    b = hf_tok(texts, add_special_tokens=False)["input_ids"]
    bad = [i for i in range(len(texts)) if a[i] != b[i]]
    score = lambda ids: sum(ours.sp.get_score(int(x)) for x in ids)  # noqa: E731
    not_ties = [i for i in bad if abs(score(a[i]) - score(b[i])) > 1e-4]
    pair = hf_tok(texts[0], texts[1])
    ids, types = ours.build_input(a[0], a[1])
    assert pair["input_ids"] == ids.tolist() and pair["token_type_ids"] == types.tolist()
    assert (hf_tok.pad_token_id, hf_tok.unk_token_id, hf_tok.cls_token_id, hf_tok.sep_token_id, hf_tok.mask_token_id) == (0, 1, 2, 3, 4)
    return len(bad), len(not_ties)


EDGE = ["", " ", "  dos  espacios ", "hola user", "(user)", "usernames url.com", "\u2581inicio", "tab\tdentro", "ñandú 😂", "[MASK] escrito"]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_tokenizer_ids_equal_ours_on_generated_text(model_type, tmp_path):
    from twilbert.text.normalize import NormalizeRules, placeholder_tokens
    from twilbert.text.vocab import VocabConfig, train_vocab

    lines = make_lines(400, 7)
    spm = train_vocab(lines, VocabConfig(model_type=model_type, vocab_size=200, input_sentence_size=0, num_threads=1), tmp_path / "spm", placeholder_tokens(NormalizeRules()))
    bad, not_ties = check_tokenizer(spm, make_lines(500, 8) + EDGE, tmp_path)
    assert not_ties == 0 and bad <= 2, (bad, not_ties)


@pytest.mark.shared_data
def test_tokenizer_ids_equal_ours_on_real_tweets(tmp_path):
    import polars as pl

    from twilbert.text.normalize import NormalizeRules, normalize_texts, placeholder_tokens
    from twilbert.text.vocab import VocabConfig, train_vocab

    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    texts = []
    for f in sorted(SHARED_DATA.glob("*/train.tsv")):
        texts += pl.read_csv(f, separator="\t", quote_char=None, infer_schema=False)["TEXT"].head(1200).to_list()
    texts = normalize_texts(texts, NormalizeRules())
    cfg = VocabConfig(vocab_size=1000, input_sentence_size=0, num_threads=2)
    spm = train_vocab(texts[::3], cfg, tmp_path / "spm", placeholder_tokens(NormalizeRules()))  # rarer pieces unknown elsewhere
    bad, not_ties = check_tokenizer(spm, texts, tmp_path)
    assert not_ties == 0  # every difference is a tie between equal-score segmentations
    assert bad <= 0.001 * len(texts), (bad, len(texts))


def test_import_loads_weights_only_through_safetensors(tmp_path):
    """A pickled pytorch_model.bin is refused (loading it can run code); the same weights as
    safetensors import."""
    model = hf_checkpoint("bert", tmp_path / "st")
    pickled = tmp_path / "bin"  # what older checkpoints ship: config.json + a pickled pytorch_model.bin
    pickled.mkdir()
    shutil.copy(tmp_path / "st" / "config.json", pickled / "config.json")
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(HFInteropError, match="only through safetensors"):
        import_hf(pickled, tmp_path / "out-bin")
    assert not (tmp_path / "out-bin" / "model.safetensors").exists()
    assert import_hf(tmp_path / "st", tmp_path / "out-st")["max_abs_diff_hidden"] <= 1e-5


@pytest.mark.parametrize("positions", [41, 40])
def test_import_prints_a_model_section_that_params_yaml_accepts(tmp_path, positions):
    """What import-hf prints for params.yaml loads there (max_positions and vocab_size are derived
    keys, printed as vocab.vocab_size / representation.max_len) and matches the checkpoint for
    training.path_initial_weights; a table that is not 2 * max_len + 3 says it cannot be continued."""
    import json

    import yaml

    from pipeline.params import load_params
    from twilbert.train.initial_weights import load_initial_weights

    hf_checkpoint("bert", tmp_path / "hf", max_position_embeddings=positions)
    res = run_cli("import-hf", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "ck"))
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    model = json.loads(lines[[i for i, ln in enumerate(lines) if "model section" in ln][0] + 1])
    assert "max_positions" not in model and "vocab_size" not in model
    if positions == 40:
        assert "not 2 * max_len + 3" in res.output and "to continue pre-training, import it with --max-len" in res.output
        return
    assert "and vocab.vocab_size: 150, representation.max_len: 19 (41 positions = 2 * max_len + 3)" in res.output
    (tmp_path / "pairs.tsv").write_text("ORIG_ID\tORIG_TEXT\tREPLY_ID\tREPLY_TEXT\n")
    tree = {"data": {"pairs": ["pairs.tsv"]}, "model": model, "vocab": {"vocab_size": 150}, "representation": {"max_len": 19}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tree))
    p = load_params(tmp_path / "params.yaml")
    cfg = p.model.resolved(vocab_size=p.vocab.vocab_size, max_len=p.representation.max_len)
    load_initial_weights(TWilBERT(cfg), tmp_path / "ck", cfg)  # raises ConfigMismatchError on any difference

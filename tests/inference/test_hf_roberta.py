"""RoBERTa and XLM-R checkpoints: import exactly, export back as ``*ForMaskedLM``.

The checkpoints are built here like RoBERTuito (byte-level BPE, ``<s>=0 <pad>=1 </s>=2 <unk>=3``,
``<mask>`` last) and XLM-T (a SentencePiece-style Unigram, ``<mask>`` an added token past the piece
list): random weights, tokenizers trained on a few tweets, one token-type row, positions from
``pad_token_id + 1``. No download.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
import tokenizers.processors  # noqa: E402

from tests.train.test_pretrain_fixtures import _lines  # noqa: E402
from twilbert.hf import HFInteropError, export_hf, import_hf  # noqa: E402
from twilbert.text.tokenizer import Tokenizer, build_input  # noqa: E402
from twilbert.tokens import SPECIAL_TOKENS  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(f"ignore:{w}") for w in ("ROP head freshly", "vocabulary renumbered", "[0-9]+ embedding rows past", "its tokenizer is cased")]
transformers.logging.set_verbosity_error()
TWEETS = [
    "@usuario jajaja no me lo puedo creer 😂😂 HTTPURL",
    "El Madrid GANÓ 2-1 a la Real Sociedad #LaLiga",
    "mañana más fútbol, ¿quién se apunta? emoji cara sonriente emoji",
    "qué ganas de vacaciones!!!",
    "ñandú, pingüino y cigüeña",
    "hashtag la liga emoji trofeo emoji",
]
RO_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def _train_texts() -> list[str]:
    return TWEETS * 3 + _lines(300, 0)


def roberta_tokenizer(path: Path, *, lowercase: bool = False):
    """A RoBERTuito-like byte-level BPE tokenizer saved in ``path`` (``<mask>`` the last id)."""
    bpe = tokenizers.ByteLevelBPETokenizer(lowercase=lowercase)
    bpe.train_from_iterator(_train_texts(), vocab_size=400, min_frequency=2, special_tokens=RO_SPECIALS + ["@usuario", "HTTPURL", "hashtag", "emoji"])
    bpe.add_special_tokens(["<mask>"])
    bpe._tokenizer.post_processor = tokenizers.processors.RobertaProcessing(("</s>", 2), ("<s>", 0))  # <s> A </s></s> B </s>
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )
    fast.save_pretrained(str(path))
    return fast


def xlmr_tokenizer(path: Path):
    """An XLM-R-like Unigram tokenizer (Metaspace) saved in ``path``; ``<mask>`` is an added token past the pieces."""
    from tokenizers import SentencePieceUnigramTokenizer

    uni = SentencePieceUnigramTokenizer()
    uni.train_from_iterator(_train_texts(), vocab_size=300, special_tokens=RO_SPECIALS, unk_token="<unk>")
    uni.add_special_tokens(["<mask>"])
    uni._tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=uni._tokenizer, bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
    )
    fast.save_pretrained(str(path))
    return fast


def roberta_like(path: Path, kind: str = "roberta", *, positions: int = 64, type_rows: int = 1, seed: int = 0, tokenizer=None):
    """A random ``RobertaForMaskedLM`` / ``XLMRobertaForMaskedLM`` + its tokenizer in ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    tok = tokenizer(path) if tokenizer else (roberta_tokenizer(path) if kind == "roberta" else xlmr_tokenizer(path))
    stem = "Roberta" if kind == "roberta" else "XLMRoberta"
    cfg = getattr(transformers, stem + "Config")(
        vocab_size=len(tok) + 3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        max_position_embeddings=positions + 2, type_vocab_size=type_rows, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = getattr(transformers, stem + "ForMaskedLM")(cfg)
    with torch.no_grad():  # LayerNorms, biases and position rows off their init, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias") or "position" in name or "token_type" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(path))
    return model.eval(), tok


@pytest.mark.parametrize("kind", ["roberta", "xlm-roberta"])
def test_imported_roberta_gives_the_same_hidden_states_and_mlm_logits_from_text(kind, tmp_path):
    """Text in, same numbers out: our renumbered tokenizer + imported model == the source tokenizer +
    model (ids and logit columns through perm), with the source's <s> A </s> and our [CLS] A [SEP]
    being the same tokens."""
    from twilbert.finetune.model import load_encoder

    theirs, hf_tok = roberta_like(tmp_path / "hf", kind)
    info = import_hf(tmp_path / "hf", tmp_path / "tw")
    assert info["model_type"] == kind and info["mlm_head"] == "imported" and info["max_abs_diff_hidden"] <= 1e-5
    assert info["model"]["max_positions"] == 64 and info["model"]["layer_norm_eps"] == 1e-5
    tok = Tokenizer.from_file(tmp_path / "tw")
    assert [tok.id_to_piece(i) for i in range(5)] == list(SPECIAL_TOKENS)
    roles = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]  # [PAD] [UNK] [CLS] [SEP] [MASK]
    perm = [hf_tok.convert_tokens_to_ids(roles[i] if i < 5 else tok.id_to_piece(i)) for i in range(tok.vocab_size)]  # perm[ours] = theirs
    ours = load_encoder(tmp_path / "tw").eval()
    for text in TWEETS:
        ids, types = build_input(tok.encode(text))
        want = hf_tok(text)["input_ids"]  # <s> ... </s>
        assert [perm[i] for i in ids.tolist()] == want
        x = torch.tensor(ids)[None]
        with torch.no_grad():
            a = ours(x, torch.tensor(types)[None], mlm_labels=x)
            b = theirs(input_ids=torch.tensor(want)[None], output_hidden_states=True)
        np.testing.assert_allclose(a.hidden[0].numpy(), b.hidden_states[-1][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(a.mlm_logits[:, : tok.vocab_size].numpy(), b.logits[0][:, perm].numpy(), atol=1e-5)
    # one token-type row: both our segments hold it (pairs then start with equal A and B embeddings)
    seg = ours.embeddings.segment.weight.detach()
    assert torch.equal(seg[0], seg[1]) and torch.equal(seg[0], theirs.roberta.embeddings.token_type_embeddings.weight[0].detach())
    # positions: ours 0.. are theirs pad_token_id + 1..
    np.testing.assert_array_equal(ours.embeddings.position.weight.detach().numpy(), theirs.roberta.embeddings.position_embeddings.weight[2:].detach().numpy())


@pytest.mark.parametrize("kind", ["roberta", "xlm-roberta"])
def test_roberta_round_trip_is_exact(kind, tmp_path):
    """import -> export gives back *ForMaskedLM of the same family with the same weights where they
    mean anything (hidden states and MLM logits at real tokens equal the source's)."""
    theirs, hf_tok = roberta_like(tmp_path / "hf", kind)
    import_hf(tmp_path / "hf", tmp_path / "tw")
    info = export_hf(tmp_path / "tw", tmp_path / "back")
    stem = "Roberta" if kind == "roberta" else "XLMRoberta"
    assert info["architecture"] == f"{stem}ForMaskedLM" and info["model_type"] == kind
    assert info["max_abs_diff_hidden"] <= 1e-5 and info["max_abs_diff_mlm_logits"] <= 1e-4
    back = transformers.AutoModelForMaskedLM.from_pretrained(str(tmp_path / "back")).eval()
    assert type(back).__name__ == f"{stem}ForMaskedLM" and back.config.type_vocab_size == 1
    back_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "back"))
    for text in TWEETS:
        a = back_tok(text, return_tensors="pt")
        b = hf_tok(text, return_tensors="pt")
        with torch.no_grad():
            ha = back(**a, output_hidden_states=True).hidden_states[-1]
            hb = theirs(**b, output_hidden_states=True).hidden_states[-1]
        np.testing.assert_allclose(ha.numpy(), hb.numpy(), atol=1e-5)
    pair = back_tok("hola", "adiós")  # one token-type row: segment B is typed 0 too
    assert set(pair["token_type_ids"]) == {0}
    # the round trip gives the same weights (positions: real rows; the rows before pad + 1 are zeros)
    sd_a, sd_b = back.state_dict(), theirs.state_dict()
    tok = Tokenizer.from_file(tmp_path / "tw")
    for name in ("roberta.encoder.layer.1.output.dense.weight", "lm_head.dense.weight", "roberta.embeddings.token_type_embeddings.weight"):
        assert torch.equal(sd_a[name], sd_b[name]), name
    assert torch.equal(sd_a["roberta.embeddings.position_embeddings.weight"][1:], sd_b["roberta.embeddings.position_embeddings.weight"][2:])
    assert back.config.pad_token_id == 0 and tok.piece_to_id("[PAD]") == 0


def test_two_type_rows_and_trained_segments_export_as_two_rows(tmp_path):
    """A RoBERTa with two token-type rows imports both; once segment B differs, the export keeps both and
    the tokenizer types segment B as 1."""
    from twilbert.finetune.model import load_encoder
    from twilbert.hf import to_hf_model
    from twilbert.hf.weights import ROBERTA

    roberta_like(tmp_path / "hf", type_rows=2)
    import_hf(tmp_path / "hf", tmp_path / "tw")
    model = load_encoder(tmp_path / "tw")
    assert not torch.equal(model.embeddings.segment.weight[0], model.embeddings.segment.weight[1])
    hf = to_hf_model(model, family=ROBERTA)
    assert hf.config.type_vocab_size == 2
    from twilbert.hf.probe import hidden_state_difference

    assert hidden_state_difference(model, hf.roberta) <= 1e-5


def test_roberta_refusals_name_the_reason(tmp_path):
    from twilbert.hf import import_problems

    cfg = transformers.RobertaConfig(type_vocab_size=3, pad_token_id=None)
    problems = import_problems(cfg)
    assert any("type_vocab_size 3" in p for p in problems) and any("pad_token_id None" in p for p in problems)
    cfg = transformers.RobertaConfig(position_embedding_type="relative_key")
    assert any("only absolute positions" in p for p in import_problems(cfg))
    assert "model_type 'deberta-v2'" in import_problems(transformers.DebertaV2Config())[0]


def test_a_sentence_transformers_style_tokenizer_with_fixed_padding_imports(tmp_path):
    """tokenizer.json with padding to 128 and truncation (as sentence-transformers exports set it) used to
    fail the renumbering check (the source padded the probe texts); both are neutralised, for BERT too."""
    from tests.inference.test_hf_continue import beto_like

    for make, path in ((lambda p: beto_like(p), tmp_path / "bert"), (lambda p: roberta_like(p), tmp_path / "roberta")):
        make(path)
        spec = json.loads((path / "tokenizer.json").read_text())
        spec["padding"] = {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 1,
                           "pad_type_id": 0, "pad_token": "[PAD]" if "bert" in path.name else "<pad>"}
        spec["truncation"] = {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0}
        (path / "tokenizer.json").write_text(json.dumps(spec))
        import_hf(path, tmp_path / f"tw-{path.name}")
        out = json.loads((tmp_path / f"tw-{path.name}" / "tokenizer.json").read_text())
        assert out["padding"] is None and out["truncation"] is None
        tok = Tokenizer.from_file(tmp_path / f"tw-{path.name}")
        assert 0 not in tok.encode("hola que tal")


def test_import_refuses_a_family_it_cannot_map(tmp_path):
    roberta_like(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg["intermediate_size"] = 100
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFInteropError, match="intermediate_size 100 != 4 x hidden_size 32"):
        import_hf(tmp_path / "hf", tmp_path / "tw")


def test_import_hf_prints_the_rules_the_checkpoint_expects(tmp_path):
    """RoBERTuito-like vocabularies (@usuario, hashtag, emoji whole tokens) get the pysentimiento preset;
    others the default, lower-casing as the tokenizer does."""
    from tests.inference.test_hf_continue import beto_like
    from tests.inference.test_predict import run_cli

    roberta_like(tmp_path / "ro")
    res = run_cli("import-hf", "--model", str(tmp_path / "ro"), "--out", str(tmp_path / "tw-ro"))
    assert res.exit_code == 0, res.output
    assert 'normalize.rules: {"preset": "pysentimiento"} (its vocabulary has pysentimiento\'s @usuario, hashtag, emoji' in res.output
    roberta_like(tmp_path / "ro-uncased", tokenizer=lambda p: roberta_tokenizer(p, lowercase=True))
    info = import_hf(tmp_path / "ro-uncased", tmp_path / "tw-ro-uncased")
    assert info["normalize_rules"] == {"preset": "pysentimiento", "lowercase": True}
    beto_like(tmp_path / "beto")
    res = run_cli("import-hf", "--model", str(tmp_path / "beto"), "--out", str(tmp_path / "tw-beto"))
    assert 'normalize.rules: {"preset": "default", "lowercase": true} (no preprocessing markers' in res.output


def test_byte_level_pieces_start_words_at_their_encoded_space(tmp_path):
    """Whole-word masking over an imported RoBERTa vocabulary: a piece with byte-level BPE's 'Ġ'
    starts a word, one without continues it (so word masking is not token masking there)."""
    roberta_like(tmp_path / "hf", "roberta")
    import_hf(tmp_path / "hf", tmp_path / "tw")
    tok = Tokenizer.from_file(tmp_path / "tw")
    table = tok.word_start_table()
    pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
    inner = [i for i, p in enumerate(pieces) if i >= 5 and not p.startswith("\u0120") and i not in set(tok.user_defined_ids)]
    starts = [i for i, p in enumerate(pieces) if p.startswith("\u0120")]
    assert inner and starts
    assert table[starts].all() and not table[inner].any()
    assert not table[:5].any()  # specials never start a word

"""Continued pre-training from a BERT a user already has (issue #6): its own tokenizer, renumbered.

The checkpoints here look like a Spanish BERT on the Hub (BETO): a WordPiece ``vocab.txt`` whose
specials sit at other ids (``[MASK]=0 [PAD]=1 [UNK]=3 [CLS]=4 [SEP]=5``), lower-casing and accent
stripping in the tokenizer, and more positions than TWilBERT's ``2 * max_len + 3``. They are built
here (random weights; no download).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")

from tests.inference.test_predict import run_cli  # noqa: E402
from tests.train.test_pretrain_fixtures import MAX_LEN, _lines, write_params  # noqa: E402
from twilbert.config import ConfigError  # noqa: E402
from twilbert.hf import HFInteropError, check_renumbered, import_hf, renumber_tokenizer  # noqa: E402
from twilbert.text.tokenizer import HFTokenizer, Tokenizer, TokenizerError, build_input  # noqa: E402
from twilbert.tokens import SPECIAL_TOKENS  # noqa: E402

pytestmark = [pytest.mark.filterwarnings(f"ignore:{w}") for w in ("ROP head freshly", "vocabulary renumbered", "[0-9]+ embedding rows past")]
BETO_SPECIALS = ["[MASK]", "[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]"]  # BETO's first ids
TEXTS = ["Hola user, ¿qué tal?", "no me lo puedo creer url jajaja", "El Madrid GANÓ al Real", "mañana más fútbol"]


def wordpiece_vocab(texts: list[str]) -> list[str]:
    """Specials in BETO's order, then whole words of ``texts`` (lower-cased, accents stripped), characters
    and their ``##`` continuations: every text splits into real pieces, some words into several."""
    import unicodedata

    def plain(s: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if unicodedata.category(c) != "Mn")

    words = sorted({w for t in texts for w in plain(t).replace(",", " ").replace("?", " ").replace("¿", " ").split() if len(w) > 3})[:60]
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,!?¿¡-#@"))
    pieces = BETO_SPECIALS + words + ["##" + s for s in ("es", "ar", "os", "as")] + chars + ["##" + c for c in chars if c.isalnum()]
    return list(dict.fromkeys(pieces))  # one id per token


def beto_like(path: Path, *, positions: int = 64, tokenizer_json: bool = True, seed: int = 0) -> tuple[torch.nn.Module, list[str]]:
    """A random BertForMaskedLM + BertTokenizer(vocab.txt) in ``path``, as a user's checkpoint."""
    vocab = wordpiece_vocab(TEXTS + _lines(200, 0))
    path.mkdir(parents=True, exist_ok=True)
    tok = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(vocab)}, do_lower_case=True, strip_accents=True)
    tok.save_pretrained(str(path))
    if not tokenizer_json:  # an older checkpoint (BETO's): vocab.txt + tokenizer_config.json only
        (path / "tokenizer.json").unlink()
        (path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")  # transformers 5 writes none
    cfg = transformers.BertConfig(
        vocab_size=len(vocab) + 2,  # a few unused rows past the tokenizer, as Hub checkpoints often have
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=positions,
        pad_token_id=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(cfg)
    with torch.no_grad():  # LayerNorms and biases off their init, so a wrong mapping shows
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(str(path))
    return model.eval(), vocab


@pytest.mark.parametrize("tokenizer_json", [True, False], ids=["tokenizer.json", "vocab.txt only"])
def test_imported_bert_with_its_own_tokenizer_gives_the_same_outputs_from_text(tokenizer_json, tmp_path):
    """Text in, same numbers out: our HFTokenizer + imported model == HF tokenizer + HF model, with the
    vocabulary renumbered to our special ids (ids and MLM logit columns map through perm)."""
    from twilbert.finetune.model import load_encoder

    theirs, _ = beto_like(tmp_path / "hf", tokenizer_json=tokenizer_json)
    with pytest.warns(UserWarning, match="renumbered"):
        info = import_hf(tmp_path / "hf", tmp_path / "tw")
    assert Path(info["tokenizer"]).name == "tokenizer.json"
    tok = Tokenizer.from_file(tmp_path / "tw")  # the directory: finds tokenizer.json
    assert isinstance(tok, HFTokenizer) and [tok.id_to_piece(i) for i in range(5)] == list(SPECIAL_TOKENS)
    meta = json.loads((tmp_path / "tw" / "pretrain.json").read_text())
    assert meta["tokenizer_sha256"] == tok.sha256
    ours = load_encoder(tmp_path / "tw").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    perm = [hf_tok.convert_tokens_to_ids(tok.id_to_piece(i)) for i in range(tok.vocab_size)]  # perm[ours] = theirs
    for text in TEXTS:
        ids, types = build_input(tok.encode(text))
        want = hf_tok(text)["input_ids"]
        assert [perm[i] for i in ids.tolist()] == want  # same split, ids renumbered
        assert (ids == 1).sum() == (np.array(want) == hf_tok.unk_token_id).sum()
        x, tt = torch.tensor(ids)[None], torch.tensor(types)[None]
        with torch.no_grad():
            a = ours(x, tt, mlm_labels=x)
            b = theirs(input_ids=torch.tensor(want)[None], output_hidden_states=True)
        np.testing.assert_allclose(a.hidden[0].numpy(), b.hidden_states[-1][0].numpy(), atol=1e-5)
        np.testing.assert_allclose(a.mlm_logits[:, : tok.vocab_size].numpy(), b.logits[0][:, perm].numpy(), atol=1e-5)


def test_the_hf_tokenizer_behaves_like_ours(tmp_path):
    beto_like(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "tw")
    tok = Tokenizer.from_file(tmp_path / "tw" / "tokenizer.json")
    # "[MASK]" typed in a tweet is text, as with SentencePiece (never the mask id)
    assert 4 not in tok.encode("esto es [MASK] y [CLS]") and 2 not in tok.encode("[CLS]")
    texts = ["hola que tal", "", "jajaja url"]
    values, offsets = tok.encode_flat(texts)
    assert [values[offsets[i] : offsets[i + 1]].tolist() for i in range(3)] == tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.decode(tok.encode("hola que tal")) == "hola que tal"
    from twilbert.train.evaluate import render_tokens

    assert render_tokens(tok, [2] + tok.encode("hola casas") + [3, 0]) == "[CLS] " + tok.decode(tok.encode("hola casas")) + " [SEP]"
    starts = tok.word_start_table()
    assert not starts[:5].any()  # specials are never word starts
    assert all(starts[i] != tok.id_to_piece(i).startswith("##") for i in range(5, tok.vocab_size))
    # a Hub tokenizer.json as it is (specials at BETO's ids) is refused, naming the fix
    with pytest.raises(TokenizerError, match="import-hf"):
        Tokenizer.from_file(tmp_path / "hf" / "tokenizer.json")
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(TokenizerError, match="not a Hugging Face tokenizer.json"):
        Tokenizer.from_file(tmp_path / "junk.json")
    with pytest.raises(TokenizerError, match="no vocabulary model in this directory"):
        Tokenizer.from_file(tmp_path)


def test_max_len_keeps_the_first_positions(tmp_path):
    from twilbert.finetune.model import load_encoder

    theirs, _ = beto_like(tmp_path / "hf", positions=64)
    info = import_hf(tmp_path / "hf", tmp_path / "tw", max_len=MAX_LEN)
    assert info["model"]["max_positions"] == 2 * MAX_LEN + 3
    ours = load_encoder(tmp_path / "tw").eval()
    assert ours.embeddings.position.weight.shape[0] == 2 * MAX_LEN + 3
    np.testing.assert_array_equal(
        ours.embeddings.position.weight.detach().numpy(), theirs.bert.embeddings.position_embeddings.weight[: 2 * MAX_LEN + 3].detach().numpy()
    )
    with pytest.raises(HFInteropError, match=r"needs 65 positions.*largest max_len: 30"):
        import_hf(tmp_path / "hf", tmp_path / "tw2", max_len=31)


def test_renumbering_a_unigram_tokenizer_renames_albert_specials():
    """ALBERT-style SentencePiece (Unigram) with <pad>/<unk> names and other ids: specials first, renamed."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import pre_tokenizers
    from tokenizers.models import Unigram

    pieces = [("▁hola", -2.0), ("<pad>", 0.0), ("[CLS]", 0.0), ("▁que", -2.5), ("<unk>", 0.0), ("[SEP]", 0.0), ("[MASK]", 0.0)]
    pieces += [("▁" + c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"] + [(c, -6.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    src = HFTok(Unigram(pieces, unk_id=4, byte_fallback=False))
    src.pre_tokenizer = pre_tokenizers.Metaspace()
    spec = json.loads(src.to_str())
    roles = {"[PAD]": "<pad>", "[UNK]": "<unk>", "[CLS]": "[CLS]", "[SEP]": "[SEP]", "[MASK]": "[MASK]"}
    text, perm = renumber_tokenizer(spec, roles, n_rows=len(pieces) + 3)
    assert perm[:5] == [1, 4, 2, 5, 6] and sorted(perm) == list(range(len(pieces) + 3))
    check_renumbered(spec, text, perm, ["hola que tal", "hola xyz"])  # same split, ids through perm
    tok = HFTokenizer(text.encode())
    assert tok.encode("hola") == [perm.index(0)] and tok.word_start_table()[perm.index(0)]
    with pytest.raises(HFInteropError, match=r"no token for \[MASK\]"):
        renumber_tokenizer(spec, {**roles, "[MASK]": "<mask>"}, n_rows=len(pieces))
    with pytest.raises(HFInteropError, match="embedding rows"):
        renumber_tokenizer(spec, roles, n_rows=10)


def continued_pretraining_inputs(tmp_path: Path, import_output: str, imported: Path, training: dict) -> tuple[Path, dict, Path]:
    """(params.yaml, its tree to complete, normalized dir) for the stages after ``import-hf``: the model
    section it printed, vocab.pretrained and training.path_initial_weights set to ``imported``, and
    small normalised pairs and tweets."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = import_output.splitlines()
    model_section = json.loads(lines[[i for i, ln in enumerate(lines) if "model section" in ln][0] + 1])
    norm = tmp_path / "normalized"
    norm.mkdir()
    texts = _lines(150, 1)
    pq.write_table(pa.table({"orig_id": [f"o{i}" for i in range(60)], "orig_text": texts[:60],
                             "reply_id": [f"r{i}" for i in range(60)], "reply_text": texts[60:120]}), norm / "pairs.parquet")
    pq.write_table(pa.table({"id": [f"t{i}" for i in range(30)], "text": texts[120:]}), norm / "tweets.parquet")
    params = write_params(tmp_path / "params.yaml", Tokenizer.from_file(imported).vocab_size, model=model_section,
                          training={"warmup_steps": 0, "path_initial_weights": str(imported), **training})
    tree = yaml.safe_load(params.read_text())
    tree["vocab"]["pretrained"] = str(imported)
    tree["pairs"] = {"valid_fraction": 0.1, "test_fraction": 0.1}
    return params, tree, norm


def test_continued_pretraining_from_an_imported_bert(tmp_path):
    """The whole path a user takes: import-hf --max-len, vocab.pretrained + training.path_initial_weights,
    then the vocab, pairs and pretrain stages: the shards use the imported tokenizer and training starts
    from the imported weights. Without vocab.pretrained, the mismatch is an error naming the key."""
    from twilbert.finetune.model import load_encoder
    from twilbert.train.initial_weights import load_initial_weights

    beto_like(tmp_path / "hf", positions=64)
    res = run_cli("import-hf", "--model", str(tmp_path / "hf"), "--out", str(tmp_path / "beto"), "--max-len", str(MAX_LEN))
    assert res.exit_code == 0, res.output
    assert f"representation.max_len: {MAX_LEN}" in res.output and f"vocab.pretrained: {tmp_path / 'beto'}" in res.output
    params, tree, norm = continued_pretraining_inputs(tmp_path, res.output, tmp_path / "beto", {"max_steps": 2, "lr": 1e-12})
    tok = Tokenizer.from_file(tmp_path / "beto")
    params.write_text(yaml.safe_dump(tree, sort_keys=False))

    res = run_cli("vocab", "--params", str(params), "--normalized-dir", str(norm), "--out-dir", str(tmp_path / "vocab"),
                  "--stats-path", str(tmp_path / "vocab.json"))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "vocab" / "tokenizer.json").read_bytes() == (tmp_path / "beto" / "tokenizer.json").read_bytes()
    # "url" is no word of this vocabulary (u ##r ##l): the stage names the key that fixes it
    assert "placeholder 'url' is not one token of this tokenizer; set normalize.rules.url_token" in res.output
    assert ("placeholder 'user'" in res.output) == (len(tok.encode("user")) > 1)
    stats = json.loads((tmp_path / "vocab.json").read_text())
    assert stats["vocab_size"] == tok.vocab_size and stats["probe_texts"] == 150 and 0 <= stats["unk_rate"] < 0.5
    res = run_cli("pairs", "--params", str(params), "--normalized-dir", str(norm), "--vocab-model", str(tmp_path / "vocab"),
                  "--out-dir", str(tmp_path / "pairs"), "--stats-path", str(tmp_path / "pairs.json"))
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "pairs" / "manifest.json").read_text())["tokenizer_sha256"] == tok.sha256
    res = run_cli("pretrain", "--params", str(params), "--shards-dir", str(tmp_path / "pairs"), "--vocab-model", str(tmp_path / "vocab"),
                  "--out-dir", str(tmp_path / "out"), "--reports-dir", str(tmp_path / "reports"))
    assert res.exit_code == 0, res.output
    final, start = load_encoder(tmp_path / "out" / "final"), load_encoder(tmp_path / "beto")
    for (name, a), b in zip(final.state_dict().items(), start.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6, err_msg=name)  # lr 1e-12: still the imported weights
    assert json.loads((tmp_path / "out" / "final" / "pretrain.json").read_text())["tokenizer_sha256"] == tok.sha256

    with pytest.raises(ConfigError, match="set vocab.pretrained"):  # another vocabulary of the same size
        load_initial_weights(load_encoder(tmp_path / "beto"), tmp_path / "beto", start.config, tokenizer_sha256="0" * 64)


def test_params_check_vocab_pretrained(tmp_path):
    from pipeline.params import load_params

    beto_like(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "beto")
    size = Tokenizer.from_file(tmp_path / "beto").vocab_size
    params = write_params(tmp_path / "params.yaml", size)
    tree = yaml.safe_load(params.read_text())
    for pretrained, vocab_size, message in [
        ("nowhere", size, "vocab.pretrained: no such file or directory 'nowhere'"),
        (str(tmp_path / "beto"), size + 1, f"vocab.vocab_size: {size + 1}, but vocab.pretrained has {size} tokens"),
        (str(tmp_path / "hf"), size, "vocab.pretrained: .*no vocabulary model in this directory|vocab.pretrained: .*import-hf"),
    ]:
        tree["vocab"].update(pretrained=pretrained, vocab_size=vocab_size)
        params.write_text(yaml.safe_dump(tree))
        with pytest.raises(ConfigError, match=message):
            load_params(params)
    tree["vocab"].update(pretrained=str(tmp_path / "beto"), vocab_size=size)
    params.write_text(yaml.safe_dump(tree))
    assert load_params(params).vocab.pretrained == str(tmp_path / "beto")


def test_finetune_predict_and_export_with_an_imported_tokenizer(tmp_path):
    """Downstream of an imported checkpoint: the fine-tuned model directory carries tokenizer.json,
    twilbert.load predicts from it alone, and export-hf gives transformers the same ids and hidden states."""
    import twilbert
    from tests.finetune.test_finetune_e2e import CPU, LABELS, make_task, write_task
    from twilbert.finetune.config import FinetuningConfig
    from twilbert.finetune.train import finetune_task
    from twilbert.hf import export_hf

    beto_like(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "beto", max_len=MAX_LEN)
    write_task(tmp_path / "task")
    task = make_task(tmp_path / "task", categories={lab: i for i, lab in enumerate(LABELS)})
    ft = FinetuningConfig(epochs=1, batch_size=8, max_len=MAX_LEN, lr=1e-3, warmup_steps=0)
    finetune_task("senti", task, ft, tokenizer_path=tmp_path / "beto", rules=None, model_out=tmp_path / "model",
                  report_out=tmp_path / "reports", pretrained_dir=tmp_path / "beto", impl=CPU, progress=False)
    assert (tmp_path / "model" / "tokenizer.json").is_file() and not (tmp_path / "model" / "spm.model").exists()
    predictor = twilbert.load(tmp_path / "model")
    assert isinstance(predictor.tokenizer, HFTokenizer)
    rows = predictor.predict(TEXTS)
    assert len(rows) == len(TEXTS) and all(r["label"] in LABELS for r in rows)

    info = export_hf(tmp_path / "beto", tmp_path / "exported")
    assert info["max_abs_diff_hidden"] <= 1e-5
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "exported"))
    tok = Tokenizer.from_file(tmp_path / "beto")
    for text in TEXTS:
        assert hf_tok(text)["input_ids"] == build_input(tok.encode(text))[0].tolist()


# -- what a review found (each was a silent wrong result or a traceback) ---------------------------


def test_a_tokenizer_that_does_not_load_is_an_error_not_a_missing_one(tmp_path):
    beto_like(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.json").write_text("{not json")
    with pytest.raises(HFInteropError, match=r"hf: its tokenizer \(tokenizer.json.*\) does not load"):
        import_hf(tmp_path / "hf", tmp_path / "tw")


def test_imported_without_a_tokenizer_cannot_start_pretraining(tmp_path):
    """Its rows stand for unknown tokens: a same-sized vocabulary trained by the vocab stage would pass
    every shape check."""
    from twilbert.finetune.model import load_encoder
    from twilbert.train.initial_weights import load_initial_weights

    beto_like(tmp_path / "hf")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / name).unlink()
    info = import_hf(tmp_path / "hf", tmp_path / "tw")
    assert info["tokenizer"] is None
    model = load_encoder(tmp_path / "tw")
    with pytest.raises(ConfigError, match="imported .* without a tokenizer"):
        load_initial_weights(model, tmp_path / "tw", model.config, tokenizer_sha256="0" * 64)


def test_a_repeated_vocab_line_leaves_a_gap_not_a_crash(tmp_path):
    """A repeated line in vocab.txt: the later id wins, an id is left without a token, and the highest
    id must still index a row (vocab_size = highest id + 1, not the token count)."""
    import twilbert

    _, vocab = beto_like(tmp_path / "hf", tokenizer_json=False)
    lines = (tmp_path / "hf" / "vocab.txt").read_text().splitlines()
    lines[20] = lines[21]
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(lines) + "\n")
    import_hf(tmp_path / "hf", tmp_path / "tw")
    tok = Tokenizer.from_file(tmp_path / "tw")
    assert tok.vocab_size == len(lines)  # ids 0..len-1, one of them unused
    last = lines[-1].removeprefix("##")
    assert tok.vocab_size - 1 in tok.encode(f"a{last}")  # the highest id is produced...
    vectors = twilbert.load(tmp_path / "tw").embed([f"a{last}", "hola"])  # ...and has a row
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()


def test_other_special_tokens_of_the_source_stay_whole(tmp_path):
    """Only our five are typed-as-text; a checkpoint's own extra specials (pysentimiento-style "@usuario",
    "HTTPURL") are split as the source splits them."""
    beto_like(tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    tok.add_special_tokens({"additional_special_tokens": ["@usuario", "HTTPURL"]})
    tok.save_pretrained(str(tmp_path / "hf"))
    import_hf(tmp_path / "hf", tmp_path / "tw")
    ours = Tokenizer.from_file(tmp_path / "tw")
    text = "hola @usuario mira HTTPURL [MASK]"
    perm = [tok.convert_tokens_to_ids(ours.id_to_piece(i)) for i in range(ours.vocab_size)]
    got = [perm[i] for i in ours.encode(text)]
    want = tok(text, add_special_tokens=False)["input_ids"]
    assert got[:4] == want[:4] and tok.convert_tokens_to_ids("@usuario") in got and tok.convert_tokens_to_ids("HTTPURL") in got
    assert tok.mask_token_id in want and 4 not in ours.encode(text)  # typed [MASK]: text for us, special for HF


def test_one_vocabulary_per_directory(tmp_path):
    """A stale spm.model beside a new tokenizer.json made `pairs` pick the old one."""
    from twilbert.text.vocab import VocabConfig, adopt_vocab, train_vocab

    beto_like(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "tw")
    size = Tokenizer.from_file(tmp_path / "tw").vocab_size
    out = tmp_path / "vocab"
    train_vocab(_lines(200, 0), VocabConfig(vocab_size=120, input_sentence_size=0, num_threads=1), out / "spm", ["user"])
    adopt_vocab(tmp_path / "tw", [], VocabConfig(vocab_size=size), out)
    assert sorted(f.name for f in out.iterdir()) == ["tokenizer.json", "vocab.json"]
    train_vocab(_lines(200, 0), VocabConfig(vocab_size=120, input_sentence_size=0, num_threads=1), out / "spm", ["user"])
    assert not (out / "tokenizer.json").exists()
    (out / "tokenizer.json").write_bytes((tmp_path / "tw" / "tokenizer.json").read_bytes())
    with pytest.raises(TokenizerError, match="holds both spm.model and tokenizer.json"):
        Tokenizer.from_file(out)


def test_a_moved_import_still_finds_its_tokenizer_and_refuses_another(tmp_path):
    import twilbert
    from twilbert.hf import export_hf
    from twilbert.text.vocab import VocabConfig, train_vocab

    beto_like(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "tw")
    (tmp_path / "tw").rename(tmp_path / "moved")
    assert twilbert.load(tmp_path / "moved").embed(["hola"]).shape == (1, 32)
    assert export_hf(tmp_path / "moved", tmp_path / "exported")["max_abs_diff_hidden"] <= 1e-5
    size = Tokenizer.from_file(tmp_path / "moved").vocab_size
    other = train_vocab(_lines(300, 0), VocabConfig(vocab_size=size, input_sentence_size=0, num_threads=1), tmp_path / "v" / "spm", [])
    assert Tokenizer.from_file(other).vocab_size == size  # same size, another vocabulary
    from twilbert.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="not the vocabulary"):
        twilbert.load(tmp_path / "moved", vocab_model=other)
    with pytest.raises(HFInteropError, match="not the vocabulary"):
        export_hf(tmp_path / "moved", tmp_path / "exported2", vocab_model=other)


def test_import_messages_name_the_checkpoint_and_the_fix(tmp_path):
    beto_like(tmp_path / "hf")
    with pytest.raises(HFInteropError, match="must be >= 1"):
        import_hf(tmp_path / "hf", tmp_path / "tw", max_len=0)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    cased = transformers.BertTokenizer(vocab=tok.get_vocab(), do_lower_case=False)
    cased.save_pretrained(str(tmp_path / "hf"))
    info = import_hf(tmp_path / "hf", tmp_path / "tw")
    assert any("cased: set normalize.rules.lowercase: false" in w for w in info["warnings"])

"""The TF-IDF + linear baseline: learns every task type, tunes on dev only, reports the same metrics
as the fine-tuned model (checked against scikit-learn / scipy on the returned outputs), deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from tests.conftest import SHARED_DATA
from twilbert.finetune import baseline as bl
from twilbert.finetune import baseline_models
from twilbert.finetune.baseline import ALPHA_GRID, C_GRID, PAIR_SEPARATOR, TEXT_FORMS, fit_select, pair_texts, run_baseline, text_forms
from twilbert.finetune.config import TaskConfig
from twilbert.finetune.data import load_task
from twilbert.finetune.metrics import selection_score
from twilbert.report import build_summary, render_markdown
from twilbert.text.normalize import NormalizeRules, normalize_texts

LABELS = ["neg", "neu", "pos"]
CUES = {"neg": ["horrible", "odio", "asco"], "neu": ["mesa", "martes", "informe"], "pos": ["genial", "amor", "feliz"]}
MENTIONS = {"neg": "@pepe", "neu": "@juan", "pos": "@ana"}
NOISE = "el la de que y en un por con para los se lo como más pero sus le ya o este sí porque esta entre".split()


def _sentence(rng: np.random.Generator, cue: str | None, n: int = 8) -> str:
    words = list(rng.choice(NOISE, size=n))
    if cue is not None:
        words.insert(int(rng.integers(0, n)), cue)
    return " ".join(words)


def _write(path, header: list[str], rows: list[list[str]]) -> str:
    path.write_text("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    return path.name


def make_task(tmp_path, kind: str = "single", n=(150, 60, 60), seed: int = 0, noise: float = 0.1, mention: str | None = None,
              **kw) -> TaskConfig:
    """Tweets with a label-revealing word (plus ``noise`` of examples whose word is random).

    ``mention`` (single text): each tweet starts with its label's user (:data:`MENTIONS`), which the
    rules turn into ``user``; ``"shifted"``: dev/test mention the *next* label's user, a train-only
    accident that normalising erases."""
    rng = np.random.default_rng(seed)
    files = {}
    for split, size in zip(("train", "dev", "test"), n):
        rows = []
        for i in range(size):
            y = LABELS[i % 3]
            shown = y if rng.random() > noise else LABELS[int(rng.integers(3))]
            cue = str(rng.choice(CUES[shown]))
            if kind == "single" and mention:
                who = LABELS[(i + 1) % 3] if mention == "shifted" and split != "train" else y
                rows.append([f"{split}{i}", f"{MENTIONS[who]} {_sentence(rng, cue)}", y])
            elif kind == "single":
                rows.append([f"{split}{i}", _sentence(rng, cue), y])
            elif kind == "pair":  # only the second text (aux) reveals the label
                rows.append([f"{split}{i}", _sentence(rng, None), _sentence(rng, cue), y])
            elif kind == "multi":  # a label is on when its cue word appears; 0, 1 or 2 labels
                on = [lab for lab in LABELS if rng.random() < 0.4]
                text = " ".join([_sentence(rng, str(rng.choice(CUES[lab])), 4) for lab in on] or [_sentence(rng, None, 4)])
                rows.append([f"{split}{i}", text, "|".join(on)])
            elif kind == "regression":  # value = (#pos cues − #neg cues) + noise
                npos, nneg = int(rng.integers(0, 3)), int(rng.integers(0, 3))
                words = list(rng.choice(NOISE, size=6)) + list(rng.choice(CUES["pos"], size=npos)) + list(rng.choice(CUES["neg"], size=nneg))
                rng.shuffle(words)
                rows.append([f"{split}{i}", " ".join(words), f"{npos - nneg + rng.normal(0, 0.3):.4f}"])
        header = ["ID", "TEXT", "TARGET", "CLASS"] if kind == "pair" else ["ID", "TEXT", "CLASS"]
        files[split] = str(tmp_path / _write(tmp_path / f"{split}.tsv", header, rows))
    base = dict(train_file=files["train"], dev_file=files["dev"], test_file=files["test"])
    if kind == "regression":
        base.update(type="regression", eval_metric="pearson")
    else:
        base["categories"] = {lab: i for i, lab in enumerate(LABELS)}
    if kind == "pair":
        base["aux_header"] = "TARGET"
    if kind == "multi":
        base["type"] = "multi_label"
    return TaskConfig(**{**base, **kw})


# --------------------------------------------------------------------------------------------------
# every task type learns, and its metrics are sklearn's on the returned outputs


def test_single_label_learns_and_metrics_match_sklearn(tmp_path):
    task = make_task(tmp_path)
    r = run_baseline(task, rules=None, data_root=None)
    gold = load_task(task)["test"].labels
    probs = r["outputs"]["test"]
    assert probs.shape == (60, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    pred = probs.argmax(1)
    assert r["test"]["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert r["test"]["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert r["test"]["f1_weighted"] == pytest.approx(f1_score(gold, pred, average="weighted"))
    assert r["test"]["accuracy"] > 0.75  # 10% label-word noise: far above chance (1/3)
    dev_gold = load_task(task)["dev"].labels
    assert r["dev"]["f1_macro"] == pytest.approx(f1_score(dev_gold, r["outputs"]["dev"].argmax(1), average="macro"))
    # the reported choice is the dev-best grid value, scored with the task's selection metric
    assert r["selection_metric"] == "f1_macro"
    assert r["best_params"]["C"] in C_GRID and [g["params"]["C"] for g in r["grid"]] == list(C_GRID)
    assert r["dev_selection"] == max(g["dev_selection"] for g in r["grid"]) == selection_score(r["dev"], task)
    assert r["train_examples"] == 150 and r["features"] > 0


def test_text_pair_uses_the_second_text(tmp_path):
    task = make_task(tmp_path, kind="pair")
    splits = load_task(task)
    joined = pair_texts(splits["train"], None)
    assert joined[0] == splits["train"].texts[0] + PAIR_SEPARATOR + splits["train"].aux_texts[0]
    r = run_baseline(task, rules=None, data_root=None, splits=splits)
    assert r["test"]["accuracy"] > 0.75  # only TARGET carries the label


def test_multi_label_learns_and_jaccard_matches_sklearn(tmp_path):
    task = make_task(tmp_path, kind="multi", n=(200, 60, 60))
    r = run_baseline(task, rules=None, data_root=None)
    gold = load_task(task)["test"].labels.astype(int)
    probs = r["outputs"]["test"]
    assert probs.shape == (60, 3) and probs.min() >= 0 and probs.max() <= 1
    pred = (probs >= task.threshold).astype(int)
    assert r["test"]["jaccard"] == pytest.approx(jaccard_score(gold, pred, average="samples", zero_division=1.0))
    assert r["test"]["f1_macro"] == pytest.approx(f1_score(gold, pred, average="macro", zero_division=0))
    assert r["test"]["f1_macro"] > 0.8


def test_regression_learns_and_pearson_matches_scipy(tmp_path):
    task = make_task(tmp_path, kind="regression")
    r = run_baseline(task, rules=None, data_root=None)
    gold = load_task(task)["test"].labels
    pred = r["outputs"]["test"]
    assert pred.shape == (60,)
    assert r["selection_metric"] == "pearson"
    assert r["test"]["pearson"] == pytest.approx(pearsonr(gold, pred)[0])
    assert r["test"]["mse"] == pytest.approx(np.mean((gold - pred) ** 2), rel=1e-5)
    assert r["test"]["pearson"] > 0.7
    assert r["best_params"]["alpha"] in ALPHA_GRID


def test_class_absent_from_train_is_never_predicted(tmp_path):
    # a 4th category with no examples anywhere: no fit is possible for it, probability 0
    task = make_task(tmp_path, categories={"neg": 0, "neu": 1, "pos": 2, "other": 3})
    r = run_baseline(task, rules=None, data_root=None)
    assert r["outputs"]["test"].shape == (60, 4)
    assert np.all(r["outputs"]["test"][:, 3] == 0)
    assert r["test"]["per_class"]["other"]["support"] == 0


# --------------------------------------------------------------------------------------------------
# dev only: the test split never takes part in the choice


def test_test_split_is_predicted_once_after_the_choice(tmp_path, monkeypatch):
    task = make_task(tmp_path)
    splits = load_task(task)
    test_texts = pair_texts(splits["test"], None)
    calls: list[list[str]] = []
    original = bl.FittedBaseline.predict

    def spy(self, texts):
        calls.append(list(texts))
        return original(self, texts)

    monkeypatch.setattr(bl.FittedBaseline, "predict", spy)
    run_baseline(task, rules=None, data_root=None, splits=splits)
    assert [c == test_texts for c in calls] == [False] * len(C_GRID) + [True]  # one dev pass per grid value, then test once


def test_changing_test_labels_changes_nothing_but_test_scores(tmp_path):
    task = make_task(tmp_path)
    splits = load_task(task)
    a = run_baseline(task, rules=None, data_root=None, splits=splits)
    flipped = {**splits, "test": type(splits["test"])(**{**vars(splits["test"]), "labels": (splits["test"].labels + 1) % 3})}
    b = run_baseline(task, rules=None, data_root=None, splits=flipped)
    assert a["best_params"] == b["best_params"] and a["grid"] == b["grid"]
    assert a["dev"] == b["dev"]
    np.testing.assert_array_equal(a["outputs"]["test"], b["outputs"]["test"])
    assert a["test"]["accuracy"] != b["test"]["accuracy"]


def test_fit_select_takes_no_test_split():
    import inspect

    assert "test" not in inspect.signature(fit_select).parameters


# --------------------------------------------------------------------------------------------------
# class weights, normalisation, determinism


def test_task_class_weights_become_example_weights(tmp_path, monkeypatch):
    task = make_task(tmp_path, n=(150, 60, 60), class_weights="auto")
    splits = load_task(task)
    keep = np.flatnonzero((splits["train"].labels != 2) | (np.arange(150) % 5 == 0))  # pos made rare
    train = type(splits["train"])(**{**vars(splits["train"]), "ids": [splits["train"].ids[i] for i in keep],
                                      "texts": [splits["train"].texts[i] for i in keep], "labels": splits["train"].labels[keep],
                                      "lines": None, "rows_in": None})  # a new split, not a quarantine
    seen = []
    original = baseline_models._fit_binary
    monkeypatch.setattr(baseline_models, "_fit_binary", lambda X, y, sw, C, seed: seen.append(sw) or original(X, y, sw, C, seed))
    fit_select(task, train, splits["dev"], seed=0)
    counts = np.bincount(train.labels, minlength=3)
    expected = (counts.max() / counts)[train.labels]  # count(majority) / count(class), per example
    assert counts[2] < counts[0]
    for sw in seen:
        np.testing.assert_allclose(sw, expected, rtol=1e-6)


def test_rules_normalise_every_text(tmp_path):
    task = make_task(tmp_path, kind="pair")
    split = load_task(task)["dev"]
    split.texts[0] = "@alguien MIRA https://t.co/x " + split.texts[0]
    rules = NormalizeRules().effective()
    want = [a + PAIR_SEPARATOR + b for a, b in zip(normalize_texts(split.texts, rules), normalize_texts(split.aux_texts, rules))]
    got = pair_texts(split, rules)
    assert got == want and got[0].startswith("user mira url ")


def test_deterministic_given_seed(tmp_path):
    task = make_task(tmp_path, noise=0.3)
    a = run_baseline(task, rules=None, data_root=None, seed=3)
    b = run_baseline(task, rules=None, data_root=None, seed=3)
    for split in ("dev", "test"):
        np.testing.assert_array_equal(a["outputs"][split], b["outputs"][split])
        assert a[split] == b[split]
    assert a["best_params"] == b["best_params"] and a["grid"] == b["grid"]


# --------------------------------------------------------------------------------------------------
# text form: raw or normalised, chosen on dev like C

def test_raw_text_is_chosen_when_only_a_mention_carries_the_label(tmp_path):
    task = make_task(tmp_path, noise=1.0, mention="label")  # the label word is random: only the mention tells
    rules = NormalizeRules().effective()
    assert all(t.startswith("user ") and "pepe" not in t for t in pair_texts(load_task(task)["train"], rules))  # who is erased
    r = run_baseline(task, rules=rules, data_root=None)
    normalized_only = run_baseline(task, rules=rules, data_root=None, forms=("normalized",))
    assert r["best_params"]["text"] == "raw" and r["model"].startswith("tfidf") and " on raw text " in r["model"]
    assert normalized_only["best_params"]["text"] == "normalized" and " on normalized text " in normalized_only["model"]
    assert r["test"]["f1_macro"] > 0.95  # the mention is the label
    assert normalized_only["test"]["f1_macro"] < 0.6  # every tweet reads "user <noise>": chance is 1/3
    # the grid holds both forms, normalised first, each over the whole C grid; the chosen one is the dev best
    assert [(g["params"]["text"], g["params"]["C"]) for g in r["grid"]] == [(t, c) for t in TEXT_FORMS for c in C_GRID]
    assert r["dev_selection"] == max(g["dev_selection"] for g in r["grid"]) == selection_score(r["dev"], task)


def test_normalized_text_is_kept_when_mentions_mislead(tmp_path):
    task = make_task(tmp_path, mention="shifted")
    r = run_baseline(task, rules=NormalizeRules().effective(), data_root=None)
    by_form = {t: max(g["dev_selection"] for g in r["grid"] if g["params"]["text"] == t) for t in TEXT_FORMS}
    assert r["best_params"]["text"] == "normalized" and by_form["normalized"] > by_form["raw"] + 0.1
    assert r["test"]["f1_macro"] > 0.75  # the label words, not the train-only mentions
    raw_only = run_baseline(task, rules=NormalizeRules().effective(), data_root=None, forms=("raw",))
    assert raw_only["best_params"]["text"] == "raw" and raw_only["test"]["f1_macro"] < r["test"]["f1_macro"] - 0.3


def test_a_tie_keeps_the_normalized_form_then_the_earlier_value(tmp_path):
    task = make_task(tmp_path, noise=0.3)  # lower-case words, no mention, URL or emoji: both forms read the same
    rules = NormalizeRules().effective()
    splits = load_task(task)
    assert pair_texts(splits["train"], rules) == pair_texts(splits["train"], None)
    fitted, chosen = fit_select(task, splits["train"], splits["dev"], rules=rules, seed=0)
    scores = {(g["params"]["text"], g["params"]["C"]): g["dev_selection"] for g in chosen["grid"]}
    assert all(scores["normalized", c] == scores["raw", c] for c in C_GRID)
    first_best = next(c for c in C_GRID if scores["normalized", c] == max(scores.values()))
    assert chosen["best_params"] == {"text": "normalized", "C": first_best} and fitted.text == "normalized"


def test_without_rules_only_raw_text_is_fitted(tmp_path, monkeypatch):
    task = make_task(tmp_path)
    built = []
    original = bl.build_features
    monkeypatch.setattr(bl, "build_features", lambda: built.append(1) or original())
    r = run_baseline(task, rules=None, data_root=None)
    assert len(built) == 1 and len(r["grid"]) == len(C_GRID) and r["best_params"]["text"] == "raw"
    assert text_forms(None) == [("raw", None)]
    with pytest.raises(ValueError, match="text_forms: 'normalized' needs"):
        text_forms(None, ("normalized",))
    with pytest.raises(ValueError, match=r"text_forms: \['lower'\]"):
        text_forms(NormalizeRules().effective(), ("raw", "lower"))


def test_with_rules_test_is_predicted_once_in_the_chosen_form(tmp_path, monkeypatch):
    task = make_task(tmp_path, noise=1.0, mention="label")
    rules = NormalizeRules().effective()
    splits = load_task(task)
    calls: list[list[str]] = []
    original = bl.FittedBaseline.predict
    monkeypatch.setattr(bl.FittedBaseline, "predict", lambda self, texts: calls.append(list(texts)) or original(self, texts))
    run_baseline(task, rules=rules, data_root=None, splits=splits)
    dev_forms = [pair_texts(splits["dev"], rules)] * len(C_GRID) + [pair_texts(splits["dev"], None)] * len(C_GRID)
    assert calls == [*dev_forms, pair_texts(splits["test"], None)]  # dev per form and value, then test once, raw


def test_the_chosen_form_is_in_the_summary(tmp_path):
    task = make_task(tmp_path, noise=1.0, mention="label")
    r = run_baseline(task, rules=NormalizeRules().effective(), data_root=None)
    entry = build_summary({"t": None}, {"t": r})["tasks"]["t"]["baseline"]
    assert entry["best_params"]["text"] == "raw" and entry["grid"][0]["params"] == {"text": "normalized", "C": C_GRID[0]}
    md = render_markdown(build_summary({"t": None}, {"t": r}))
    assert f"| t | raw | C={r['best_params']['C']} | normalized (C=0.1: " in md and "; raw (C=0.1: " in md
    assert f"`{r['model']}`" in md and " on raw text " in md


def test_deterministic_given_seed_with_both_forms(tmp_path):
    task = make_task(tmp_path, noise=0.3, mention="shifted")
    rules = NormalizeRules().effective()
    a = run_baseline(task, rules=rules, data_root=None, seed=5)
    b = run_baseline(task, rules=rules, data_root=None, seed=5)
    for split in ("dev", "test"):
        np.testing.assert_array_equal(a["outputs"][split], b["outputs"][split])
        assert a[split] == b[split]
    assert a["best_params"] == b["best_params"] and a["grid"] == b["grid"] and a["model"] == b["model"]


# --------------------------------------------------------------------------------------------------
# real tweets (a few seconds)


@pytest.mark.shared_data
def test_hateval_baseline_is_a_real_baseline():
    if not (SHARED_DATA / "hateval2019_es").is_dir():
        pytest.skip("../shared/data is absent")
    task = TaskConfig(train_file="hateval2019_es/train.tsv", dev_file="hateval2019_es/dev.tsv", test_file="hateval2019_es/test.tsv",
                      categories={"0": 0, "1": 1})
    r = run_baseline(task, rules=NormalizeRules().effective(), data_root=SHARED_DATA)
    # a TF-IDF + LR model on HatEval-es scores ~0.72 test macro-F1; majority-class guessing ~0.37
    assert 0.65 < r["test"]["f1_macro"] < 0.85
    assert r["dev_selection"] == pytest.approx(r["dev"]["f1_macro"])

"""``params.yaml`` <-> one tree of frozen dataclasses, validated on load.

``params.yaml`` is only the serialised form of :class:`Params`. Loading refuses unknown keys (with a
"did you mean" hint), wrong types and impossible values, always naming the dotted key, e.g.::

    params.yaml: model.n_encoder: unknown key (did you mean 'n_encoders'?)
    params.yaml: tasks.sentiment.train_file: no such file 'data/x.tsv'

Recipe knobs (they change results) and implementation knobs (``impl``: device, precision, compile,
attention backend, threads; they may only change speed) are separate sections, as in Cramming, so
``impl`` can be left out of the ``params:`` of stages whose *results* must not depend on it.

Key names follow the original TWilBERT configs wherever a key exists there (``representation.max_len``,
``model.*``, ``training.batch_size/epochs/optimizer/warmup_steps/accum_iters/n_gpus/path_initial_weights``,
``finetuning.*``, ``tasks.<name>.*`` with the original's ``dataset``/``task`` keys flattened). One rename:
the original's ``noam_annealing: true`` is ``schedule: noam`` here, since we also offer linear and
constant schedules and two keys for one choice could contradict each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from twilbert.config import ConfigError, check, flatten, from_dict, to_dict
from twilbert.data.pairs import PairsConfig
from twilbert.model.config import ModelConfig
from twilbert.text.normalize import NormalizeConfig
from twilbert.text.vocab import VocabConfig
from twilbert.finetune.config import FinetuningConfig, TaskConfig
from twilbert.train.config import ImplConfig, TrainingConfig

# Re-exported names (the schema's sections), kept for readability of type hints below.
TrainingParams = TrainingConfig
ImplParams = ImplConfig
FinetuningParams = FinetuningConfig
TaskParams = TaskConfig


@dataclass(frozen=True, kw_only=True)
class DataParams:
    """Raw corpora. ``pairs``: TSV ``ORIG_ID ORIG_TEXT REPLY_ID REPLY_TEXT`` (the original's format);
    ``tweets``: TSV ``ID TEXT`` single tweets, used for MLM only (no reply order)."""

    pairs: tuple[str, ...] = ()
    tweets: tuple[str, ...] = ()
    header: bool = True  # first line of every file is a header (the original's sample files had none)
    max_chars: int = 5000  # longer lines are quarantined as too_long (a tweet is <= 280 chars)

    def __post_init__(self) -> None:
        check(len(self.pairs) + len(self.tweets) > 0, "pairs", "no corpus given: set data.pairs and/or data.tweets")
        check(self.max_chars >= 10, "max_chars", "must be >= 10")


@dataclass(frozen=True, kw_only=True)
class RepresentationParams:
    max_len: int = 64  # tokens per segment; [CLS] a [SEP] b [SEP] has at most 2*max_len+3

    def __post_init__(self) -> None:
        check(4 <= self.max_len <= 1024, "max_len", f"must be in [4, 1024], got {self.max_len}")


@dataclass(frozen=True, kw_only=True)
class EvaluateParams:
    batch_size: int = 64
    pll_sentences: int = 50  # sentences scored by pseudo-log-likelihood (one forward per token)
    report_examples: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.pll_sentences >= 0, "pll_sentences", "must be >= 0")
        check(self.report_examples >= 0, "report_examples", "must be >= 0")


@dataclass(frozen=True, kw_only=True)
class TrackingParams:
    experiment: str = "twilbert"  # MLflow experiment name
    enabled: bool = True
    group: str = ""  # MLflow grid parent name for dvc exp runs; TWILBERT_GRID overrides; "" = exp-<baseline rev>


@dataclass(frozen=True, kw_only=True)
class Params:
    data: DataParams = field(default_factory=lambda: DataParams(pairs=("data/sample/pairs.tsv",)))
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    representation: RepresentationParams = field(default_factory=RepresentationParams)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingParams = field(default_factory=TrainingParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    finetuning: FinetuningParams = field(default_factory=FinetuningParams)
    tasks: dict[str, TaskParams] = field(default_factory=dict)
    impl: ImplParams = field(default_factory=ImplParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)

    def __post_init__(self) -> None:
        # The rules' cross-field checks (placeholders lower-case when lowercase is on, placeholder
        # tokens distinct) live on EffectiveRules, i.e. after the preset is applied; run them here so
        # a bad combination fails when params load, naming the full key, not when a stage starts.
        try:
            self.normalize.rules.effective()
        except ConfigError as exc:
            raise ConfigError(f"normalize.rules.{exc}") from None
        check(
            self.model.vocab_size is None or self.model.vocab_size == self.vocab.vocab_size,
            "model.vocab_size",
            "is derived from vocab.vocab_size; leave it null",
        )
        check(self.model.max_positions is None, "model.max_positions", "is derived from representation.max_len; leave it null")
        for name in self.tasks:
            check(name.replace("_", "").replace("-", "").isalnum(), f"tasks.{name}", "task names use letters, digits, _ and -")
        self._check_tasks_fit_the_encoder()

    def _check_tasks_fit_the_encoder(self) -> None:
        """Every task's longest input must fit the pipeline encoder's position table (``2 *
        representation.max_len + 3``), checked when params load: the fine-tune stage refuses it too,
        but only after hours of pre-training. Tasks that load another checkpoint
        (``path_load_weights``) are checked against it by the fine-tune stage."""
        from twilbert.finetune.config import effective_finetuning

        positions = 2 * self.representation.max_len + 3
        for name, task in self.tasks.items():
            ft = effective_finetuning(self.finetuning, task, name)
            if ft.path_load_weights not in (None, "random"):
                continue
            pair = task.aux_header is not None
            need = 2 * ft.max_len + 3 if pair else ft.max_len + 2
            most = (positions - 3) // 2 if pair else positions - 2
            key = f"tasks.{name}.finetuning.max_len" if "max_len" in (task.finetuning or {}) else "finetuning.max_len"
            check(
                need <= positions,
                key,
                f"{ft.max_len} tokens per segment{' (a text pair)' if pair else ''} need {need} positions, the "
                f"encoder has {positions} (2 * representation.max_len + 3); use max_len <= {most} for task "
                f"{name!r}, or raise representation.max_len",
            )


def _input_files(p: Params) -> dict[str, str]:
    """Every raw input file named in params, by dotted key (checked for existence on load)."""
    files = {f"data.pairs[{i}]": f for i, f in enumerate(p.data.pairs)}
    files.update({f"data.tweets[{i}]": f for i, f in enumerate(p.data.tweets)})
    for name, t in p.tasks.items():
        for split in ("train_file", "dev_file", "test_file"):
            files[f"tasks.{name}.{split}"] = getattr(t, split)
    return files


def load_params(path: str | Path = "params.yaml", *, check_files: bool = True) -> Params:
    """Load and validate params.yaml. Raises ConfigError whose message starts with the file name."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        params = from_dict(Params, raw or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if check_files:
        root = path.resolve().parent
        for key, f in _input_files(params).items():
            fp = Path(f) if os.path.isabs(f) else root / f
            if not fp.is_file():
                raise ConfigError(f"{path}: {key}: no such file '{f}'")
            if not os.access(fp, os.R_OK):
                raise ConfigError(f"{path}: {key}: file is not readable '{f}'")
        if params.vocab.pretrained:
            _check_pretrained_vocab(path, params.vocab, root)
    return params


def _check_pretrained_vocab(path: Path, vocab: Any, root: Path) -> None:
    """``vocab.pretrained`` names a usable tokenizer (a directory holding one, or the file) of exactly
    ``vocab.vocab_size`` tokens: caught here, before any stage runs, rather than at the vocab stage."""
    from twilbert.text.tokenizer import Tokenizer, TokenizerError

    where = Path(vocab.pretrained) if os.path.isabs(vocab.pretrained) else root / vocab.pretrained
    if not where.exists():
        raise ConfigError(f"{path}: vocab.pretrained: no such file or directory '{vocab.pretrained}' (an import-hf output)")
    try:
        size = Tokenizer.from_file(where).vocab_size
    except TokenizerError as exc:
        raise ConfigError(f"{path}: vocab.pretrained: {exc} (expected an import-hf output directory, or its tokenizer.json / spm.model)") from None
    if size != vocab.vocab_size:
        raise ConfigError(f"{path}: vocab.vocab_size: {vocab.vocab_size}, but vocab.pretrained has {size} tokens: set vocab.vocab_size: {size}")


def section_dict(params: Params, *sections: str) -> dict[str, Any]:
    """The named sections as plain dicts (what a stage reads, e.g. for MLflow params)."""
    out = {}
    for s in sections:
        obj = params
        for part in s.split("."):
            obj = obj[part] if isinstance(obj, dict) or hasattr(obj, "keys") and not hasattr(obj, part) else getattr(obj, part)
        out[s] = to_dict(obj)
    return out


def flat_params(params: Params, *sections: str) -> dict[str, Any]:
    """Flattened ``{"model.n_encoders": 6, ...}`` for the given sections (all when none given)."""
    tree = to_dict(params) if not sections else section_dict(params, *sections)
    if not sections:
        return flatten(tree)
    out = {}
    for s, sub in tree.items():
        out.update(flatten(sub, s) if isinstance(sub, dict) else {s: sub})
    return out

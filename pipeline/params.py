"""``params.yaml`` <-> one tree of frozen dataclasses, validated on load.

``params.yaml`` is only the serialised form of :class:`Params`. Loading refuses unknown keys (with a
"did you mean" hint), wrong types and impossible values, always naming the dotted key, e.g.::

    params.yaml: model.n_encoder: unknown key (did you mean 'n_encoders'?)
    params.yaml: tasks.sentiment.train_file: no such file 'data/x.tsv'
    params.yaml:41:1: training: repeated key (first at line 12); the second would silently replace the first

The file itself is read strictly (:func:`read_params_yaml`): a repeated key at any depth, an empty
file, a file that is not UTF-8 and a YAML syntax error are each one line ``file:line:column: problem``.
Sizes have upper bounds (:data:`PARAMS_BOUNDS`), and a model whose parameters alone would not fit
in this machine's RAM in fp32 training is refused, naming the keys that make it large.

Recipe sections (they change results), ``impl`` (speed only: device, precision, compile, attention
backend, threads, GPU count, prediction batch size) and the bookkeeping sections ``run`` and
``tracking`` are separate, as in Cramming. The layout is the one rule for DVC invalidation, the run
fingerprint and MLflow params (``pipeline/stage_params.py``). Keys that moved out of a recipe section
(:data:`MOVED_KEYS`) still load at their old place, with a one-line note.

Key names follow the original TWilBERT configs wherever a key exists there (``representation.max_len``,
``model.*``, ``training.batch_size/epochs/optimizer/warmup_steps/accum_iters/path_initial_weights``, ``impl.n_gpus``,
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

from twilbert.config import ConfigError, check, check_bounds, flatten, from_dict, note_deprecated, to_dict
from twilbert.data.pairs import PairsConfig
from twilbert.model.config import ModelConfig
from twilbert.model.size import MODEL_BOUNDS, TRAINING_BYTES_PER_PARAMETER, machine_memory_bytes, parameter_count
from twilbert.text.normalize import NormalizeConfig
from twilbert.text.vocab import VocabConfig
from twilbert.finetune.config import FinetuningConfig, TaskConfig
from twilbert.train.config import ImplConfig, RunConfig, TrainingConfig, accum_share_problem

# Re-exported names (the schema's sections), kept for readability of type hints below.
TrainingParams = TrainingConfig
ImplParams = ImplConfig
RunParams = RunConfig
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
    run: RunParams = field(default_factory=RunParams)
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
        unshared = accum_share_problem(self.training, self.impl.n_gpus)
        check(unshared is None, "training.accum_iters", f"{unshared} (impl.n_gpus is {self.impl.n_gpus})")
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


# Upper bounds on keys where a huge value allocates absurd memory or takes absurd time (the lower
# bounds are the sections' own checks, repeated for completeness). One table, so a knob that moves
# between sections moves here too: a key that no longer exists fails the load (tests/pipeline).
_FINETUNING_BOUNDS = {
    "batch_size": (1, 65_536),
    "accum_iters": (1, 65_536),
    "epochs": (1, 10_000),
    "warmup_steps": (0, 10**9),
}
PARAMS_BOUNDS: dict[str, tuple[int, int]] = {
    "data.max_chars": (10, 10_000_000),
    "vocab.vocab_size": MODEL_BOUNDS["vocab_size"],
    "vocab.input_sentence_size": (0, 50_000_000),  # ~0.45 GB + 2.3 KB per text: ~115 GB at the bound
    "pairs.rows_per_shard": (1, 10_000_000),
    "pairs.chunk_rows": (1, 10_000_000),
    **{f"model.{key}": bound for key, bound in MODEL_BOUNDS.items()},
    "training.batch_size": (1, 65_536),
    "training.accum_iters": (1, 65_536),
    "training.epochs": (0, 10_000),
    "training.max_steps": (0, 10**9),
    "training.warmup_steps": (0, 10**9),
    "training.bucket_width": (1, 4096),
    "evaluate.batch_size": (1, 65_536),
    "evaluate.pll_sentences": (0, 1_000_000),  # one forward pass per token of each sentence
    "evaluate.report_examples": (0, 10_000),
    **{f"finetuning.{key}": bound for key, bound in _FINETUNING_BOUNDS.items()},
    **{f"tasks.*.finetuning.{key}": bound for key, bound in _FINETUNING_BOUNDS.items()},
    "tasks.*.max_chars": (1, 10_000_000),
    "impl.num_threads": (0, 1024),
    "impl.tokenizer_threads": (0, 1024),
    "impl.num_workers": (0, 256),
    "impl.n_gpus": (1, 1024),
    "impl.pred_batch_size": (1, 65_536),
}

# Keys that left a recipe section (they change only speed or bookkeeping): old key -> new key. Old
# params files keep loading; both places set is an error, since one would silently win.
MOVED_KEYS = {
    "training.n_gpus": "impl.n_gpus",
    "finetuning.pred_batch_size": "impl.pred_batch_size",
    "training.log_every": "run.log_every",
    "training.checkpoint_every": "run.checkpoint_every",
    "training.max_bad_steps": "run.max_bad_steps",
    "training.on_config_change": "run.on_config_change",
    "training.resume_from": "run.resume_from",
    "finetuning.max_bad_steps": "run.max_bad_steps",
}

# The params keys that grow each part of ``twilbert.model.size.parameter_count``.
_PART_KEYS = {
    "embeddings": ("vocab.vocab_size", "model.embedding_size"),
    "encoder": ("model.n_encoders", "model.hidden_size"),
    "pkm": ("model.pkm_params.memory_size", "model.pkm_params.value_size"),
    "heads": ("vocab.vocab_size", "model.hidden_size"),
}


def load_params(path: str | Path = "params.yaml", *, check_files: bool = True) -> Params:
    """Load and validate params.yaml. Raises a one-line ConfigError whose message starts with the file name."""
    path = Path(path)
    raw = read_params_yaml(path)
    try:
        params = from_dict(Params, move_deprecated_keys(raw))
        check_bounds(params, PARAMS_BOUNDS)
        check_model_fits_memory(params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if check_files:
        root = path.resolve().parent
        for key, f in _input_files(params).items():
            fp = Path(f) if os.path.isabs(f) else root / f
            if fp.is_dir():
                raise ConfigError(f"{path}: {key}: is a directory, not a file '{f}'")
            if not fp.is_file():
                raise ConfigError(f"{path}: {key}: no such file '{f}'")
            if not os.access(fp, os.R_OK):
                raise ConfigError(f"{path}: {key}: file is not readable '{f}'")
        if params.vocab.pretrained:
            _check_pretrained_vocab(path, params.vocab, root)
    return params


def move_deprecated_keys(raw: dict) -> dict:
    """``raw`` with every :data:`MOVED_KEYS` old key moved to its new place, noted once per process on
    stderr. Two places setting one key (old and new, or two old keys with different values) is a
    ``ConfigError`` naming both; a task's own override of a moved key is refused (one value for all)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    set_by: dict[str, str] = {}  # new key -> the old key that set it
    for old, new in MOVED_KEYS.items():
        (old_section, old_key), (new_section, new_key) = old.split("."), new.split(".")
        section = out.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        target = out.setdefault(new_section, {})
        if target is None:
            target = out[new_section] = {}
        if not isinstance(target, dict):
            continue  # from_dict names the section's wrong type
        value = section.pop(old_key)
        if new_key in target and (new not in set_by or target[new_key] != value):
            raise ConfigError(f"{old}: moved to {new}, and {set_by.get(new, new)} sets it too; keep only {new}")
        target[new_key], set_by[new] = value, old
        note_deprecated(old, new)
    for name, task in (out.get("tasks") or {}).items():
        own = task.get("finetuning") if isinstance(task, dict) else None
        for key in own or {}:
            check(f"finetuning.{key}" not in MOVED_KEYS, f"tasks.{name}.finetuning.{key}",
                  f"moved to {MOVED_KEYS.get(f'finetuning.{key}')} (one value for every task)")
    return out


def read_params_yaml(path: Path) -> dict:
    """The params file as a dict, or a one-line ``ConfigError("file:line:column: problem")``.

    Why not ``yaml.safe_load``: it keeps the last of two equal keys (a second ``training:`` block
    silently replaced the first), returns None for an empty file (all defaults, silently), and its
    errors span several lines."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the params file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _line_column(data, exc.start, b"\n")
        raise ConfigError(f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8") from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters first; the node tree is checked before construction
        node = loader.get_single_node()
        if node is None or not node.value or node.tag == "tag:yaml.org,2002:null":  # nothing, ``~`` or ``{}``
            raise ConfigError(f"{path}:1:1: the params file is empty (expected sections such as data:, model:, training:)")
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else f"the value {_mark_text(node.value)}"
            raise ConfigError(f"{path}:{_at(node.start_mark)}: expected a mapping of sections (data:, model:, ...), got {kind}")
        _check_unique_keys(path, node, loader)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "not valid YAML").split())
        context = f" ({' '.join(exc.context.split())})" if exc.problem and exc.context else ""
        raise ConfigError(f"{path}:{_at(mark) if mark else '1:1'}: not valid YAML: {problem}{context}") from None
    except yaml.reader.ReaderError as exc:  # a control character (NUL...) that YAML does not allow
        line, column = _line_column(text, exc.position, "\n")
        raise ConfigError(f"{path}:{line}:{column}: character #x{exc.character:04x} is not allowed in YAML ({exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a params file") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_unique_keys(path: Path, root: yaml.Node, loader: yaml.SafeLoader) -> None:
    """A key repeated in one mapping, at any depth: an error naming the dotted key and both lines.
    Keys brought in by a YAML merge (``<<: *anchor``) may be overridden, as YAML intends."""
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    seen: set[int] = set()  # aliases point at one node twice (or at an ancestor)
    while stack:
        node, where = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node.value))
            continue
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                stack.append((value_node, where))
                continue
            key = loader.construct_object(key_node)
            dotted = f"{where}.{_mark_text(key)}" if where else _mark_text(key)
            if key in first:
                raise ConfigError(
                    f"{path}:{_at(key_node.start_mark)}: {dotted}: repeated key (first at line "
                    f"{first[key].start_mark.line + 1}); the second would silently replace the first"
                )
            first[key] = key_node
            stack.append((value_node, dotted))


def _at(mark: yaml.Mark) -> str:
    return f"{mark.line + 1}:{mark.column + 1}"


def _line_column(data: bytes | str, offset: int, newline: bytes | str) -> tuple[int, int]:
    """1-based line and column of ``offset`` in ``data`` (bytes or characters)."""
    start = data.rfind(newline, 0, offset) + 1
    return data.count(newline, 0, offset) + 1, offset - start + 1


def _mark_text(value: Any, limit: int = 40) -> str:
    """A key or value for a one-line message: as written when printable, else its repr; cut short."""
    text = str(value)
    if not text.isprintable():
        text = repr(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _bytes_text(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,} bytes"


def check_model_fits_memory(params: Params, memory: int | None = None) -> None:
    """Refuse a model whose weights, gradients and Adam state (fp32) exceed this machine's RAM.

    Computed from the config (``twilbert.model.size``), so a huge model fails at load, naming the keys
    of its largest parts, not as an allocation failure inside torch hours into the pipeline."""
    memory = machine_memory_bytes() if memory is None else memory
    if not memory:
        return
    cfg = params.model.resolved(vocab_size=params.vocab.vocab_size, max_len=params.representation.max_len)
    parts = parameter_count(cfg)
    need = TRAINING_BYTES_PER_PARAMETER * sum(parts.values())
    if need <= memory:
        return
    keys = list(dict.fromkeys(k for part in sorted(parts, key=parts.get, reverse=True) if parts[part] for k in _PART_KEYS[part]))
    raise ConfigError(
        f"model: {sum(parts.values()):,} parameters need {_bytes_text(need)} for weights, gradients and Adam state "
        f"(fp32, {TRAINING_BYTES_PER_PARAMETER} bytes each), more than this machine's {_bytes_text(memory)} of RAM; "
        f"make these smaller: {', '.join(keys)}"
    )


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

"""Using a trained model: label predictions and contextual embeddings, from Python or the CLI.

``load(path)`` reads a fine-tuned model directory (``models/finetune/<task>``: weights, config.json with
labels / task type / normalisation rules / max_len, spm.model) or a pre-trained checkpoint
(``models/pretrain/final`` or its parent; tokenizer from ``vocab_model`` or ``pretrain.json``) and
returns a :class:`Predictor`. The ``twilbert predict`` / ``twilbert embed`` commands and the MLflow
pyfunc (``pipeline/pyfunc.py``) are thin wrappers around it, so all three give the same results.

A text takes the path fine-tuning evaluated it on (:mod:`twilbert.finetune.inputs`): the model's own
normalisation rules and SentencePiece model, ``[CLS] a [SEP] (b [SEP])`` cut to its ``max_len``.
Speed comes from these, not from approximations: length-sorted batches (results scattered back; a
batch without padding runs mask-free, SDPA's fastest kernels), ``torch.inference_mode``, a ``cls``
head's last layer computed for [CLS] alone (``first_only``), vectorised normalisation and tokenisation,
and on the CPU batch parallelism (``workers``): each of ``torch.get_num_threads()`` threads runs whole
batches with one intra-op thread, instead of every op splitting over all cores. A tweet batch's ops
are too small to split well: each op waits at an OpenMP barrier for its slowest thread, which on a
shared CPU is often descheduled (a 4 x 256 classifier ran 6-7x faster this way on a loaded 2-core
EPYC, benchmarks/RESULTS.md#inference). ``workers=1`` is the plain PyTorch way.
Opt-in: ``precision="bf16"`` (autocast matrix products; several times faster on a CPU with native
bf16, probabilities move by ~1e-3), ``precision="int8"`` (dynamic int8 linears, :mod:`twilbert.quantize`;
the CPU's fastest path without native bf16) and ``compile=True`` (``torch.compile(dynamic=True)``; on 2 CPU
cores it has not paid off, ``benchmarks/predict_throughput.py``). The defaults reproduce the evaluated model's
outputs to float rounding.

:meth:`Predictor.predict` returns one dict per text, shaped by the model's task type
(:meth:`TaskType.predict_rows`): ``{"label": str, "probabilities": {label: p}}`` (single-label,
softmax), ``{"labels": [str...], "probabilities": {label: p}}`` (multi-label, sigmoid, labels with
``p >= threshold``), ``{"value": float}`` (regression).

A model directory is an input like any other (copied, edited, crafted): its ``config.json`` is
validated before anything is built (:mod:`twilbert.finetune.model_dir`, the strict
``train.checkpoint.model_config``), and :func:`load` also refuses a weight that is not finite (a NaN
model would otherwise "predict" NaN). Inputs are cut to ``max_len`` and never past the position table:
a long input is truncated, as in training, never an error. Outputs are checked finite and
written as strict JSON, so a result is always valid JSON or a one-line error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twilbert.config import ConfigError, from_dict
from twilbert.finetune.inputs import Batch, EncodedSplit, collate, encode_texts
from twilbert.finetune.model import SequenceClassifier, pool
from twilbert.finetune.task_types import get_task_type
from twilbert.model.twilbert import TWilBERT
from twilbert.text.normalize import EffectiveRules, NormalizeRules
from twilbert.text.tokenizer import Tokenizer
from twilbert.train.runtime import autocast, autocast_dtype, resolve_device

POOLINGS = ("cls", "mean")
PRECISIONS = ("fp32", "bf16", "int8")  # the matrix products (bf16: torch.autocast; int8: twilbert/quantize.py)


class InputError(ConfigError):
    """Unusable input (missing column, empty file, a text pair model without its second text...)."""


class OutputError(ConfigError):
    """An output that cannot be reported: a non-finite value (JSON has no NaN)."""


# --------------------------------------------------------------------------------------------------
# the predictor


@dataclass
class Predictor:
    """A loaded model and everything needed to turn raw texts into predictions or embeddings."""

    encoder: TWilBERT
    tokenizer: Tokenizer
    rules: EffectiveRules | None  # None = texts are used as given
    max_len: int  # tokens per segment (a pre-trained encoder: single texts; pairs get (P - 3) // 2 each)
    classifier: SequenceClassifier | None = None  # None for a pre-trained encoder (embeddings only)
    info: dict[str, Any] = field(default_factory=dict)  # a fine-tuned model's config.json
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    source: str = ""
    compile: bool = False  # run the forward pass through torch.compile (see the module docstring)
    precision: str = "fp32"  # fp32 | bf16 (autocast matrix products) | int8 (set by load: int8 linears)
    workers: int = 0  # batches run at once on the CPU, one intra-op thread each; 0 = torch.get_num_threads(), 1 = one at a time
    _compiled: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.precision == "int8":  # the encoder (shared with the classifier) gets its int8 linears
            from twilbert.quantize import quantize_int8

            quantize_int8(self.encoder)

    def _fn(self, name: str):
        """``classifier`` or ``encode``, compiled once on first use when ``compile`` is set."""
        fn = self.classifier if name == "classifier" else self.encoder.encode
        if not self.compile:
            return fn
        if name not in self._compiled:
            self._compiled[name] = torch.compile(fn, dynamic=True)
        return self._compiled[name]

    def _autocast(self):
        """bf16: autocast on the model's device; fp32 and int8 (its linears are int8 modules): a no-op context."""
        _check_precision(self.precision)
        return autocast(self.device, None if self.precision == "int8" else autocast_dtype(self.precision, self.device))

    def _workers(self) -> int:
        """Threads that run batches side by side: CPU, eager; 1 elsewhere (a GPU, or a compiled forward)."""
        if self.device.type != "cpu" or self.compile:
            return 1
        return self.workers if self.workers > 0 else torch.get_num_threads()

    def _each_batch(self, data: EncodedSplit, batch_size: int, step, *, progress: bool, desc: str) -> None:
        """``step(batch)`` for every batch of ``data``, under inference mode and the precision's autocast,
        on :meth:`_workers` threads, no more than there are batches (one batch keeps the caller's thread
        and all its intra-op threads). Both modes are thread-local, so each worker enters them. At most
        two batches per worker are collated ahead; the first error is raised here."""
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        def run(b: Batch) -> None:
            with torch.inference_mode(), self._autocast():
                step(b)

        batches = self.batches(data, batch_size, progress=progress, desc=desc)
        workers = min(self._workers(), -(-len(data) // batch_size)) if batch_size >= 1 else 1  # (batches() refuses < 1)
        if workers <= 1:
            for b in batches:
                run(b)
            return
        threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(workers, thread_name_prefix="twilbert-batch", initializer=torch.set_num_threads, initargs=(1,)) as pool:
                pending: set = set()
                for b in batches:
                    if len(pending) >= 2 * workers:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for f in done:
                            f.result()
                    pending.add(pool.submit(run, b))
                for f in pending:
                    f.result()
        finally:  # a worker's setting also reaches MKL's process-wide count: give the caller its own back
            torch.set_num_threads(threads)

    # -- what the model is -------------------------------------------------------------------------
    @property
    def is_classifier(self) -> bool:
        return self.classifier is not None

    @property
    def task_type(self) -> str | None:
        return self.info.get("task_type")

    @property
    def labels(self) -> list[str]:
        """Category names in output order (empty for regression and pre-trained encoders)."""
        return [k for k, _ in sorted((self.info.get("labels") or {}).items(), key=lambda kv: kv[1])]

    @property
    def text_pair(self) -> bool:
        """True when the model was fine-tuned on text pairs and needs ``aux`` texts."""
        return bool(self.info.get("text_pair"))

    @property
    def threshold(self) -> float:
        return float(self.info.get("threshold") or 0.5)

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.hidden_size

    # -- inputs ------------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], aux: Sequence[str] | None = None) -> EncodedSplit:
        """Normalise and tokenise (vectorised): token ids of ``[CLS] a [SEP] (b [SEP])`` per text."""
        texts = _as_texts(texts, "texts")
        if aux is not None:
            aux = _as_texts(aux, "aux")
            if len(aux) != len(texts):
                raise InputError(f"aux: {len(aux)} texts for {len(texts)} texts; one second text per text")
        if self.is_classifier and self.text_pair and aux is None:
            raise InputError(f"{self.source}: a text-pair model (fine-tuned on pairs): give the second texts (aux / --aux-column)")
        if self.is_classifier and not self.text_pair and aux is not None:
            raise InputError(f"{self.source}: a single-text model: it takes no second text (aux / --aux-column)")
        # each segment cut to max_len, as in training, and never past the position table
        positions = self.encoder.config.max_positions
        max_len = min(self.max_len, positions - 2 if aux is None else (positions - 3) // 2)
        return encode_texts(self.tokenizer, texts, aux, max_len=max_len, rules=self.rules)

    def batches(self, data: EncodedSplit, batch_size: int, *, progress: bool = False, desc: str = "") -> Iterator[Batch]:
        """Length-sorted batches on the model's device; ``attention_mask`` is None when a batch has no
        padding (SDPA's fastest path). ``batch.index`` says where each row goes back."""
        from twilbert.progress import Progress

        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        lengths = data.lengths
        order = np.argsort(lengths, kind="stable")
        chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        with Progress(len(data), desc or "batches", "texts", enabled=progress) as bar:
            for idx in chunks:
                b = collate(data, idx).to(self.device)
                if lengths[idx[0]] == lengths[idx[-1]]:  # sorted: equal ends = no padding in this batch
                    b.attention_mask = None
                yield b
                bar.update(len(idx))

    # -- outputs -----------------------------------------------------------------------------------
    def outputs(self, texts: Sequence[str], aux: Sequence[str] | None = None, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Raw head outputs (N, n_outputs) float32 (logits, or values for regression), input order."""
        return self.outputs_of(self.encode(texts, aux), batch_size=batch_size, progress=progress)

    def outputs_of(self, data: EncodedSplit, *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """:meth:`outputs` of already encoded texts (twilbert/bulk.py encodes the next chunk meanwhile)."""
        if self.classifier is None:
            raise InputError(f"{self.source}: a pre-trained encoder has no classifier head: use embed(), or a fine-tuned model")
        out = np.zeros((len(data), self.classifier.head.out_features), dtype=np.float32)
        forward = self._fn("classifier")

        def step(b: Batch) -> None:  # batches own disjoint rows of `out`
            out[b.index] = forward(b.input_ids, b.token_type_ids, b.attention_mask).float().cpu().numpy()  # (B, C)

        self._each_batch(data, batch_size, step, progress=progress, desc="predict")
        return self._finite(out, "output")

    def predict(self, texts: Sequence[str], aux: Sequence[str] | None = None, batch_size: int = 64, *, progress: bool = False) -> list[dict[str, Any]]:
        """One dict per text (see module docstring), in input order."""
        raw = self.outputs(texts, aux, batch_size=batch_size, progress=progress)
        return self.format(raw)

    def format(self, raw: np.ndarray) -> list[dict[str, Any]]:
        """Raw outputs -> prediction dicts, as the model's task type shapes them."""
        kind = get_task_type(self.task_type)
        probs = kind.probabilities(torch.from_numpy(raw)).numpy()
        return kind.predict_rows(probs, self.labels, self.threshold)

    def embed(
        self, texts: Sequence[str], aux: Sequence[str] | None = None, pooling: str = "cls", batch_size: int = 64, *, progress: bool = False
    ) -> np.ndarray:
        """Contextual embeddings (N, H) float32, input order: the final hidden state of ``[CLS]``
        (``cls``), or the mean over the real tokens (``mean``: every non-padding position, [CLS] and
        [SEP] included, as sentence-transformers' mean pooling)."""
        if pooling not in POOLINGS:
            raise InputError(f"pooling must be one of {list(POOLINGS)}, got {pooling!r}")
        data = self.encode(texts, aux)
        out = np.zeros((len(data), self.hidden_size), dtype=np.float32)
        encode = self._fn("encode")

        def step(b: Batch) -> None:
            # cls: the last layer computes only [CLS] (TWilBERT.encode's first_only; same vectors)
            hidden = encode(b.input_ids, b.token_type_ids, b.attention_mask, first_only=pooling == "cls")  # (B, T or 1, H)
            vec = pool(hidden.float(), b.input_ids, b.attention_mask, "cls" if pooling == "cls" else "avg", use_special_tokens=True)  # (B, H)
            out[b.index] = vec.cpu().numpy()

        self._each_batch(data, batch_size, step, progress=progress, desc="embed")
        return self._finite(out, "embedding")

    def _finite(self, out: np.ndarray, what: str) -> np.ndarray:
        """``out`` (N, ...) when every value is finite, else an :class:`OutputError` naming the rows."""
        bad = ~np.isfinite(out.reshape(len(out), -1)).all(axis=1)  # (N,)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise OutputError(f"{self.source}: non-finite {what} (NaN or inf) for {len(rows)} input(s), the first at "
                              f"0-based row(s) {', '.join(map(str, rows[:5]))}; nothing was written")
        return out

    def __repr__(self) -> str:
        kind = f"{self.task_type}, labels={self.labels}" if self.is_classifier else "pre-trained encoder"
        return f"Predictor({self.source!r}, {kind}, max_len={self.max_len}, device={self.device.type})"


def _as_texts(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise InputError(f"{name}: expected a list of texts, got one string")
    out = list(texts)
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise InputError(f"{name}: item {bad[0]} is {type(out[bad[0]]).__name__}, not a text ({len(bad)} such items)")
    return out


# --------------------------------------------------------------------------------------------------
# loading


def _rules_from(stored: dict[str, Any] | None) -> EffectiveRules | None:
    if stored is None:
        return None
    return from_dict(EffectiveRules, stored, "normalize")


def pretrained_rules(directory: str | Path) -> EffectiveRules | None:
    """The normalisation rules a pre-trained checkpoint's ``pretrain.json`` records (None if none)."""
    from twilbert.train.checkpoint import read_pretrain_meta

    return _rules_from(read_pretrain_meta(directory).get("normalize"))


def _resolve_rules(normalize: Any, default: EffectiveRules | None) -> EffectiveRules | None:
    if normalize is None:
        return default
    if normalize is False:
        return None
    if isinstance(normalize, NormalizeRules):
        return normalize.effective()
    if isinstance(normalize, EffectiveRules):
        return normalize
    raise TypeError(f"normalize: expected None, False, NormalizeRules or EffectiveRules, got {type(normalize).__name__}")


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")


def load(
    path: str | Path,
    *,
    vocab_model: str | Path | None = None,
    normalize: EffectiveRules | NormalizeRules | bool | None = None,
    device: str | torch.device = "cpu",
    attention: str = "sdpa",
    compile: bool = False,
    precision: str = "fp32",
    workers: int = 0,
) -> Predictor:
    """Load a fine-tuned model directory or a pre-trained checkpoint for prediction / embedding.

    ``normalize``: None = the model's own rules (a fine-tuned model stores them, and so does a
    pre-trained checkpoint's ``pretrain.json`` since the pretrain stage records them; for one without,
    e.g. an older or imported checkpoint, the project's default rules), False = no normalisation, or
    explicit rules. ``vocab_model``: the SentencePiece model of a pre-trained checkpoint (default: the
    one its ``pretrain.json`` records; a fine-tuned model always uses its own ``spm.model``).
    ``compile``: run the forward pass through ``torch.compile`` (opt-in; on CPU it has not paid off, see above).
    ``precision``: ``fp32`` (default), ``bf16`` (autocast matrix products; faster, ~1e-3 off) or ``int8``
    (dynamic int8 linears, CPU only; :data:`twilbert.quantize.INT8_PROB_TOL`). ``workers``: batches run
    side by side on the CPU, one intra-op thread each (0 = ``torch.get_num_threads()``; 1 = one batch
    at a time over every thread, the plain PyTorch way).
    """
    if workers < 0:
        raise InputError(f"workers must be >= 0 (0 = one per torch thread), got {workers}")
    from twilbert.finetune.model import FORMAT, load_encoder, load_finetuned, resolve_pretrained_dir
    from twilbert.train.checkpoint import read_config

    _check_precision(precision)
    directory = resolve_pretrained_dir(path)
    dev = resolve_device(device, key="device", error=InputError)
    if precision == "int8":
        from twilbert.quantize import int8_problem

        if (problem := int8_problem(dev)) is not None:
            raise InputError(problem)
    common = dict(device=dev, source=str(path), compile=compile, precision=precision, workers=workers)
    stored = read_config(directory)
    if stored.get("format") == FORMAT:
        ft = load_finetuned(directory, attention=attention)  # config.json validated (model_dir.read_finetuned_config)
        _check_finite_weights(ft.model, directory)
        ft.model.to(dev).eval()
        return Predictor(
            encoder=ft.model.encoder,
            tokenizer=Tokenizer.from_file(ft.tokenizer_path),
            rules=_resolve_rules(normalize, _rules_from(ft.config.get("normalize"))),
            max_len=int(ft.config["max_len"]),
            classifier=ft.model,
            info=ft.config,
            **common,
        )
    encoder = load_encoder(directory, attention=attention)
    _check_finite_weights(encoder, directory)
    encoder.to(dev).eval()
    # the longest input that fits the position table: [CLS] a [SEP] (single text)
    return Predictor(
        encoder=encoder,
        tokenizer=_pretrained_tokenizer(directory, path, vocab_model, encoder.config.vocab_size),
        rules=_resolve_rules(normalize, pretrained_rules(directory) or NormalizeRules().effective()),
        max_len=encoder.config.max_positions - 2,
        **common,
    )


def _pretrained_tokenizer(directory: Path, path: str | Path, vocab_model: str | Path | None, vocab_size: int) -> Tokenizer:
    """The tokenizer of a pre-trained checkpoint (``vocab_model``, else the one its ``pretrain.json``
    records), refused unless it is the vocabulary the checkpoint was pre-trained with."""
    from twilbert.finetune.model import pretrained_tokenizer_sha256
    from twilbert.train.checkpoint import CheckpointError

    if vocab_model is None:
        from twilbert.hf import pretrained_tokenizer_path

        vocab_model = pretrained_tokenizer_path(directory)
        if vocab_model is None:
            raise CheckpointError(f"{path}: pretrain.json names no existing tokenizer; pass vocab_model (--vocab-model models/vocab)")
    tokenizer = Tokenizer.from_file(vocab_model)
    if tokenizer.vocab_size != vocab_size:
        raise CheckpointError(f"{vocab_model}: {tokenizer.vocab_size} pieces, but {path} has vocab_size={vocab_size}")
    recorded = pretrained_tokenizer_sha256(directory)
    if recorded is not None and recorded != tokenizer.sha256:  # same size, another vocabulary: every row means another token
        raise CheckpointError(f"{vocab_model}: not the vocabulary {path} was pre-trained with (sha256 {tokenizer.sha256[:12]} vs {recorded[:12]})")
    return tokenizer


def _check_finite_weights(model: torch.nn.Module, directory: Path) -> None:
    """Refuse a model with a NaN or infinite weight: it would answer every input with NaN."""
    from twilbert.train.checkpoint import MODEL_FILE, CheckpointError

    tensors = list(model.named_parameters()) + list(model.named_buffers())
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{directory / MODEL_FILE}: non-finite weights (NaN or inf) in {len(bad)} tensor(s), "
                              f"the first {bad[0]}; refusing to load a model that cannot predict")


# --------------------------------------------------------------------------------------------------
# input files


@dataclass
class InputTexts:
    texts: list[str]
    aux: list[str] | None = None
    ids: list[str] | None = None


def _fmt_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    known = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
    if suffix not in known:
        raise InputError(f"{path}: cannot tell the format from '{suffix}'; use --format tsv|csv|jsonl")
    return known[suffix]


def read_input_file(
    path: str | Path,
    text_column: str,
    aux_column: str | None = None,
    id_column: str | None = None,
    fmt: str = "auto",
) -> InputTexts:
    """Texts (and second texts, ids) of a TSV (header, no quoting: tweets may start with ``"``), CSV
    (header, standard quoting) or JSON-lines file. Missing columns, missing values and empty files
    are :class:`InputError` naming the file (and line)."""
    import polars as pl

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    kind = _fmt_of(path, fmt)
    row = "__row__"
    try:
        if kind == "jsonl":
            df = pl.read_ndjson(path, infer_schema_length=None).with_row_index(row)
        else:
            df = pl.read_csv(
                path,
                separator="\t" if kind == "tsv" else ",",
                quote_char=None if kind == "tsv" else '"',
                infer_schema=False,
                empty_string_is_null=False,
                row_index_name=row,
                raise_if_empty=True,
            )
    except pl.exceptions.NoDataError:
        raise InputError(f"{path}: empty file") from None
    except (pl.exceptions.ComputeError, pl.exceptions.PolarsError, ValueError) as exc:
        where = _unreadable_line(path.read_bytes(), kind) or f"cannot be read as {kind}"
        raise InputError(f"{path}: {where} ({str(exc).splitlines()[0]})") from None
    if df.height == 0:
        raise InputError(f"{path}: no rows (empty file or a header only)")
    first_line = 1 if kind == "jsonl" else 2  # 1-based file line of row 0
    wanted = {"--text-column": text_column, "--aux-column": aux_column, "--id-column": id_column}
    available = [c for c in df.columns if c != row]
    out: dict[str, list[str] | None] = {}
    for option, col in wanted.items():
        if col is None:
            out[option] = None
            continue
        if col not in available:
            raise InputError(f"{path}: no column '{col}' ({option}); available columns: {available}")
        s = df[col]
        if s.dtype != pl.String:
            if isinstance(s.dtype, (pl.List, pl.Struct, pl.Array)):
                raise InputError(f"{path}: column '{col}' holds {s.dtype}, not texts")
            s = s.cast(pl.String)
        nulls = s.is_null()
        if nulls.any():
            rows = df[row].filter(nulls).head(5).to_list()
            lines = ", ".join(str(r + first_line) for r in rows)
            raise InputError(f"{path}: column '{col}' is missing or null on line(s) {lines} ({int(nulls.sum())} rows)")
        out[option] = s.to_list()
    return InputTexts(texts=out["--text-column"], aux=out["--aux-column"], ids=out["--id-column"])  # type: ignore[arg-type]


def _unreadable_line(data: bytes, kind: str) -> str | None:
    """Only on the error path: where a file polars could not read goes wrong ("line 3 has 4 fields,
    the header has 3", "line 2: invalid UTF-8 at byte 6 ..."), the fine-tuning task reader's words;
    None when no line explains it."""
    from twilbert.finetune.task_files import ragged_line, undecodable_line

    where = undecodable_line(data)
    if where is None and kind == "tsv":  # no quoting: every tab separates fields (CSV quotes may hold commas)
        where = ragged_line(data, "\t")
    if where is None and kind == "jsonl":
        for n, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError as err:
                return f"line {n}: not valid JSON ({err})"
            if not isinstance(value, dict):
                return f"line {n}: a JSON {type(value).__name__}, not an object"
    return where


def read_lines(stream) -> InputTexts:
    """One text per line (stdin): line breaks stripped, nothing else changed.

    Input must be UTF-8: an undecodable line is an :class:`InputError` naming it (never a text with
    surrogate escapes, which would fail deep in tokenisation)."""
    import io

    from twilbert.finetune.task_files import undecodable_line

    buffer = getattr(stream, "buffer", None)
    if buffer is not None:  # the bytes, so a bad line is found whatever the stream's errors= handler
        data = buffer.read()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"stdin: {undecodable_line(data) or 'invalid UTF-8'}") from None
        stream = io.StringIO(text, newline=None)  # universal newlines, as a text stdin reads them
    texts = [line.rstrip("\r\n") for line in stream]
    if buffer is None:  # a text stream (decoded with surrogateescape?): strict UTF-8 never gives surrogates
        for n, line in enumerate(texts, start=1):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as err:
                raise InputError(f"stdin: line {n}: invalid UTF-8 at character {err.start + 1}") from None
    if not texts:
        raise InputError("stdin: no input texts (give one text per line, or --input FILE)")
    return InputTexts(texts=texts)


def jsonl_text(rows: list[dict[str, Any]], ids: list[str] | None = None) -> str:
    """One strict JSON line per row (``allow_nan=False``: JSON has no NaN); a non-finite value is an
    :class:`OutputError` naming the row, before anything is written."""
    lines = []
    for i, r in enumerate(rows):
        if ids is not None:
            r = {"id": ids[i], **r}
        try:
            lines.append(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")
        except ValueError as exc:
            raise OutputError(f"row {i}: {exc} (NaN or inf); nothing was written") from None
    return "".join(lines)


def write_jsonl(rows: list[dict[str, Any]], stream, ids: list[str] | None = None) -> None:
    stream.write(jsonl_text(rows, ids))


def write_embeddings(vectors: np.ndarray, out: str | Path, ids: list[str] | None = None) -> Path:
    """``.npy`` (N, H) float32 in input order, or ``.arrow`` (IPC file): ``id`` (the id column, else
    the 0-based row number) and ``embedding`` (fixed-size list of H float32)."""
    from twilbert.utils import atomic_write

    out = Path(out)
    if out.suffix not in (".npy", ".arrow", ".feather", ".ipc"):
        raise InputError(f"{out}: the output must end in .npy or .arrow")
    if not np.isfinite(vectors).all():
        raise OutputError(f"{out}: non-finite embeddings (NaN or inf); nothing was written")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        atomic_write(out, lambda tmp: _save_npy(tmp, vectors))
        return out
    import pyarrow as pa

    n, h = vectors.shape
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)), h)
    id_col = pa.array(ids, type=pa.string()) if ids is not None else pa.array(np.arange(n, dtype=np.int64))
    table = pa.table({"id": id_col, "embedding": emb})

    def write(tmp: Path) -> None:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)

    atomic_write(out, write)
    return out


def _save_npy(path: Path, vectors: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to the temp file's name
        np.save(f, vectors.astype(np.float32, copy=False))


__all__ = [
    "InputError",
    "InputTexts",
    "OutputError",
    "POOLINGS",
    "Predictor",
    "load",
    "read_input_file",
    "jsonl_text",
    "read_lines",
    "write_embeddings",
    "write_jsonl",
]

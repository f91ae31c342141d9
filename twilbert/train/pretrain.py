"""Pre-training loop: MLM + Reply Order Prediction over the Arrow pair shards, resumable, DDP-ready.

Reading order: :func:`pretrain` (the entry point) builds a :class:`Pretrainer`, whose ``setup`` joins the
process group, opens the shards, builds model/optimizer/schedule and resumes; ``run`` loops over
optimizer steps; ``train_step`` is one step over its micro-batches.

Loss normalisation (why accumulation and DDP equal one big batch)
------------------------------------------------------------------
One optimizer step sees ``accum_iters`` micro-batches in all, ``A = accum_iters / W`` on each of ``W``
processes (``training.accum_iters`` must be a multiple of ``W``). Before any forward
pass, the step's MLM target count ``N_mlm`` and labelled ROP row count ``N_rop`` are summed over the
micro-batches (the masks are made in the data pipeline, so the counts are known on the host) and
all-reduced over the ranks. Each micro-batch then back-propagates

    W · ( w_mlm · Σ_targets CE / N_mlm  +  w_rop · Σ_rows CE / N_rop )

so the accumulated gradient is exactly the gradient of the mean loss over *all* targets and labelled
rows of the step, whatever their split into micro-batches and ranks (the factor ``W`` undoes DDP's
gradient averaging). The usual ``loss / accum_iters`` is only right when every micro-batch has the same
number of targets, which bucketing, partial batches and dynamic masking all break. Consequence:
``W`` processes × ``accum A`` × batch ``b`` train the same model as 1 process × ``accum W·A`` × batch
``b`` (same batches: both read the plan positions ``k·W·A ... (k+1)·W·A - 1`` at step ``k``, with the
same masks, which are seeded per plan position) -- which is why ``accum_iters`` is the global count:
the same params train the same model on any number of processes. Exceptions: dropout (per-process random streams) and
PKM batch-norm statistics (per micro-batch, as any batch norm).

The original (inventory §7.1, §8) averaged each micro-batch's loss over its own targets and divided
the accumulated gradient by ``accum``: equivalent only for equal target counts.

Resumption is exact: the data plan and the masks are pure functions of ``(seed, epoch, plan position)``,
so a checkpoint stores only where it was (epoch, micro-batch cursor, step) plus weights, optimizer,
scheduler and the per-rank RNG states (dropout). A resumed run gives bit-identical weights on CPU.

Non-finite guard: a step whose loss or gradient norm is NaN/inf is skipped (gradients dropped, the
optimizer untouched; the step counter and the schedule still advance, since the data did); after
``training.max_bad_steps`` consecutive skipped steps training stops with :class:`NonFiniteLossError`.
Checking costs one host sync per optimizer step (without ``masked_lm.static_targets`` the MLM
head's boolean gather also syncs per micro-batch; with it, the head's shapes are fixed and it does not).

Checkpoints and config changes
------------------------------
A checkpoint is written at every epoch end, every ``checkpoint_every`` steps, and always when the
budget (``epochs`` or ``max_steps``) is reached, so a finished run always leaves one. They live in one
directory per *run config* (everything that determines the weights, see :func:`run_config`)::

    out_dir/checkpoints/<fingerprint[:16]>/run.json           the run config, for humans
    out_dir/checkpoints/<fingerprint[:16]>/step-XXXXXXXX/     the last KEEP_CHECKPOINTS of that config

A run resumes from the newest checkpoint of its own config that verifies (a corrupt or torn one is
reported and the previous one tried). Why per-config directories: the DVC stage reruns *because*
params changed (``dvc exp run -S model.n_encoders=6``), so a config change is the normal case, not an
accident; it must neither fail nor destroy the checkpoints of the config it replaces (going back to
the old params resumes or finds the old run finished). ``training.on_config_change`` decides what a
config without checkpoints of its own does when the out dir holds another config's checkpoints:

* ``restart`` (default): train from scratch; the differing keys are printed. DVC experiments work.
* ``error``: stop with :class:`RunConfigMismatchError` listing the differing keys (for a plain
  "resume my run" where a silent restart would waste days).

The run config includes the sha256 of the training code (:func:`training_code_sha256`), so an edit of
that code -- which is why DVC reruns the stage -- trains afresh too, instead of publishing the old code's
finished checkpoint.

``training.resume_from`` names a checkpoint explicitly (a ``step-*`` directory, or a directory of them,
e.g. copied from another machine); one written by a different run config is always an error listing
the differing keys (issue 7), except a difference in code alone, which is reported and resumed (the
way to continue an interrupted run after an upgrade). A newer checkpoint of the same config in ``out_dir`` wins over it, so a
crash after such a resume resumes from the crash point. The configs of the newest ``KEEP_RUNS``
directories are kept, older ones are deleted. Checkpoints of the flat layout before this one
(``checkpoints/step-*``) are moved into their config's directory.

Throughput and MFU count useful work
------------------------------------
``tokens_per_s`` counts real (non-pad) tokens. ``mfu`` (CUDA only) is nanoGPT's ``6N + 12·L·A·d_k·T``
on the *unshared* model (a shared block counted once per layer it runs in), applied to the real
tokens at their own sequence lengths (:func:`useful_mfu`); ``mfu_padded`` is the same formula over
every position the hardware computed, padding included. Their ratio is the padding overhead.

Fault injection (tests only)
----------------------------
``TWILBERT_FAULT`` makes the process SIGKILL itself at a chosen point, to test crash safety
(``tests/e2e/test_crash_resume.py``): ``kill_after_step:<n>`` right after optimizer step ``n``;
``kill_during_save:<n>[:<file>]`` during this process's ``n``-th checkpoint save (step checkpoints and
``final/`` count), while ``<file>`` (default ``model.safetensors``) is being written: its temp file is
complete but not renamed, the files before it are written, the rest and ``checksums.json`` are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from twilbert.config import ConfigError, to_dict
from twilbert.data.batching import IGNORE_INDEX, LengthBucketBatches, MaskedBatches, PlanSampler
from twilbert.data.shards import ShardDataset, ShardError, load_manifest
from twilbert.model.config import ModelConfig
from twilbert.model.twilbert import TWilBERT
from twilbert.text.tokenizer import Tokenizer, TokenizerError, tokenizer_file
from twilbert.train import distributed as D
from twilbert.train import checkpoint as _checkpoint_module
from twilbert.train.checkpoint import (
    CHECKSUMS_FILE,
    CONFIG_FILE,
    MODEL_FILE,
    PRETRAIN_META,
    TRAINER_FILE,
    CheckpointError,
    ConfigMismatchError,
    config_differences,
    load_checkpoint,
    load_trainer_state,
    read_config,
    read_pretrain_meta,
    save_checkpoint,
    verify_checkpoint,
)
from twilbert.train.config import ImplConfig, TrainingConfig, accum_share_problem
from twilbert.train.optim import build_optimizer, clip_grad_norm, param_groups
from twilbert.train.runtime import (
    H100_BF16_PEAK_FLOPS,
    autocast,
    autocast_dtype,
    enable_tf32,
    maybe_compile,
    mix_seed,
    set_num_threads,
)
from twilbert.train.schedules import build_schedule
from twilbert.utils import sha256_file as _sha256_file
from twilbert.utils import source_sha256

CHECKPOINTS_DIR = "checkpoints"
RUN_FILE = "run.json"  # in checkpoints/<fingerprint>/: the run config of that directory
FINAL_DIR = "final"
SUMMARY_FILE = "summary.json"
KEEP_CHECKPOINTS = 2  # per run config
STATUS_EVERY_S = 30.0  # status lines on stderr when there is no terminal for a progress bar
KEEP_RUNS = 3  # run-config directories kept under checkpoints/ (the current one included)
FAULT_ENV = "TWILBERT_FAULT"
_STEP_DIR = re.compile(r"^step-(\d{8})$")
_RUN_DIR = re.compile(r"^[0-9a-f]{16}$")

# Training keys that cannot change the trained weights: left out of the run fingerprint.
FINGERPRINT_EXCLUDED = ("log_every", "checkpoint_every", "max_bad_steps", "on_config_change", "resume_from")

# Model keys that may differ between `path_initial_weights` and the model being trained: they change
# training, not the weights' structure (masking, loss weights, dropout, init of fresh weights).
NON_ARCHITECTURE_KEYS = (
    "masked_lm",
    "rop.loss_weight",
    "input_dropout",
    "output_dropout",
    "attention_dropout",
    "initializer_range",
    "pkm_params.input_dropout",
    "pkm_params.output_dropout",
)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive optimizer steps with a NaN/inf loss or gradient norm."""


class RunConfigMismatchError(ConfigMismatchError):
    """A checkpoint to resume from was written by a different run config; ``differences`` lists
    ``(dotted key, in the checkpoint, in params)``."""

    def __init__(self, directory: Path, differences: list, hint: str = "") -> None:
        self.differences = differences
        lines = "\n".join(f"  {key}: checkpoint {stored!r}, params {expected!r}" for key, stored, expected in differences)
        message = f"{directory}: checkpoint of a different run config; {len(differences)} key(s) differ:\n{lines}"
        CheckpointError.__init__(self, message + (f"\n{hint}" if hint else ""))


@dataclass
class TrainState:
    """Where training is. Everything here goes into checkpoints (``extra``)."""

    step: int = 0  # optimizer steps done (skipped non-finite steps included)
    epoch: int = 0  # current epoch, 0-based
    cursor: int = 0  # micro-batches of `epoch` this rank has consumed (at an optimizer-step boundary)
    skipped_steps: int = 0
    consecutive_bad: int = 0
    sequences: int = 0  # global counts, over good steps
    tokens_real: int = 0
    tokens_padded: int = 0


# --------------------------------------------------------------------------------------------------
# helpers


def _say(message: str) -> None:
    if D.is_main():
        print(f"pretrain: {message}", file=sys.stderr, flush=True)




def training_code_sha256() -> str:
    """sha256 of the code this module runs (itself and every ``twilbert`` module it imports).

    Why in the run config: without it, a ``dvc repro`` after an edit of the training or model code
    reran this stage only to find the old code's *finished* checkpoint under the same params and
    publish it as ``final/`` -- stale weights under a fresh-looking stage. With it, new code is a new
    run config: it trains from scratch and the old code's checkpoints are kept, as for a params change.
    To continue a run under new code on purpose (a crash, then an upgrade), name its checkpoint in
    ``training.resume_from``: there a difference in code alone is reported, not refused."""
    return source_sha256(__name__)


def run_config(model_cfg: ModelConfig, training: TrainingConfig, world_size: int, shards_dir: Path, tokenizer_sha256: str) -> dict:
    """Everything that determines the trained weights (``impl`` excluded: speed only)."""
    train = {k: v for k, v in to_dict(training).items() if k not in FINGERPRINT_EXCLUDED}
    return {
        "model": to_dict(model_cfg),
        "training": train,
        "world_size": world_size,
        "shards_manifest_sha256": _sha256_file(Path(shards_dir) / "manifest.json"),
        "tokenizer_sha256": tokenizer_sha256,
        "code_sha256": training_code_sha256(),
    }


def fingerprint(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _drop_keys(tree: dict, dotted: tuple[str, ...]) -> dict:
    tree = json.loads(json.dumps(tree))
    for key in dotted:
        *parents, leaf = key.split(".")
        node = tree
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return tree


def load_initial_weights(model: nn.Module, directory: str | Path, model_cfg: ModelConfig, tokenizer_sha256: str | None = None) -> None:
    """Load weights from a checkpoint directory (``final/`` or a ``step-*`` dir) into ``model``.

    The stored config must match ``model_cfg`` on every architecture key; masking, loss weights,
    dropouts and the init range may differ. Raises :class:`ConfigMismatchError` listing the differing keys.
    ``tokenizer_sha256``: the vocabulary training will use; when the checkpoint's ``pretrain.json``
    records another, that is an error -- same-sized vocabularies pass the shape checks, but every
    embedding row would then stand for a different token (an imported BERT under a freshly trained
    vocabulary).
    """
    directory = Path(directory)
    stored = read_config(directory)
    diffs = config_differences(_drop_keys(stored, NON_ARCHITECTURE_KEYS), _drop_keys(to_dict(model_cfg), NON_ARCHITECTURE_KEYS))
    if diffs:
        raise ConfigMismatchError(directory, diffs)
    meta = read_pretrain_meta(directory)
    if tokenizer_sha256 is not None and meta:
        recorded = meta.get("tokenizer_sha256")
        if recorded is not None and recorded != tokenizer_sha256:
            raise ConfigError(
                f"training.path_initial_weights: {directory} was trained with another vocabulary (tokenizer sha256 "
                f"{recorded[:12]}, the vocab stage's is {tokenizer_sha256[:12]}): set vocab.pretrained: {directory} and "
                "rerun the vocab stage (`dvc repro -f -s vocab` after re-importing: DVC does not track the checkpoint's files)"
            )
        if recorded is None and meta.get("imported_from"):
            raise ConfigError(
                f"training.path_initial_weights: {directory} was imported ({meta['imported_from']}) without a tokenizer, so "
                "which token each embedding row stands for is unknown: import a checkpoint that ships its tokenizer"
            )
    load_checkpoint(directory, model)


def list_checkpoints(root: Path) -> list[Path]:
    """``step-XXXXXXXX`` directories directly under ``root`` (a run directory), oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def run_dir(root: Path, fingerprint_: str) -> Path:
    """``root/<fingerprint[:16]>``: the checkpoints of one run config."""
    return Path(root) / fingerprint_[:16]


def list_runs(root: Path) -> list[Path]:
    """Run-config directories under ``root``, least recently written first (directory mtime)."""
    if not Path(root).is_dir():
        return []
    runs = [p for p in Path(root).iterdir() if p.is_dir() and _RUN_DIR.match(p.name)]
    return sorted(runs, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _step_of(directory: Path) -> int:
    return int(_STEP_DIR.match(directory.name).group(1))


def _read_extra(directory: Path) -> dict:
    """The ``extra`` dict of a verified checkpoint, without restoring anything (memory-mapped read)."""
    verify_checkpoint(directory, (MODEL_FILE, CONFIG_FILE, TRAINER_FILE))
    try:
        state = torch.load(directory / TRAINER_FILE, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise CheckpointError(f"{directory / TRAINER_FILE}: unreadable: {exc}") from exc
    return state.get("extra") or {}


def newest_usable(directory: Path, *, quiet: bool = False) -> tuple[Path, dict] | None:
    """The newest ``step-*`` checkpoint in ``directory`` that verifies, with its ``extra``; a corrupt or
    torn one is reported (unless ``quiet``) and the previous one tried. None if there is none."""
    for ckpt in reversed(list_checkpoints(directory)):
        try:
            return ckpt, _read_extra(ckpt)
        except CheckpointError as exc:
            if not quiet:
                _say(f"checkpoint {ckpt.name} is unusable ({exc}); falling back to the previous one")
    return None


def _differences(stored: dict | None, expected: dict) -> list:
    """``config_differences`` of two run configs; a checkpoint without one differs as a whole."""
    return config_differences(stored, expected) if stored else [("run_config", "<not stored>", "<params>")]


def _stored_run_config(extra: dict) -> dict | None:
    return json.loads(extra["run_config"]) if extra.get("run_config") else None


def _listing(diffs: list) -> str:
    return "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diffs)


def migrate_flat_checkpoints(root: Path) -> None:
    """Move ``root/step-*`` checkpoints (the layout before per-config directories) into
    ``root/<fingerprint>/``; a torn one (no fingerprint readable) is deleted."""
    for ckpt in list_checkpoints(root):
        try:
            extra = _read_extra(ckpt)
        except CheckpointError:
            extra = {}
        fp = extra.get("fingerprint")
        if not fp:
            _say(f"removing {ckpt}: an unusable checkpoint of the flat layout")
            shutil.rmtree(ckpt, ignore_errors=True)
            continue
        target = run_dir(root, fp) / ckpt.name
        if target.exists():
            shutil.rmtree(ckpt, ignore_errors=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_run_file(target.parent, fp, _stored_run_config(extra))
            shutil.move(str(ckpt), str(target))


def _write_run_file(directory: Path, fingerprint_: str, config: dict | None) -> None:
    """``directory/run.json`` (once): the run config whose checkpoints the directory holds."""
    path = directory / RUN_FILE
    if not path.is_file():
        tmp = path.with_name(f".{RUN_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": fingerprint_, "run_config": config}, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)


def choose_resume_checkpoint(root: Path, expected: dict, *, resume_from: str | Path | None = None, on_config_change: str = "restart") -> Path | None:
    """The checkpoint to resume from, or None to train from scratch (see "Checkpoints and config changes").

    Raises :class:`RunConfigMismatchError` listing the differing keys when ``resume_from`` holds a
    checkpoint of another run config, or when ``on_config_change == "error"`` and ``root`` has
    checkpoints of other configs but none of this one.
    """
    root = Path(root)
    want = fingerprint(expected)
    migrate_flat_checkpoints(root)
    own = newest_usable(run_dir(root, want))
    if own is not None and own[1].get("fingerprint") != want:  # a directory copied by hand, or tampered with
        diffs = _differences(_stored_run_config(own[1]), expected)
        raise RunConfigMismatchError(own[0], diffs, "it sits in the directory of the params' run config")
    if resume_from:
        source = Path(resume_from)
        if _STEP_DIR.match(source.name):
            explicit = (source, _read_extra(source))  # an unusable explicit checkpoint is an error, not a fallback
        else:
            explicit = newest_usable(source)
            if explicit is None:
                raise CheckpointError(f"training.resume_from={str(source)!r}: no usable step-* checkpoint there")
        if explicit[1].get("fingerprint") != want:
            diffs = _differences(_stored_run_config(explicit[1]), expected)
            if [k for k, _, _ in diffs] != ["code_sha256"]:
                raise RunConfigMismatchError(explicit[0], diffs, "training.resume_from must name a checkpoint of the same run config")
            _say(f"training.resume_from={str(source)!r} was written by other training code (code_sha256 "
                 f"{str(diffs[0][1])[:12]} -> {str(diffs[0][2])[:12]}); resuming it under this code, as asked")
        if own is not None and _step_of(own[0]) >= _step_of(explicit[0]):
            _say(f"{own[0]} is newer than training.resume_from={str(source)!r}; resuming from it")
            return own[0]
        return explicit[0]
    if own is not None:
        return own[0]
    other = next((r for r in reversed(list_runs(root)) if r.name != want[:16] and list_checkpoints(r)), None)
    if other is not None:  # the most recently written other config (its run.json: no checkpoint hashing here)
        try:
            stored = json.loads((other / RUN_FILE).read_text())["run_config"]
        except (OSError, ValueError, KeyError):
            stored = None
        diffs = _differences(stored, expected)
        if on_config_change == "error":
            code_only = [k for k, _, _ in diffs] == ["code_sha256"]
            raise RunConfigMismatchError(
                other,
                diffs,
                "training.on_config_change is 'error': set it to 'restart' to train this config from scratch "
                "(the other config's checkpoints are kept), or restore the params"
                + (f"; only the code differs: to continue that run under this code, set training.resume_from={str(other)!r}" if code_only else ""),
            )
        _say(f"no checkpoint of this run config; the newest other one in {root} differs ({_listing(diffs)}); starting fresh, keeping it")
    return None


def prune_runs(root: Path, keep: Path) -> None:
    """Delete the run-config directories of ``root`` beyond the newest ``KEEP_RUNS`` (``keep`` stays)."""
    others = [r for r in list_runs(root) if r.name != keep.name]
    for old in others[: max(0, len(others) - (KEEP_RUNS - 1))]:
        _say(f"removing the checkpoints of an older run config: {old}")
        shutil.rmtree(old, ignore_errors=True)


def useful_mfu(
    model: TWilBERT,
    *,
    tokens: float,
    sum_sq_lengths: float,
    mlm_targets: float,
    seconds: float,
    world_size: int,
    peak_flops: float,
) -> float:
    """Model FLOPs utilisation per device of ``tokens`` processed in ``seconds`` (all ranks together).

    nanoGPT's per-token ``6 N + 12 L (A d_k) T`` (:meth:`TWilBERT.estimate_flops_per_token`: ``N`` counts
    a shared block once per layer it runs in, i.e. the unshared model). The attention term is per token
    at its own sequence's length, so over a set of sequences of lengths ``t_i`` it sums to
    ``12 L (A d_k) Σ t_i²``: ``T`` is the token-weighted mean length ``Σ t_i² / Σ t_i`` (exact). The MLM
    head runs at the targets only: its share is ``mlm_targets / tokens``. Pass real tokens and real
    lengths for useful work (``mfu``), or every computed position and the padded lengths (``mfu_padded``).
    (The tiny ROP head, once per sequence, is weighted by ``1 / T`` with this ``T``: a slight under-count.)
    """
    if tokens <= 0 or seconds <= 0:
        return math.nan
    seq_len = sum_sq_lengths / tokens
    per_token = model.estimate_flops_per_token(seq_len, mlm_fraction=mlm_targets / tokens)
    return per_token * tokens / seconds / world_size / peak_flops


@dataclass(frozen=True)
class Fault:
    """A test-only fault from ``TWILBERT_FAULT`` (see the module docstring, "Fault injection")."""

    kind: str  # kill_after_step | kill_during_save
    n: int
    file: str = MODEL_FILE

    @classmethod
    def from_env(cls) -> "Fault | None":
        spec = os.environ.get(FAULT_ENV, "").strip()
        if not spec:
            return None
        kind, _, rest = spec.partition(":")
        parts = rest.split(":")
        files = (MODEL_FILE, CONFIG_FILE, TRAINER_FILE, CHECKSUMS_FILE)
        ok = kind in ("kill_after_step", "kill_during_save") and parts[0].isdigit() and int(parts[0]) >= 1 and len(parts) <= 2
        ok = ok and (len(parts) == 1 or (kind == "kill_during_save" and parts[1] in files))
        if not ok:
            raise ValueError(f"{FAULT_ENV}={spec!r}: expected kill_after_step:<n> or kill_during_save:<n>[:<one of {', '.join(files)}>]")
        return cls(kind, int(parts[0]), parts[1] if len(parts) == 2 else MODEL_FILE)


def _die(why: str) -> None:
    print(f"pretrain: {FAULT_ENV}: SIGKILL {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def _killed_while_writing(name: str):
    """Within the block, the checkpoint writer SIGKILLs this process while file ``name`` is being
    written (temp file complete, not renamed). Wraps checkpoint.py's private ``_atomic_write``: a test
    hook only, and the crash test fails loudly if that function is renamed (the kill never happens)."""
    real = _checkpoint_module._atomic_write

    def write_then_die(path: Path, write: Callable[[Path], None]) -> None:
        if Path(path).name != name:
            return real(path, write)

        def partial(tmp: Path) -> None:
            write(tmp)
            _die(f"while writing {path}")

        return real(path, partial)

    _checkpoint_module._atomic_write = write_then_die
    try:
        yield
    finally:
        _checkpoint_module._atomic_write = real


# --------------------------------------------------------------------------------------------------
# the trainer


class Pretrainer:
    """One pre-training run; see the module docstring. ``pretrain()`` is the usual entry point."""

    def __init__(
        self,
        *,
        model_cfg: ModelConfig,
        training: TrainingConfig,
        impl: ImplConfig,
        shards_dir: str | Path,
        tokenizer_path: str | Path,
        out_dir: str | Path,
        log_fn: Callable[[dict, int], None] | None = None,
        progress: bool = True,
        peak_flops: float = H100_BF16_PEAK_FLOPS,
        normalize: dict | None = None,
    ) -> None:
        self.model_cfg, self.training, self.impl = model_cfg, training, impl
        self.normalize = normalize  # recorded in final/pretrain.json only (not in the run config)
        self.shards_dir, self.tokenizer_path, self.out_dir = Path(shards_dir), Path(tokenizer_path), Path(out_dir)
        if self.tokenizer_path.is_dir():  # models/vocab: the file in it (pretrain.json records the file)
            self.tokenizer_path = tokenizer_file(self.tokenizer_path)
        self.log_fn, self.progress = log_fn, progress
        self.peak_flops = peak_flops
        self.fault = Fault.from_env()  # tests only; None in real runs
        self._saves = 0  # checkpoint saves of this process (for the fault hook)
        self.state = TrainState()
        # Every logged row, saved in checkpoints and replayed on resume: a resumed run's curves and
        # final metrics are those of the whole run, not only of the part after the interruption.
        self.history: list[list] = []
        self.resumed_from: Path | None = None

    # ------------------------------------------------------------------ setup

    def setup(self) -> "Pretrainer":
        tr, impl, cfg = self.training, self.impl, self.model_cfg
        self.dist = D.init_distributed(impl.device)
        self.device = self.dist.device
        set_num_threads(impl.num_threads)
        enable_tf32()
        self.amp_dtype = autocast_dtype(impl.precision, self.device)

        # --- data ---------------------------------------------------------------------------------
        self.tokenizer = Tokenizer.from_file(self.tokenizer_path)
        manifest = load_manifest(self.shards_dir)
        if manifest["tokenizer_sha256"] != self.tokenizer.sha256:
            raise TokenizerError(
                f"{self.shards_dir}: shards were built with tokenizer {manifest['tokenizer_sha256'][:12]}, "
                f"but {self.tokenizer_path} is {self.tokenizer.sha256[:12]}: rebuild the pairs stage"
            )
        if cfg.vocab_size != self.tokenizer.vocab_size:
            raise TokenizerError(f"model.vocab_size is {cfg.vocab_size} but the tokenizer has {self.tokenizer.vocab_size} pieces")
        train = ShardDataset(self.shards_dir, "train")
        if len(train) == 0:
            raise ShardError(f"{self.shards_dir}: the train split is empty")
        if cfg.max_positions is not None and int(train.lengths.max()) > cfg.max_positions:
            raise ShardError(f"{self.shards_dir}: the longest train row has {int(train.lengths.max())} tokens > model.max_positions={cfg.max_positions}")
        W, rank = self.dist.world_size, self.dist.rank
        # training.accum_iters counts the micro-batches of one update over *all* processes, so an
        # update is batch_size x accum_iters sequences however many GPUs run it, and the same params
        # train the same model on 1 or W processes (the equivalence in the module docstring). The
        # original's n_gpus (Keras multi_gpu_model) also kept the update size; a per-process count
        # would make `-S training.n_gpus=8` silently train with 8x larger updates.
        unshared = accum_share_problem(tr, W)
        if unshared:
            raise ConfigError(f"training.accum_iters: {unshared}")
        self.accum = tr.accum_iters // W  # this process's micro-batches per update
        self.plan = LengthBucketBatches(train.lengths, tr.batch_size, tr.bucket_width, tr.seed, world_size=W, rank=rank)
        self.batches = MaskedBatches(
            self.shards_dir,
            cfg.masked_lm,
            cfg.vocab_size,
            tr.seed,
            word_start_table=self.tokenizer.word_start_table() if cfg.masked_lm.type == "word" else None,
            use_rop=cfg.rop.use_rop,
            max_positions=cfg.max_positions,
        )
        self.steps_per_epoch = math.ceil(len(self.plan) / self.accum)
        self.total_steps = tr.max_steps if tr.max_steps > 0 else tr.epochs * self.steps_per_epoch

        # --- model, optimizer, schedule -----------------------------------------------------------
        self.run_config = run_config(cfg, tr, W, self.shards_dir, self.tokenizer.sha256)
        self.fingerprint = fingerprint(self.run_config)
        self.checkpoints_root = self.out_dir / CHECKPOINTS_DIR
        self.run_dir = run_dir(self.checkpoints_root, self.fingerprint)
        if self.dist.is_main:
            self.checkpoints_root.mkdir(parents=True, exist_ok=True)  # a DVC out: exists whatever happens next
        torch.manual_seed(tr.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
        self.raw_model = TWilBERT(cfg, attention=impl.attention)
        resume = self._choose_resume()
        if resume is None and tr.path_initial_weights:
            load_initial_weights(self.raw_model, tr.path_initial_weights, cfg, self.tokenizer.sha256)
            _say(f"initial weights from {tr.path_initial_weights}")
        self.raw_model.to(self.device)
        fused = {"fused": True} if self.device.type == "cuda" and tr.optimizer in ("adam", "adamw") else {}
        self.optimizer = build_optimizer(
            tr.optimizer,
            param_groups(self.raw_model, tr.weight_decay),
            lr=tr.lr,
            betas=tr.betas,
            eps=tr.eps,
            weight_decay=tr.weight_decay,
            **fused,
        )
        self.scheduler = build_schedule(
            tr.schedule,
            self.optimizer,
            warmup_steps=tr.warmup_steps,
            total_steps=max(self.total_steps, tr.warmup_steps, 1),
            hidden_size=cfg.hidden_size,
            scale=tr.lr,  # noam: TrainingConfig.lr multiplies the Noam formula
        )
        torch.manual_seed(mix_seed(tr.seed, rank, 1))  # dropout stream, one per rank
        if resume is not None:
            self._load(resume)
        self.ddp = None
        model: nn.Module = self.raw_model
        if self.dist.is_distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)
            model = self.ddp
        self.model = maybe_compile(model, impl.compile)
        self.report_mfu = self.device.type == "cuda"  # MFU against a GPU peak means nothing on a CPU
        self._reset_log()
        return self

    def _choose_resume(self) -> Path | None:
        """Rank 0 chooses (and may raise); the choice, or the error, reaches every rank."""
        tr = self.training
        choice: list = [None, None]  # path, error message
        error: Exception | None = None
        if self.dist.is_main:
            try:
                found = choose_resume_checkpoint(
                    self.checkpoints_root, self.run_config, resume_from=tr.resume_from, on_config_change=tr.on_config_change
                )
                choice[0] = str(found) if found is not None else None
            except CheckpointError as exc:
                error, choice[1] = exc, str(exc)
        if D.is_initialized():
            torch.distributed.broadcast_object_list(choice, src=0)
        if error is not None:
            raise error
        if choice[1] is not None:
            raise CheckpointError(choice[1])
        return Path(choice[0]) if choice[0] is not None else None

    def _load(self, directory: Path) -> None:
        load_checkpoint(directory, self.raw_model, to_dict(self.model_cfg))
        extra = load_trainer_state(directory, self.optimizer, self.scheduler, restore_rng=True)
        self.state = TrainState(**json.loads(extra["state"]))
        states = extra.get("rng_per_rank") or []
        if len(states) == self.dist.world_size:
            mine = states[self.dist.rank]
            torch.set_rng_state(mine["torch"])
            if mine.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)
        self.history = json.loads(extra.get("history", "[]"))
        if self.log_fn is not None and self.dist.is_main:
            for step, metrics in self.history:  # the new MLflow run and curves file get the whole run
                self.log_fn(metrics, step)
        self.resumed_from = directory
        _say(f"resuming from {directory} (step {self.state.step}, epoch {self.state.epoch}, batch {self.state.cursor})")

    # ------------------------------------------------------------------ data

    def loader(self, epoch: int, start_batch: int = 0) -> torch.utils.data.DataLoader:
        """This rank's masked micro-batches of ``epoch`` from ``start_batch`` on."""
        workers = self.impl.num_workers
        return torch.utils.data.DataLoader(
            self.batches,
            sampler=PlanSampler(self.plan, epoch, start_batch),
            batch_size=None,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers > 0 else None,
            # its own generator: making an iterator draws a worker base seed, which would otherwise
            # consume the global RNG (the dropout stream) and break bit-exact resumption
            generator=torch.Generator().manual_seed(mix_seed(self.training.seed, epoch, start_batch)),
        )

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    # ------------------------------------------------------------------ one optimizer step

    def train_step(self, micro_batches: list[dict]) -> bool:
        """One optimizer step over ``micro_batches`` (this rank's share); returns False if it was skipped.

        Loss normalisation: see the module docstring.
        """
        cfg = self.model_cfg
        W = self.dist.world_size
        counts = [sum(mb["n_targets"] for mb in micro_batches), sum(mb["n_rop"] for mb in micro_batches)]
        if D.is_initialized():
            t = torch.tensor(counts, dtype=torch.float32).pin_memory() if self.device.type == "cuda" else torch.tensor(counts, dtype=torch.float32)
            t = D.all_reduce_sum(t.to(self.device, non_blocking=True))
            den_mlm, den_rop = t[0].clamp(min=1.0), t[1].clamp(min=1.0)
        else:
            den_mlm, den_rop = float(max(counts[0], 1)), float(max(counts[1], 1))
        use_rop = cfg.rop.use_rop
        stats = torch.zeros(6, dtype=torch.float64, device=self.device)  # mlm ce, n, correct; rop ce, n, correct
        step_loss = torch.zeros((), dtype=torch.float32, device=self.device)
        self.model.train()
        for i, mb in enumerate(micro_batches):
            b = self._to_device(mb)
            last = i == len(micro_batches) - 1
            sync = contextlib.nullcontext() if (self.ddp is None or last) else self.ddp.no_sync()
            with sync:
                with autocast(self.device, self.amp_dtype):
                    mask = b["attention_mask"] if mb["n_real"] < mb["n_padded"] else None  # no mask: faster SDPA
                    # mlm_slots (masked_lm.static_targets): a fixed row count per batch shape, -100 filler rows
                    out = self.model(b["input_ids"], b["token_type_ids"], mask, b["mlm_labels"], mlm_slots=mb.get("mlm_slots"))
                mlm_ce = F.cross_entropy(out.mlm_logits.float(), out.mlm_targets, ignore_index=IGNORE_INDEX, reduction="sum")  # only targets
                loss = cfg.masked_lm.loss_weight * mlm_ce / den_mlm
                if use_rop:
                    rop_ce = F.cross_entropy(out.rop_logits.float(), b["rop_labels"], ignore_index=IGNORE_INDEX, reduction="sum")
                    loss = loss + cfg.rop.loss_weight * rop_ce / den_rop
                (loss * W).backward()  # W: DDP averages gradients over ranks; we want their sum
            with torch.no_grad():
                step_loss += loss.detach()
                stats[0] += mlm_ce.detach()
                stats[1] += (out.mlm_targets != IGNORE_INDEX).sum()  # real targets (slots add filler rows)
                stats[2] += (out.mlm_logits.argmax(-1) == out.mlm_targets).sum()  # filler rows (-100) never match
                if use_rop:
                    valid = b["rop_labels"] != IGNORE_INDEX  # (B,)
                    stats[3] += rop_ce.detach()
                    stats[4] += valid.sum()
                    stats[5] += ((out.rop_logits.argmax(-1) == b["rop_labels"]) & valid).sum()

        grad_norm = clip_grad_norm(self.raw_model.parameters(), self.training.clip_grad_norm)
        bad = (~torch.isfinite(step_loss) | ~torch.isfinite(grad_norm.to(step_loss.device))).float()
        bad = D.all_reduce_sum(bad)  # every rank must take the same decision
        skipped = bool(bad.item() > 0)  # the one host sync per step
        lr = self.scheduler.get_last_lr()[0]
        if not skipped:
            self.optimizer.step()
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()" after a skipped step
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

        st = self.state
        st.step += 1
        if skipped:
            st.skipped_steps += 1
            st.consecutive_bad += 1
            _say(f"step {st.step}: non-finite loss or gradient norm; step skipped ({st.consecutive_bad} in a row)")
            if st.consecutive_bad >= self.training.max_bad_steps:
                last = list_checkpoints(self.run_dir)
                raise NonFiniteLossError(
                    f"{st.consecutive_bad} consecutive optimizer steps had a NaN/inf loss or gradient norm (step {st.step}); "
                    "lower training.lr, set training.clip_grad_norm, or try impl.precision=fp32 "
                    f"(training.max_bad_steps={self.training.max_bad_steps}). Last checkpoint: {last[-1] if last else 'none'}"
                )
            return False
        st.consecutive_bad = 0
        host = torch.tensor(self._host_counts(micro_batches), dtype=torch.float64)
        self._log_stats += stats
        self._log_gn += grad_norm.detach().to(self._log_gn.device, torch.float64)
        self._log_steps += 1
        self._log_host += host
        self._pending_counts += host[:3]
        self._last_lr = lr
        return True

    @staticmethod
    def _host_counts(micro_batches: list[dict]) -> list[float]:
        """This rank's ``[sequences, real tokens, padded tokens, Σ real length², Σ padded length², MLM
        targets]`` of one step (host-side: the masks are CPU tensors here); the squares feed MFU."""
        real_len = [mb["attention_mask"].sum(1, dtype=torch.float64) for mb in micro_batches]  # (B,) each
        return [
            sum(mb["input_ids"].shape[0] for mb in micro_batches),
            sum(mb["n_real"] for mb in micro_batches),
            sum(mb["n_padded"] for mb in micro_batches),
            float(sum((t * t).sum() for t in real_len)),
            float(sum(mb["n_padded"] * mb["input_ids"].shape[1] for mb in micro_batches)),  # B·T² per batch
            sum(mb["n_targets"] for mb in micro_batches),
        ]

    # ------------------------------------------------------------------ logging

    def _reset_log(self) -> None:
        self._log_stats = torch.zeros(6, dtype=torch.float64, device=self.device)  # see train_step
        self._log_gn = torch.zeros((), dtype=torch.float64, device=self.device)
        self._log_steps = 0  # good steps in the interval (the same on every rank)
        self._log_host = torch.zeros(6, dtype=torch.float64)  # see _host_counts (this rank)
        self._log_t0 = time.perf_counter()
        self._last_lr = float("nan")
        if not hasattr(self, "_pending_counts"):
            self._pending_counts = torch.zeros(3, dtype=torch.float64)  # not yet added to self.state

    def _reduce(self, *parts: torch.Tensor) -> list[float]:
        """Sum ``parts`` over ranks in one collective (and one host sync); host floats."""
        vec = torch.cat([p.to(self.device, torch.float64).reshape(-1) for p in parts])
        return D.all_reduce_sum(vec).tolist()

    def _add_counts(self, counts: list[float]) -> None:
        st = self.state
        st.sequences += int(counts[0])
        st.tokens_real += int(counts[1])
        st.tokens_padded += int(counts[2])
        self._pending_counts.zero_()

    def sync_counts(self) -> None:
        """Add every rank's not-yet-counted sequences/tokens to the state (before a checkpoint or the end)."""
        self._add_counts(self._reduce(self._pending_counts))

    def _flush_log(self) -> dict | None:
        """Reduce the interval's sums (one sync), call ``log_fn`` on rank 0, reset. None if nothing ran."""
        W = self.dist.world_size
        steps = self._log_steps
        vec = self._reduce(self._log_stats, self._log_host, self._pending_counts)
        gn = float(self._log_gn)
        dt = max(time.perf_counter() - self._log_t0, 1e-9)
        mlm_ce, mlm_n, mlm_ok, rop_ce, rop_n, rop_ok, seqs, real, padded, real_sq, padded_sq, targets = vec[:12]
        self._add_counts(vec[12:])
        lr = self._last_lr
        self._reset_log()
        if steps == 0:
            return None
        st = self.state
        nan = math.nan
        mlm_loss = mlm_ce / mlm_n if mlm_n else nan
        rop_loss = rop_ce / rop_n if rop_n else nan
        w_m, w_r = self.model_cfg.masked_lm.loss_weight, self.model_cfg.rop.loss_weight
        metrics = {
            "epoch": st.epoch + st.cursor / len(self.plan),
            "loss": w_m * mlm_loss + (w_r * rop_loss if rop_n else 0.0),
            "mlm_loss": mlm_loss,
            "rop_loss": rop_loss,
            "mlm_accuracy": mlm_ok / mlm_n if mlm_n else nan,
            "rop_accuracy": rop_ok / rop_n if rop_n else nan,
            "lr": lr,
            "grad_norm": gn / steps,
            "tokens_per_s": real / dt,  # real (non-pad) tokens, all ranks
            "padded_tokens_per_s": padded / dt,
            "padding_waste": 1.0 - real / padded if padded else nan,
            "skipped_steps": st.skipped_steps,
        }
        if self.report_mfu and seqs:  # see useful_mfu: real tokens for `mfu`, every computed position for `mfu_padded`
            common = dict(mlm_targets=targets, seconds=dt, world_size=W, peak_flops=self.peak_flops)
            metrics["mfu"] = useful_mfu(self.raw_model, tokens=real, sum_sq_lengths=real_sq, **common)
            metrics["mfu_padded"] = useful_mfu(self.raw_model, tokens=padded, sum_sq_lengths=padded_sq, **common)
        self.history.append([st.step, metrics])
        if self.log_fn is not None and self.dist.is_main:
            self.log_fn(metrics, st.step)
        return metrics

    # ------------------------------------------------------------------ checkpoints

    def _rng_states(self) -> list:
        mine = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return D.all_gather_objects(mine)

    def _weights_finite(self) -> bool:
        flags = [torch.isfinite(p).all() for p in self.raw_model.parameters()]
        return bool(torch.stack(flags).all())

    def _save(self, directory: Path, *args, **kwargs) -> None:
        """``save_checkpoint``, counted, with the test-only ``kill_during_save`` fault applied."""
        self._saves += 1
        f = self.fault
        hook = _killed_while_writing(f.file) if f and f.kind == "kill_during_save" and f.n == self._saves else contextlib.nullcontext()
        with hook:
            save_checkpoint(directory, *args, **kwargs)

    def save_step_checkpoint(self) -> Path:
        """``checkpoints/<fingerprint>/step-XXXXXXXX`` (rank 0 writes; all ranks take part), keeping the
        last ``KEEP_CHECKPOINTS`` of this config and the newest ``KEEP_RUNS`` configs."""
        self.sync_counts()
        rng = self._rng_states()
        directory = self.run_dir / f"step-{self.state.step:08d}"
        if self.dist.is_main:
            if not self._weights_finite():  # cannot happen with the guard; refuse rather than save NaN
                raise NonFiniteLossError(f"refusing to save non-finite weights at step {self.state.step}")
            extra = {
                "state": json.dumps(asdict(self.state)),
                "fingerprint": self.fingerprint,
                "run_config": json.dumps(self.run_config, sort_keys=True),
                "rng_per_rank": rng,
                "history": json.dumps(self.history),
            }
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _write_run_file(self.run_dir, self.fingerprint, self.run_config)
            self._save(directory, self.raw_model, to_dict(self.model_cfg), optimizer=self.optimizer, scheduler=self.scheduler, extra=extra)
            for old in list_checkpoints(self.run_dir)[:-KEEP_CHECKPOINTS]:
                shutil.rmtree(old, ignore_errors=True)
            prune_runs(self.checkpoints_root, self.run_dir)
        D.barrier()
        return directory

    def save_final(self) -> Path:
        """``final/``: weights + model config (loadable by ``load_checkpoint``) and ``pretrain.json``."""
        directory = self.out_dir / FINAL_DIR
        if self.dist.is_main:
            if not self._weights_finite():
                raise NonFiniteLossError("refusing to save non-finite final weights")
            self._save(directory, self.raw_model, to_dict(self.model_cfg), rng=False)
            meta = {
                "tokenizer_path": str(self.tokenizer_path),
                "tokenizer_sha256": self.tokenizer.sha256,
                "step": self.state.step,
                "epochs": self.state.epoch + self.state.cursor / len(self.plan),
                "fingerprint": self.fingerprint,
                "run_config": self.run_config,
            }
            if self.normalize is not None:
                meta["normalize"] = self.normalize
            (directory / PRETRAIN_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        D.barrier()
        return directory

    # ------------------------------------------------------------------ the loop

    def _budget_reached(self) -> bool:
        st, tr = self.state, self.training
        return st.step >= tr.max_steps if tr.max_steps > 0 else st.epoch >= tr.epochs

    def run(self, stop_after_steps: int | None = None) -> dict:
        """Train until the budget (``epochs`` or ``max_steps``) is spent, or for ``stop_after_steps``
        optimizer steps in this call (then a checkpoint is saved and the summary has ``stopped``)."""
        from tqdm import tqdm

        tr, st = self.training, self.state
        start_step, t0 = st.step, time.perf_counter()
        tokens0 = st.tokens_real
        show = self.progress and self.dist.is_main and sys.stderr.isatty()
        bar = tqdm(total=self.total_steps, initial=st.step, unit="step", desc="pretrain", disable=not show, dynamic_ncols=True)
        # Without a terminal (nohup, CI, a cluster job's log) the bar is off: a status line at most every
        # STATUS_EVERY_S seconds tells the log reader the run is alive and how far it is.
        plain = self.progress and self.dist.is_main and not show
        last_status = time.perf_counter()
        batches = None
        stopped, last_metrics, saved_at = False, (self.history[-1][1] if self.history else {}), -1
        with bar:
            while not self._budget_reached():
                if stop_after_steps is not None and st.step - start_step >= stop_after_steps:
                    stopped = True
                    break
                if batches is None:
                    batches = iter(self.loader(st.epoch, st.cursor))
                k = min(self.accum, len(self.plan) - st.cursor)
                micro = [next(batches) for _ in range(k)]
                self.train_step(micro)
                if self.fault and self.fault.kind == "kill_after_step" and st.step == self.fault.n:
                    _die(f"after step {st.step}")
                st.cursor += k
                epoch_end = st.cursor == len(self.plan)
                if epoch_end:
                    st.epoch, st.cursor, batches = st.epoch + 1, 0, None
                bar.update(1)
                done = self._budget_reached()
                if st.step % tr.log_every == 0 or done:
                    metrics = self._flush_log()
                    if metrics:
                        last_metrics = metrics
                        bar.set_postfix(loss=f"{metrics['loss']:.4f}", tok_s=f"{metrics['tokens_per_s']:.0f}")
                        if plain and (time.perf_counter() - last_status >= STATUS_EVERY_S or done):
                            last_status = time.perf_counter()
                            _say(f"step {st.step}/{self.total_steps} (epoch {st.epoch}): loss {metrics['loss']:.4f}, "
                                 f"mlm_accuracy {metrics.get('mlm_accuracy', math.nan):.4f}, {metrics['tokens_per_s']:.0f} real tokens/s")
                # `done` too: a budget that ends before an epoch end and a checkpoint_every multiple must
                # still leave a checkpoint (to resume a finished run, and for the DVC out to exist).
                if epoch_end or done or (tr.checkpoint_every and st.step % tr.checkpoint_every == 0):
                    self.save_step_checkpoint()
                    saved_at = st.step
            if self._log_steps > 0:
                last_metrics = self._flush_log() or last_metrics
            self.sync_counts()
            if stopped and saved_at != st.step and st.step > start_step:
                self.save_step_checkpoint()
        final_dir = None if stopped else self.save_final()
        wall = time.perf_counter() - t0
        summary = {
            "steps": st.step,
            "epochs": st.epoch + st.cursor / len(self.plan),
            "steps_per_epoch": self.steps_per_epoch,
            "stopped": stopped,
            "skipped_steps": st.skipped_steps,
            "sequences": st.sequences,
            "tokens_real": st.tokens_real,
            "tokens_padded": st.tokens_padded,
            "padding_waste": 1.0 - st.tokens_real / st.tokens_padded if st.tokens_padded else math.nan,
            "wall_s": wall,
            # Throughput of this call; a call that resumed a finished run reports the run's last figure.
            "tokens_per_s": (st.tokens_real - tokens0) / wall if st.tokens_real > tokens0 else last_metrics.get("tokens_per_s", math.nan),
            "world_size": self.dist.world_size,
            "device": str(self.device),
            "precision": str(self.amp_dtype or torch.float32).removeprefix("torch."),
            "num_parameters": self.raw_model.num_parameters(),
            "resumed_from_step": _step_of(self.resumed_from) if self.resumed_from else 0,
            "fingerprint": self.fingerprint,
            "tokenizer_sha256": self.tokenizer.sha256,
            "final_dir": str(final_dir) if final_dir else "",
            **{k: v for k, v in last_metrics.items() if k in ("loss", "mlm_loss", "rop_loss", "mlm_accuracy", "rop_accuracy", "grad_norm", "mfu")},
        }
        # NaN (a head without labels, nothing trained in this call) -> None: valid JSON for DVC metrics
        summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in summary.items()}
        if self.dist.is_main:
            path = self.out_dir / SUMMARY_FILE
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
            tmp.replace(path)
        return summary


def pretrain(
    *,
    model_cfg: ModelConfig,
    training: TrainingConfig,
    impl: ImplConfig,
    shards_dir: Path,
    tokenizer_path: Path,
    out_dir: Path,
    log_fn: Callable[[dict, int], None] | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    peak_flops: float = H100_BF16_PEAK_FLOPS,
    normalize: dict | None = None,
) -> dict:
    """Pre-train (or resume pre-training) into ``out_dir``; returns the flat summary (also ``summary.json``).

    ``out_dir`` gets ``checkpoints/<fingerprint>/step-XXXXXXXX/`` (every epoch end, every
    ``checkpoint_every`` steps and at the end of the budget; the last two are kept, see "Checkpoints and
    config changes" in the module docstring), ``final/`` (``model.safetensors``, ``config.json`` = the resolved
    model config, ``pretrain.json`` = tokenizer path/sha256, steps, run fingerprint) and ``summary.json``.
    Under ``torchrun`` it joins the process group (DDP). ``log_fn(metrics, step)`` is called on rank 0
    every ``log_every`` optimizer steps. ``normalize``: the normalisation rules the corpus went through
    (``to_dict(EffectiveRules)``), recorded in ``pretrain.json`` so that ``twilbert embed`` and
    ``twilbert.load`` normalise new text as the model saw it, whatever params.yaml says later.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    trainer = Pretrainer(
        model_cfg=model_cfg,
        training=training,
        impl=impl,
        shards_dir=shards_dir,
        tokenizer_path=tokenizer_path,
        out_dir=out_dir,
        log_fn=log_fn,
        progress=progress,
        peak_flops=peak_flops,
        normalize=normalize,
    )
    owns_group = not D.is_initialized()
    try:
        trainer.setup()
        return trainer.run(stop_after_steps=stop_after_steps)
    finally:
        if owns_group:
            D.cleanup()  # leave no process group behind (torchrun workers exit right after)


__all__ = [
    "Fault",
    "NonFiniteLossError",
    "Pretrainer",
    "RunConfigMismatchError",
    "TrainState",
    "choose_resume_checkpoint",
    "fingerprint",
    "list_checkpoints",
    "list_runs",
    "load_initial_weights",
    "migrate_flat_checkpoints",
    "newest_usable",
    "pretrain",
    "prune_runs",
    "run_config",
    "run_dir",
    "useful_mfu",
]

"""Pre-training's data side: the tokenizer/shards checks, the length-bucketed plan, the masked batches
and the per-epoch loader.

The plan and the masks are pure functions of ``(seed, epoch, plan position)``, so a checkpoint stores
only where it was (epoch, micro-batch cursor) and resumption is exact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from twilbert.config import ConfigError
from twilbert.data.batching import LengthBucketBatches, MaskedBatches, PlanSampler
from twilbert.data.shards import ShardDataset, ShardError, load_manifest
from twilbert.model.config import ModelConfig
from twilbert.text.tokenizer import Tokenizer, TokenizerError
from twilbert.train.config import TrainingConfig, accum_share_problem
from twilbert.train.runtime import mix_seed


class PretrainData:
    """This rank's view of the train split: ``plan`` (micro-batches per epoch), ``batches`` (masked
    micro-batches by plan position), ``accum`` (this rank's micro-batches per update)."""

    def __init__(self, shards_dir: Path, tokenizer_path: Path, cfg: ModelConfig, tr: TrainingConfig, world_size: int, rank: int) -> None:
        self.shards_dir, self.seed = Path(shards_dir), tr.seed
        self.tokenizer = Tokenizer.from_file(tokenizer_path)
        manifest = load_manifest(self.shards_dir)
        if manifest["tokenizer_sha256"] != self.tokenizer.sha256:
            raise TokenizerError(
                f"{self.shards_dir}: shards were built with tokenizer {manifest['tokenizer_sha256'][:12]}, "
                f"but {tokenizer_path} is {self.tokenizer.sha256[:12]}: rebuild the pairs stage"
            )
        if cfg.vocab_size != self.tokenizer.vocab_size:
            raise TokenizerError(f"model.vocab_size is {cfg.vocab_size} but the tokenizer has {self.tokenizer.vocab_size} pieces")
        train = ShardDataset(self.shards_dir, "train")
        if len(train) == 0:
            raise ShardError(f"{self.shards_dir}: the train split is empty")
        if cfg.max_positions is not None and int(train.lengths.max()) > cfg.max_positions:
            raise ShardError(f"{self.shards_dir}: the longest train row has {int(train.lengths.max())} tokens > model.max_positions={cfg.max_positions}")
        # training.accum_iters counts the micro-batches of one update over *all* processes, so an update
        # is batch_size x accum_iters sequences however many GPUs run it, and the same params train the
        # same model on 1 or W processes (docs/pretraining.md). A per-process count would make
        # `-S impl.n_gpus=8` silently train with 8x larger updates.
        unshared = accum_share_problem(tr, world_size)
        if unshared:
            raise ConfigError(f"training.accum_iters: {unshared}")
        self.accum = tr.accum_iters // world_size
        self.plan = LengthBucketBatches(train.lengths, tr.batch_size, tr.bucket_width, tr.seed, world_size=world_size, rank=rank)
        self.batches = MaskedBatches(
            self.shards_dir,
            cfg.masked_lm,
            cfg.vocab_size,
            tr.seed,
            word_start_table=self.tokenizer.word_start_table() if cfg.masked_lm.type == "word" else None,
            use_rop=cfg.rop.use_rop,
            max_positions=cfg.max_positions,
        )

    def loader(self, epoch: int, start_batch: int, *, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
        """This rank's masked micro-batches of ``epoch`` from ``start_batch`` on."""
        return torch.utils.data.DataLoader(
            self.batches,
            sampler=PlanSampler(self.plan, epoch, start_batch),
            batch_size=None,
            num_workers=num_workers,
            pin_memory=pin_memory,
            prefetch_factor=4 if num_workers > 0 else None,
            # its own generator: making an iterator draws a worker base seed, which would otherwise
            # consume the global RNG (the dropout stream) and break bit-exact resumption
            generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch, start_batch)),
        )


__all__ = ["PretrainData"]

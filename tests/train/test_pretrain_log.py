"""Pre-training's logged row: the total loss from the objectives' named sums, NaN columns for a
disabled objective, throughput over real tokens; the summary's NaN -> None."""

from __future__ import annotations

import math

import torch

from twilbert.model.config import ModelConfig, ROPConfig
from twilbert.train.objectives import MLMStats, ROPStats, pretraining_objectives
from twilbert.train.pretrain_log import HOST_COUNTS, Interval, finite_or_none, host_counts, interval_metrics


def interval(sums: dict) -> Interval:
    counts = dict(zip(HOST_COUNTS, [4.0, 30.0, 40.0, 250.0, 400.0, 6.0]))
    return Interval(sums, counts, [0.0, 0.0, 0.0], grad_norm_sum=3.0, steps=2, seconds=2.0, lr=1e-3)


def test_total_loss_is_the_weighted_sum_and_an_objective_without_rows_is_left_out():
    objs = pretraining_objectives(ModelConfig(rop=ROPConfig(loss_weight=2.0)))
    m = interval_metrics(objs, interval({"mlm": MLMStats(12.0, 6.0, 3.0), "rop": ROPStats(3.0, 4.0, 2.0)}))
    assert m["loss"] == 12.0 / 6 + 2.0 * 3.0 / 4 and m["mlm_accuracy"] == 0.5 and m["rop_accuracy"] == 0.5
    assert m["grad_norm"] == 1.5 and m["tokens_per_s"] == 15.0 and m["padding_waste"] == 0.25
    no_rop_rows = interval_metrics(objs, interval({"mlm": MLMStats(12.0, 6.0, 3.0), "rop": ROPStats(0.0, 0.0, 0.0)}))
    assert no_rop_rows["loss"] == 2.0 and math.isnan(no_rop_rows["rop_loss"])


def test_a_disabled_objective_keeps_its_columns_as_nan():
    objs = pretraining_objectives(ModelConfig(rop=ROPConfig(use_rop=False)))
    m = interval_metrics(objs, interval({"mlm": MLMStats(12.0, 6.0, 3.0)}))
    assert math.isnan(m["rop_loss"]) and math.isnan(m["rop_accuracy"]) and m["loss"] == 2.0


def test_host_counts_and_summary_json():
    mb = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
          "n_real": 5, "n_padded": 8, "n_targets": 2}
    assert host_counts([mb, mb]) == [4, 10, 16, 2 * (9 + 4), 2 * 8 * 4, 4]
    assert finite_or_none({"a": math.nan, "b": 1.0, "c": "x"}) == {"a": None, "b": 1.0, "c": "x"}

"""Hugging Face ``transformers`` interop: BERT, ALBERT, RoBERTa and XLM-R checkpoints in and out.

Every conversion is exact or refused with every reason: hidden states (and MLM logits, when a head is
carried) agree within float rounding on a probe batch at every export and import. Where transformers
and TWilBERT differ, the ``export`` and ``import_`` docstrings say so (and link docs/deviations.md).
Needs the ``hf`` extra; ``transformers`` is imported only when a conversion runs.

Modules, in the order a conversion uses them:

* ``weights``: one :class:`~twilbert.hf.weights.Family` per transformers family (BERT, ALBERT, RoBERTa,
  XLM-R): weight names in both directions and the config translation. A new family is an entry there
  plus its rules.
* ``tokenizer``: our SentencePiece model as ``tokenizer.json``; a checkpoint's own tokenizer renumbered
  to our special ids, and the ``normalize.rules`` it expects.
* ``normalizers``: our tweet rules as ``tokenizers`` normalizers (an exported tokenizer takes raw tweets).
* ``probe``: the parity probes.
* ``export`` (``export-hf``) and ``import_`` (``import-hf``), each with its refusal rules; ``classifier``
  (``export-hf`` of a fine-tuned model: ``*ForSequenceClassification``) and its ``model_card``.
"""

from twilbert.hf.common import HFInteropError
from twilbert.hf.classifier import export_sequence_classifier
from twilbert.hf.export import export_family, export_hf, export_problems, lineage, mlm_head_exportable, to_hf_model, verify_export
from twilbert.hf.import_ import import_hf, import_problems
from twilbert.hf.probe import hidden_state_difference, mlm_logit_difference
from twilbert.hf.tokenizer import (
    build_hf_tokenizer,
    check_renumbered,
    pretrained_tokenizer_path,
    renumber_tokenizer,
    save_hf_tokenizer,
    suggested_rules,
)
from twilbert.hf.weights import from_hf_state_dict, hf_config_dict, model_config_from_hf, to_hf_state_dict

__all__ = [
    "HFInteropError",
    "build_hf_tokenizer",
    "check_renumbered",
    "export_family",
    "export_hf",
    "export_problems",
    "export_sequence_classifier",
    "from_hf_state_dict",
    "hf_config_dict",
    "hidden_state_difference",
    "import_hf",
    "import_problems",
    "lineage",
    "mlm_head_exportable",
    "mlm_logit_difference",
    "model_config_from_hf",
    "pretrained_tokenizer_path",
    "renumber_tokenizer",
    "save_hf_tokenizer",
    "suggested_rules",
    "to_hf_model",
    "to_hf_state_dict",
    "verify_export",
]

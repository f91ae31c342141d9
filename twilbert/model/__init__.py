"""The TWilBERT model: config, building blocks, heads and presets."""

from twilbert.model.attention import ATTENTION_BACKENDS, SelfAttention, get_attention_backend
from twilbert.model.config import (
    CLS_ID,
    MASK_ID,
    N_SPECIAL,
    PAD_ID,
    SEP_ID,
    SPECIAL_TOKENS,
    UNK_ID,
    MaskedLMConfig,
    MaskProbs,
    ModelConfig,
    PKMConfig,
    ROPConfig,
)
from twilbert.model.embeddings import Embeddings
from twilbert.model.encoder import Encoder, EncoderBlock, FeedForward
from twilbert.model.heads import IGNORE_INDEX, MLMHead, ROPHead
from twilbert.model.pkm import MaskedBatchNorm1d, ProductKeyMemory
from twilbert.model.presets import ORIGINAL_SIZES, PRESETS, preset_config
from twilbert.model.twilbert import PretrainOutput, TWilBERT

__all__ = [
    "ATTENTION_BACKENDS",
    "CLS_ID",
    "Embeddings",
    "Encoder",
    "EncoderBlock",
    "FeedForward",
    "IGNORE_INDEX",
    "MASK_ID",
    "MLMHead",
    "MaskProbs",
    "MaskedBatchNorm1d",
    "MaskedLMConfig",
    "ModelConfig",
    "N_SPECIAL",
    "ORIGINAL_SIZES",
    "PAD_ID",
    "PKMConfig",
    "PRESETS",
    "PretrainOutput",
    "ProductKeyMemory",
    "ROPConfig",
    "ROPHead",
    "SEP_ID",
    "SPECIAL_TOKENS",
    "SelfAttention",
    "TWilBERT",
    "UNK_ID",
    "get_attention_backend",
    "preset_config",
]

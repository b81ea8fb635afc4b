"""Layers shared by the backbones (attention kernels, blocks, pooling, RoPE, merging)."""
from maelre.layers.attention import Attention, exact_attention, key_logit_bias, reference_attention
from maelre.layers.block import Block, drop_path_rates
from maelre.layers.pooling import weighted_mean
from maelre.layers.rope import apply_rope, rope_angles
from maelre.layers.validation import validate_tokens

__all__ = [
    "Attention",
    "Block",
    "apply_rope",
    "drop_path_rates",
    "exact_attention",
    "key_logit_bias",
    "reference_attention",
    "rope_angles",
    "validate_tokens",
    "weighted_mean",
]

"""Layers shared by the backbones (attention kernels, blocks, pooling, RoPE, merging)."""
from maelre.layers.attention import Attention, exact_attention, key_logit_bias, reference_attention
from maelre.layers.block import Block, drop_path_rates
from maelre.layers.linear_attention import FavorFeatureMap, LinearAttention, elu_feature_map, linear_attention, linear_attention_reference
from maelre.layers.merge import bipartite_soft_matching, compaction_order
from maelre.layers.nystrom import NystromAttention, iterative_pinv, nystrom_attention, nystrom_attention_reference
from maelre.layers.pooling import weighted_mean
from maelre.layers.rope import apply_rope, rope_angles, rotary_kernel
from maelre.layers.validation import validate_tokens

__all__ = [
    "Attention",
    "Block",
    "FavorFeatureMap",
    "LinearAttention",
    "NystromAttention",
    "apply_rope",
    "bipartite_soft_matching",
    "compaction_order",
    "drop_path_rates",
    "elu_feature_map",
    "exact_attention",
    "iterative_pinv",
    "key_logit_bias",
    "linear_attention",
    "linear_attention_reference",
    "nystrom_attention",
    "nystrom_attention_reference",
    "reference_attention",
    "rope_angles",
    "rotary_kernel",
    "validate_tokens",
    "weighted_mean",
]

"""Every backbone's training forward and backward reads no tensor value on the host: on a GPU each read is a sync."""
from __future__ import annotations

import pytest
import torch

from host_reads import NoHostRead
from maelre import create_backbone

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.mark.parametrize(
    "name, config",
    [("maelre", {}), ("maelre", {"value_conv": None}), ("maelre", {"merge_site": "both", "merge_schedule": "fraction", "merge_fraction": 0.3}),
     ("transformer", {}), ("transformer", {"rope": True}), ("ecp", {"segment_size": 32}), ("perceiver_ar", {"num_latents": 16}), ("masformer", {})],
)
def test_training_forward_and_backward_read_no_value_on_the_host(name, config):
    backbone = create_backbone(name, dim=32, depth=3, heads=4, **config).train()
    tokens = torch.randn(2, 128, 32).as_subclass(NoHostRead).requires_grad_()
    mask = torch.ones(2, 128, dtype=torch.bool)
    mask[1, 100:] = False  # a padded row
    pooled = backbone(tokens, mask.as_subclass(NoHostRead))  # [B, D], what the head reads in training
    pooled.float().square().mean().backward()
    assert isinstance(pooled, NoHostRead) and tokens.grad is not None  # the guard travelled through the whole graph

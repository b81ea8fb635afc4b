"""The depthwise value convolution of MAELRE's approximate blocks, against a plain loop."""
from __future__ import annotations

import pytest
import torch

from maelre import create_backbone
from maelre.layers.value_conv import ValueConv


def reference(v: torch.Tensor, weight: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    """out[b, h, i, d] = sum_j w[h*dh + d, j] * v[b, h, i + j - k//2, d], real tokens only, zeros past the ends."""
    b, h, n, dh = v.shape
    k = weight.shape[-1]
    out = torch.zeros_like(v, dtype=torch.float64)
    for i in range(n):
        for j in range(k):
            src = i + j - k // 2
            if 0 <= src < n:
                w = weight[:, 0, j].double().reshape(h, dh)
                real = 1.0 if key_mask is None else key_mask[:, src].double()[:, None, None]  # padding adds nothing
                out[:, :, i] += w * v[:, :, src].double() * real
    return out


@pytest.mark.parametrize("kernel", [1, 3, 7])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_a_plain_loop_and_ignores_padding(kernel, masked):
    torch.manual_seed(0)
    b, h, n, dh = 2, 3, 11, 4
    conv = ValueConv(h * dh, kernel)
    v = torch.randn(b, h, n, dh)
    key_mask = torch.arange(n)[None] < torch.tensor([n, 6])[:, None] if masked else None
    if masked:
        v[1, :, 6:] = 1e6  # garbage in the padding must not reach real tokens
    out = conv(v, key_mask)
    expected = reference(v, conv.conv.weight.detach(), key_mask)
    keep = slice(None) if key_mask is None else key_mask[:, None, :, None].expand_as(v)
    torch.testing.assert_close(out.double()[keep], expected[keep], rtol=1e-5, atol=1e-4)


def test_rejects_even_or_empty_kernels():
    for bad in (0, 2, -3):
        with pytest.raises(ValueError, match="odd"):
            ValueConv(8, bad)
    with pytest.raises(ValueError, match="value_conv"):
        create_backbone("maelre", dim=16, depth=2, heads=2, value_conv=4)


def test_maelre_uses_it_only_in_approximate_blocks_and_it_learns():
    m = create_backbone("maelre", dim=32, depth=3, heads=4, value_conv=5, match_window=6)
    tokens, mask = torch.randn(2, 256, 32), torch.ones(2, 256, dtype=torch.bool)
    kinds = [b.attention for b in m.plan(256)]
    assert kinds == ["linear", "linear", "exact"]
    calls = []
    for block in m.blocks:
        block.value_conv.register_forward_hook(lambda mod, args, out: calls.append(mod))
    m(tokens, mask).pow(2).sum().backward()
    used = {id(c) for c in calls}
    assert [id(b.value_conv) in used for b in m.blocks] == [k != "exact" for k in kinds]
    assert all(b.value_conv.conv.weight.grad.abs().sum() > 0 for b in m.blocks[:-1])
    assert m.blocks[-1].value_conv.conv.weight.grad is None
    with_conv = m.plan(256)[0].attn_flops
    m.blocks[0].value_conv = None
    assert with_conv > m.plan(256)[0].attn_flops


def test_it_is_on_by_default():
    m = create_backbone("maelre", dim=32, depth=2, heads=4)
    assert all(b.value_conv.conv.kernel_size == (5,) for b in m.blocks)
    assert all(b.value_conv is None for b in create_backbone("maelre", dim=32, depth=2, heads=4, value_conv=None).blocks)


def test_ddp_looks_for_unused_parameters_when_short_inputs_skip_the_convolution():
    from lightning.pytorch.strategies import DDPStrategy

    from maelre.engine.fit import _strategy

    m = create_backbone("maelre", dim=32, depth=2, heads=4)
    assert m.skips_parameters
    m(torch.randn(2, 16, 32), torch.ones(2, 16, dtype=torch.bool)).sum().backward()  # N=16 <= D: every block exact
    assert m.blocks[0].value_conv.conv.weight.grad is None, "a short input leaves the convolution unused"
    strategy = _strategy("ddp", torch.nn.Sequential(m))
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs.get("find_unused_parameters") is True
    assert _strategy("auto", m) == "auto"
    assert not create_backbone("maelre", dim=32, depth=2, heads=4, value_conv=None).skips_parameters
    assert _strategy("ddp", create_backbone("transformer", dim=32, depth=2, heads=4)) == "ddp"

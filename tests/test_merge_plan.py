"""MAELRE as designed: the ``auto`` merge plan reaches exact attention; RoPE on merged positions; 2-D merge order."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from maelre import create_backbone
from maelre.backbones.maelre import MAELRE
from maelre.layers import reference_attention
from maelre.layers.layout import hilbert_order
from maelre.layers.linear_attention import elu_feature_map, linear_attention_reference
from maelre.layers.merge import bipartite_soft_matching
from maelre.layers.merge_plan import AutoPlan, MergePlanError, reachable
from maelre.layers.rope import apply_rope, rope_angles
from maelre.recipe import RecipeError, RecipeWarning, load_recipe, recipe_from_dict
from modalities import create_adapter

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("threshold, events, total, protected", [(64, 4, 6, 0), (64, 4, 6, 1), (30, 5, 5, 1), (128, 3, 8, 0)])
def test_auto_targets_are_feasible_monotone_and_reach_the_threshold(threshold, events, total, protected):
    plan = AutoPlan(threshold, events, total, protected)
    previous = None
    for n in range(1, 1200):
        if reachable(n, events, protected) > threshold:
            with pytest.raises(MergePlanError, match="cannot reach"):
                plan.targets(n)
            break
        targets = plan.targets(n)
        count = n
        for e, target in enumerate(targets):
            assert count - (count - protected) // 2 <= target <= count  # bipartite matching removes at most half
            count = target
        assert targets[events - 1] <= max(threshold, protected) or n <= threshold
        assert targets[events:] == (targets[events - 1],) * (total - events)  # no merging after the switch
        if previous is not None:  # longer rows never keep fewer tokens: a padded batch keeps the longest row's count
            assert all(a <= b for a, b in zip(previous, targets))
        previous = targets


def test_target_table_grows_only_to_plannable_lengths():
    plan = AutoPlan(16, 2, 3)  # 2 merges take at most 64 tokens to 16
    assert plan.targets_table(40, torch.device("cpu")).shape[0] == 41
    table = plan.targets_table(64, torch.device("cpu"))  # doubling to 82 rows would hold unplannable lengths
    assert table.shape[0] == 65 and tuple(table[64].tolist()) == plan.targets(64)
    with pytest.raises(MergePlanError, match="65 tokens cannot reach"):
        plan.targets_table(65, torch.device("cpu"))


def small(**overrides) -> MAELRE:
    config = {"dim": 16, "depth": 3, "heads": 2, "mlp_ratio": 2.0, "match_window": 4, **overrides}
    return create_backbone("maelre", **config).eval()


def test_auto_is_the_default_and_the_last_block_runs_exact_attention():
    m = small()
    assert (m.config.merge_schedule, m.config.merge_site, m.config.exact_blocks) == ("auto", "both", 1)
    out = m(torch.randn(2, 250, 16), return_trace=True)
    assert [b.attention for b in out.trace] == ["linear", "linear", "exact"]
    assert out.trace[-1].n_in <= 16 and out.trace[0].n_in == 250
    assert [(b.n_in, b.n_out, b.attention) for b in out.trace] == [(b.n_in, b.n_out, b.attention) for b in m.plan(250)]
    two = small(depth=4, exact_blocks=2)
    assert [b.attention for b in two.plan(250)] == ["linear", "linear", "exact", "exact"]


@pytest.mark.parametrize("overrides", [{}, {"pool": "cls"}, {"rope": True}, {"merge_site": "attn", "depth": 5, "exact_blocks": 2}])
def test_auto_plan_rows_merge_as_they_would_alone(overrides):
    """Every row above the threshold reaches it exactly at the switch, so its attention kinds match the batch's."""
    m = small(**overrides)
    lengths, n = [120, 97, 40, 17], 120
    tokens = torch.randn(len(lengths), n, 16, generator=torch.Generator().manual_seed(1))
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    out = m(tokens, mask, return_trace=True)
    assert out.trace[-1].attention == "exact"
    for row, length in enumerate(lengths):
        alone = m(tokens[row : row + 1, :length])
        torch.testing.assert_close(out.pooled[row : row + 1], alone, rtol=1e-5, atol=1e-5)
    assert out.sizes.sum(1).tolist() == [float(x + (overrides.get("pool") == "cls")) for x in lengths]


def test_impossible_plan_names_the_fixes_before_training():
    m = small(exact_blocks=2)  # 1 block of 2 merges cannot take 250 tokens to 16
    with pytest.raises(MergePlanError) as info:
        m.plan(250)
    message = str(info.value)
    assert "depth >= 4" in message and "switch_threshold >= 63" in message and "exact_blocks <= 1" in message
    with pytest.raises(MergePlanError):
        m(torch.randn(1, 250, 16))
    assert m.plan(30)[-1].attention == "exact"  # short inputs are fine
    raw = {
        "data": {"dataset": {"name": "digits"}, "adapter": {"name": "pixels", "max_len": 1024}},
        "model": {"backbone": "maelre", "dim": 64, "depth": 3, "heads": 4, "backbone_config": {"maelre": {"exact_blocks": 2}}},
    }
    with pytest.raises(RecipeError, match=r"model.backbone_config.maelre.*depth >= 4"):
        recipe_from_dict(raw)


@pytest.mark.parametrize("path", [p for p in RECIPES if "backbone: maelre" in p.read_text()], ids=lambda p: p.stem)
def test_every_shipped_maelre_recipe_ends_in_exact_attention(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecipeWarning)
        recipe = load_recipe(path)
    adapter = create_adapter(recipe.adapter_name(), **recipe.adapter_kwargs())
    backbone = create_backbone("maelre", **recipe.backbone_kwargs())
    n = -(-adapter.config.max_len // adapter.config.pad_to_multiple) * adapter.config.pad_to_multiple
    assert backbone.plan(n)[-1].attention == "exact"


def reference_maelre(m: MAELRE, tokens: torch.Tensor) -> torch.Tensor:
    """One unpadded sequence through ``m`` with plain float64 attention and explicit per-group merging of states, sizes and positions."""
    x = tokens[0].double()
    sizes = torch.ones(x.shape[0], dtype=torch.float64)
    pos = torch.arange(x.shape[0], dtype=torch.float64)
    length = x.shape[0]

    def merge(block, site, x, sizes, pos, keys):
        step = block.sites.get(site)
        n = x.shape[0]
        r = 0 if step is None else step.static_count(n, length)
        if r == 0:
            return x, sizes, pos, keys
        plan = bipartite_soft_matching(keys[None].float(), sizes[None].float(), r, n - r, window=m.config.match_window)
        slot = plan.unmerge(torch.arange(n - r, dtype=torch.float64)[None, :, None])[0, :, 0].long()
        groups = [torch.nonzero(slot == j).flatten() for j in range(n - r)]
        size = torch.stack([sizes[g].sum() for g in groups])

        def mean(t):
            return torch.stack([(sizes[g, None] * t[g].reshape(len(g), -1)).sum(0) / sizes[g].sum() for g in groups]).reshape(-1, *t.shape[1:])

        return mean(x), size, mean(pos), mean(keys)

    for block in m.blocks.double():
        q, k, v = block.attn.qkv(block.norm1(x[None]))
        dh = q.shape[-1]
        bias = sizes.log()[None]
        if block.attention_kind(x.shape[0]) == "exact":
            cos, sin = rope_angles(pos, dh)
            out = reference_attention(apply_rope(q, cos.double(), sin.double()), apply_rope(k, cos.double(), sin.double()), v, bias[:, None, None, :])
        else:
            out = linear_attention_reference(q, k, v, key_bias=bias, feature_map=elu_feature_map, positions=pos[None])
            if block.value_conv is not None:  # depthwise convolution of V along the current token order, zeros past the ends
                weight = block.value_conv.conv.weight
                h, n, d = v.shape[1], v.shape[2], v.shape[3]
                conv = F.conv1d(v[0].permute(0, 2, 1).reshape(1, h * d, n), weight, padding=weight.shape[-1] // 2, groups=h * d)
                out = out + conv.reshape(1, h, d, n).permute(0, 1, 3, 2)
        x = x + block.attn.output(out)[0]
        keys = k[0].mean(0)
        x, sizes, pos, keys = merge(block, "attn", x, sizes, pos, keys)
        x = block.mlp_residual(x[None])[0]
        x, sizes, pos, keys = merge(block, "mlp", x, sizes, pos, keys)
    x = m.norm.double()(x)
    return ((sizes[:, None] * x).sum(0) / sizes.sum())[None]


def test_rope_maelre_with_merged_positions_matches_a_plain_implementation():
    m = small(rope=True, depth=3, switch_threshold=12)
    tokens = torch.randn(1, 50, 16, generator=torch.Generator().manual_seed(3))
    out = m(tokens, return_trace=True)
    assert {b.attention for b in out.trace} == {"linear", "exact"}
    expected = reference_maelre(m, tokens)
    torch.testing.assert_close(out.pooled.double(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name, extra", [("transformer", {}), ("maelre", {"merge_schedule": "fraction", "merge_fraction": 0.0, "value_conv": None}), ("masformer", {"window": 4, "full_layers": [1]}), ("ecp", {"segment_size": 8}), ("perceiver_ar", {"num_latents": 8})])
def test_every_backbone_accepts_rope_and_it_makes_order_matter(name, extra):
    common = {"dim": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0, **extra}
    tokens = torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0))
    flipped = tokens.flip(1)
    torch.manual_seed(0)
    plain = create_backbone(name, rope=False, **common).eval()
    torch.manual_seed(0)
    rotary = create_backbone(name, rope=True, **common).eval()
    if name not in ("perceiver_ar", "ecp"):  # without positions, global attention + mean pooling cannot see the order
        torch.testing.assert_close(plain(tokens), plain(flipped), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(rotary(tokens), rotary(flipped), atol=1e-4)
    rotary(tokens).sum().backward()
    assert all(p.grad is not None for p in rotary.parameters() if p.requires_grad)


def test_rope_scores_depend_only_on_relative_positions():
    q, k, v = torch.randn(3, 2, 2, 10, 8).unbind(0)
    pos = torch.rand(2, 10) * 50
    for shift in (0.0, 13.5):
        cos, sin = rope_angles(pos + shift, 8)
        exact = reference_attention(apply_rope(q, cos[:, None], sin[:, None]), apply_rope(k, cos[:, None], sin[:, None]), v)
        linear = linear_attention_reference(q, k, v, positions=pos + shift)
        if shift == 0.0:
            base_exact, base_linear = exact, linear
    torch.testing.assert_close(exact, base_exact, rtol=1e-4, atol=1e-5)  # angles are float32
    torch.testing.assert_close(linear, base_linear, rtol=1e-4, atol=1e-5)


def test_hilbert_order_steps_to_four_neighbours():
    order = hilbert_order(32, 32)
    assert sorted(order.tolist()) == list(range(1024))
    rows, cols = order // 32, order % 32
    assert ((rows.diff().abs() + cols.diff().abs()) == 1).all()
    assert sorted(hilbert_order(5, 7).tolist()) == list(range(35))


def test_image_merging_finds_vertical_neighbours():
    """An image whose rows are all alike (each column its own vector): only vertical neighbours are identical."""
    h = w = 16
    columns = torch.randn(w, 8, generator=torch.Generator().manual_seed(0))
    image = columns[None].expand(h, w, 8).reshape(1, h * w, 8)
    sizes = torch.ones(1, h * w)

    def merged_groups(order: torch.Tensor) -> list[list[int]]:
        """The raster indices that merged together, for every output token standing for more than one."""
        plan = bipartite_soft_matching(image[:, order], sizes, h * w // 4, h * w - h * w // 4, window=8)
        slot = plan.unmerge(torch.arange(h * w - h * w // 4, dtype=torch.float)[None, :, None])[0, :, 0]
        groups = [order[(slot == s).nonzero().flatten()].tolist() for s in slot.unique()]
        return [g for g in groups if len(g) > 1]

    hilbert, raster = merged_groups(hilbert_order(h, w)), merged_groups(torch.arange(h * w))
    assert sum(len(g) - 1 for g in hilbert) == sum(len(g) - 1 for g in raster) == h * w // 4
    assert all(len({i % w for i in g}) == 1 for g in hilbert)  # only pixels of one column: identical tokens
    assert not any(len({i % w for i in g}) == 1 for g in raster)  # raster matching never pairs a pixel with the one below


def test_pixel_adapter_passes_its_grid_and_maelre_uses_it():
    adapter = create_adapter("pixels", dim=16, max_len=64, img_size=8)
    assert adapter.token_grid(64) == (8, 8) and adapter.token_grid(60) is None
    assert create_adapter("pixels", dim=16, max_len=64).token_grid(64) is None
    m = small()
    tokens = torch.randn(2, 64, 16)
    hilbert = m(tokens, layout=(8, 8))
    raster = small(grid_order="raster")
    raster.load_state_dict(m.state_dict())
    assert not torch.allclose(hilbert, raster(tokens, layout=(8, 8)))
    torch.testing.assert_close(raster(tokens, layout=(8, 8)), raster(tokens))
    with pytest.raises(ValueError, match="layout 4x4 does not match the 64 tokens"):
        m(tokens, layout=(4, 4))

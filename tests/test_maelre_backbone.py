"""The MAELRE backbone: merging schedule, attention switch, padding invariance, gradients, config errors."""
from __future__ import annotations

import pytest
import torch

from maelre import create_backbone, list_backbones
from maelre.backbones.base import dense_attention_flops
from maelre.backbones.maelre import MAELRE, MAELREConfig, MergeStep

DIM = 32


def model(**overrides) -> MAELRE:
    """A tiny MAELRE on the per-block fraction schedule (the ``auto`` plan has tests of its own)."""
    config = {"dim": DIM, "depth": 3, "heads": 4, "mlp_ratio": 2.0, "match_window": 6, "merge_site": "attn", "merge_schedule": "fraction", **overrides}
    return create_backbone("maelre", **config).eval()


def batch(lengths: list[int], n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    n = n or max(lengths)
    tokens = torch.randn(len(lengths), n, DIM, generator=torch.Generator().manual_seed(seed))
    mask = torch.arange(n)[None] < torch.tensor(lengths)[:, None]
    return tokens, mask


def kinds(m: MAELRE, n: int) -> list[str]:
    return [b.attention for b in m.plan(n)]


def threshold_agreeing(m: MAELRE, lengths: list[int], n: int) -> int:
    """A switch threshold at which every sequence alone uses the same attention kinds as the padded batch, both kinds used."""
    for t in range(n, 0, -1):
        m.config.switch_threshold = t
        plan = kinds(m, n)
        if len(set(plan)) == 2 and all(kinds(m, length) == plan for length in lengths):
            return t
    raise AssertionError(f"no threshold makes the kinds agree for lengths {lengths} in N={n}")


def test_registered_and_configurable():
    assert "maelre" in list_backbones()
    m = model()
    assert isinstance(m.config, MAELREConfig) and m.config.threshold == DIM
    assert model(switch_threshold=7).config.threshold == 7


def test_trace_shows_shrinking_tokens_and_both_attention_kinds():
    m = model(depth=4, switch_threshold=40)
    tokens, mask = batch([96, 70])
    out = m(tokens, mask, return_trace=True)
    ns = [b.n_in for b in out.trace] + [out.trace[-1].n_out]
    assert ns == [96, 72, 54, 41, 31]
    assert [b.attention for b in out.trace] == ["linear", "linear", "linear", "linear"]
    m.config.switch_threshold = 60
    out = m(tokens, mask, return_trace=True)
    assert [b.attention for b in out.trace] == ["linear", "linear", "exact", "exact"]
    assert [(b.n_in, b.n_out, b.attention, b.attn_flops) for b in out.trace] == [
        (b.n_in, b.n_out, b.attention, b.attn_flops) for b in m.plan(96)
    ]
    assert out.trace[2].attn_flops == dense_attention_flops(54, 54, DIM)
    assert out.states.shape == (2, 31, DIM)


@pytest.mark.parametrize("site", ["attn", "mlp", "both"])
def test_sizes_sum_to_real_tokens_at_every_block(site):
    m = model(depth=3, merge_site=site, switch_threshold=30)
    lengths = [64, 41, 9, 1]
    tokens, mask = batch(lengths)
    out = m(tokens, mask, return_trace=True)
    step = next(iter(m.blocks[0].sites.values()))  # every site has the same fraction here
    for info in out.trace:
        assert info.extra["size_sum"] == [float(n) for n in lengths]
        expected = info.extra["real_in"]
        for _ in range(2 if site == "both" else 1):
            expected = [n - step.static_count(n) for n in expected]
        assert info.extra["real_out"] == expected
    assert out.sizes.sum(1).tolist() == [float(n) for n in lengths]
    assert torch.equal(out.mask, out.sizes > 0)
    assert (out.mask.long().diff(dim=1) <= 0).all()  # real tokens first


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"merge_site": "both", "pool": "cls"},
        {"approx": "nystrom", "num_landmarks": 8},
        {"feature_map": "favor", "num_features": 16, "merge_metric": "states", "match_window": None},
        {"merge_site": "both", "value_conv": 5},
    ],
    ids=["linear", "both-cls", "nystrom", "favor-states-global", "value-conv"],
)
@pytest.mark.parametrize("switch", ["agreeing", "approx_everywhere", "exact_everywhere"])
def test_padded_batch_matches_each_sequence_alone(overrides, switch):
    # a short row only works where the attention kinds cannot depend on the length
    lengths, n = ([60, 64, 57] if switch == "agreeing" else [60, 64, 33]), 64
    m = model(depth=4, **overrides)
    fixed = {"approx_everywhere": 0, "exact_everywhere": n + 1}
    m.config.switch_threshold = fixed[switch] if switch in fixed else threshold_agreeing(m, lengths, n)
    tokens, mask = batch(lengths, n)
    pooled = m(tokens, mask)
    for row, length in enumerate(lengths):
        alone = m(tokens[row : row + 1, :length])
        torch.testing.assert_close(pooled[row : row + 1], alone, rtol=1e-5, atol=1e-5)


def test_padding_anywhere_and_garbage_in_padding_do_not_matter():
    m = model(switch_threshold=0)
    tokens, mask = batch([40, 25], 40)
    shuffled_mask = mask.clone()
    shuffled_mask[1] = torch.roll(mask[1], 10)  # padding in front and behind
    shuffled = tokens.clone()
    shuffled[1] = torch.roll(tokens[1], 10, dims=0)
    shuffled[1][~shuffled_mask[1]] = float("nan")
    torch.testing.assert_close(m(shuffled, shuffled_mask), m(tokens, mask), rtol=1e-5, atol=1e-5)


def test_cls_token_is_never_merged():
    m = model(pool="cls", merge_site="both", merge_fraction=0.5, switch_threshold=0)
    tokens, mask = batch([50, 31])
    out = m(tokens, mask, return_trace=True)
    assert out.trace[-1].n_out < 10
    assert out.sizes[:, 0].tolist() == [1.0, 1.0]  # CLS still stands for itself only
    assert out.sizes.sum(1).tolist() == [51.0, 32.0]
    torch.testing.assert_close(out.pooled, out.states[:, 0])


def assert_gradients(m, trace, nonzero: bool = True) -> None:
    """Every weight has a finite gradient, except the value convolutions of blocks that ran exact attention: those are unused."""
    unused = {f"blocks.{b.index}.value_conv." for b in trace if b.attention == "exact"}
    for name, p in m.named_parameters():
        if any(name.startswith(prefix) for prefix in unused):
            assert p.grad is None, f"{name}: an exact block must not use its value convolution"
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and (not nonzero or p.grad.abs().sum() > 0), name


def test_forward_backward_on_variable_length_batch():
    m = model(depth=3, pool="cls", switch_threshold=30).train()
    tokens, mask = batch([48, 30, 5])
    tokens.requires_grad_(True)
    out = m(tokens, mask, return_trace=True)
    assert {b.attention for b in out.trace} == {"linear", "exact"}
    out.pooled.pow(2).sum().backward()
    assert (tokens.grad.abs().sum(-1) > 0).eq(mask).all()  # every real token, no padding
    assert_gradients(m, out.trace)


def test_merge_step_schedule_properties():
    for step in (MergeStep("fraction", 0.5), MergeStep("fraction", 0.3, protected=1, min_tokens=5), MergeStep("target", 20, remaining=3)):
        n = torch.arange(1, 400)
        r = step.count(n)
        assert (r.diff() >= 0).all() and (r.diff() <= 1).all()  # non-decreasing, 1-Lipschitz
        assert (r <= (n - step.protected) // 2).all() and (n - r >= torch.clamp(n, max=step.min_tokens)).all()
        assert [step.static_count(k) for k in range(1, 400)] == r.tolist()  # host and device formulas agree


def test_target_schedule_reaches_stage_targets():
    m = model(depth=4, merge_schedule="target", stage_depths=[2, 2], stage_targets=[32, 12])
    assert [b.n_out for b in m.plan(64)] == [48, 32, 22, 12]
    assert [b.n_out for b in m.plan(20)] == [20, 20, 16, 12]  # below the first target: merge only in stage 2
    m = model(depth=2, merge_schedule="target", stage_targets=[4])
    assert [b.n_out for b in m.plan(64)] == [34, 17]  # a merge removes at most half: the target is not reached


def test_per_stage_fractions_and_min_tokens():
    m = model(depth=4, stage_depths=[1, 3], merge_fraction=[0.0, 0.5], min_tokens=10)
    assert [b.n_out for b in m.plan(64)] == [64, 32, 16, 10]


def test_flops_report_against_full_attention():
    m = model(depth=4, switch_threshold=32)
    report = m.flops_report(4096)
    assert report["full_attention"] == 4 * dense_attention_flops(4096, 4096, DIM)
    assert report["maelre"] == sum(b.attn_flops for b in report["blocks"]) == m.attention_flops(4096)
    assert report["ratio"] < 0.01
    short = m.flops_report(16)  # exact everywhere and nothing merged below... still merges, never above full
    assert short["ratio"] <= 1.0


def test_redraw_features_changes_output():
    m = model(feature_map="favor", num_features=8, switch_threshold=0)
    tokens, _ = batch([30])
    before = m(tokens)
    m.redraw_features(torch.Generator().manual_seed(5))
    assert not torch.allclose(m(tokens), before)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"approx": "performer"}, "unknown approx"),
        ({"feature_map": "relu"}, "unknown feature_map"),
        ({"merge_site": "qkv"}, "unknown merge_site"),
        ({"merge_metric": "values"}, "unknown merge_metric"),
        ({"merge_fraction": 0.7}, r"\[0, 0.5\]"),
        ({"merge_fraction": [0.1, 0.2]}, "one per block"),
        ({"stage_depths": [1, 1]}, "sum to depth"),
        ({"merge_schedule": "target"}, "stage_targets"),
        ({"merge_schedule": "target", "stage_depths": [2, 1], "stage_targets": [8]}, "one stage_targets entry per stage"),
        ({"stage_targets": [8]}, "only used with merge_schedule='target'"),
        ({"switch_threshold": -1}, "switch_threshold"),
        ({"match_window": 0}, "match_window"),
        ({"num_landmarks": 0}, "num_landmarks"),
        ({"nystrom_conv_kernel": 4}, "odd"),
        ({"min_tokens": 0}, "min_tokens"),
        ({"heads": 5}, "divisible"),
    ],
)
def test_bad_config_raises(overrides, match):
    with pytest.raises(ValueError, match=match):
        model(**overrides)


def test_bad_inputs_raise():
    m = model()
    with pytest.raises(ValueError, match="dim=32"):
        m(torch.randn(1, 8, 16))
    m.check_values = True  # value checks are a debug flag in forward (the collate runs them in training)
    with pytest.raises(ValueError, match="all padding"):
        m(torch.randn(2, 8, DIM), torch.tensor([[True] * 8, [False] * 8]))


@pytest.mark.parametrize("approx", ["linear", "nystrom"])
def test_bf16_autocast_training_step(approx):
    m = model(approx=approx, num_landmarks=8, switch_threshold=40).train()
    tokens, mask = batch([64, 50])
    tokens.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(tokens, mask, return_trace=True)
    assert {b.attention for b in out.trace} == {approx, "exact"}
    out.pooled.float().pow(2).sum().backward()
    assert torch.isfinite(tokens.grad).all() and tokens.grad[mask].abs().sum() > 0
    assert_gradients(m, out.trace, nonzero=False)


@pytest.mark.parametrize("padded", [False, True])
def test_second_site_keys_merge_as_the_size_weighted_sum_did(monkeypatch, padded):
    """The MLP site matches by the keys merged at the attention site: their float32 size-weighted mean, which points where
    the size-weighted sum merged earlier points. Same merges, same states, gradients flowing, against that sum."""
    import maelre.backbones.maelre as backbone_module

    m = model(depth=4, merge_site="both", merge_fraction=0.25, switch_threshold=16).train()
    tokens, mask = batch([64, 41] if padded else [64, 64])
    mask = mask if padded else None

    def run() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        m.zero_grad()
        out = m(tokens, mask, return_states=True)
        out.pooled.square().sum().backward()
        return out.states, out.sizes, [p.grad.clone() for p in m.parameters() if p.grad is not None]

    states, sizes, grads = run()
    matching = backbone_module.bipartite_soft_matching

    def with_summed_keys(metric, sizes, *args, **kwargs):  # the previous keys merge: plain sum of size * keys
        plan, log_sizes = matching(metric, sizes, *args, **kwargs)

        def merge(x, mode="mean", dtype=None):
            return plan.merge(x * sizes[..., None], mode="sum") if dtype == torch.float32 else plan.merge(x, mode, dtype)

        return plan._replace(merge=merge), log_sizes

    monkeypatch.setattr(backbone_module, "bipartite_soft_matching", with_summed_keys)
    want_states, want_sizes, want_grads = run()
    assert torch.equal(sizes, want_sizes) and sizes.shape[1] < 64
    torch.testing.assert_close(states, want_states)
    assert len(grads) == len(want_grads) and all(g.abs().sum() > 0 for g in grads[:3])
    for got, want in zip(grads, want_grads):
        torch.testing.assert_close(got, want)


def test_keys_are_averaged_only_in_blocks_that_merge(monkeypatch):
    """A block whose sites remove no token (the exact blocks at the end) takes no head average of its keys."""
    m = model(depth=3, merge_site="both", merge_fraction=0.25)
    n = 64
    merging = [block.merges(n_in, n) for block, n_in in zip(m.blocks, [info.n_in for info in m.plan(n)])]
    m.blocks[-1].sites = {}  # the last block merges nowhere
    calls = []
    mean = torch.Tensor.mean
    monkeypatch.setattr(torch.Tensor, "mean", lambda self, *a, **kw: calls.append(self.dim()) or mean(self, *a, **kw))
    m(torch.randn(1, n, DIM))
    assert merging[:2] == [True, True] and calls.count(4) == 2  # [B, H, N, dh] keys of the first two blocks only


def test_a_padded_batch_compares_each_sizes_with_zero_once():
    """``sizes > 0`` (key mask, the merge's real tokens and its counts, the output mask) is computed once per set of
    sizes: once for the input and once after each merge, with the same outputs as without the cache."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class SizesCompared(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket is torch.ops.aten.gt and args[0].dim() == 2 and args[0].is_floating_point() and args[1] == 0:  # [B, N] sizes
                self.count += 1
            return func(*args, **(kwargs or {}))

    m = model(merge_site="both", merge_fraction=0.25, switch_threshold=8)
    tokens, mask = batch([64, 41])
    with SizesCompared() as compared:
        out = m(tokens, mask, return_states=True)
    merges = sum(len(info.extra["after_merges"]) for info in m.plan(64))
    assert merges == 6 and compared.count == 1 + merges
    assert torch.equal(out.mask, out.sizes > 0)

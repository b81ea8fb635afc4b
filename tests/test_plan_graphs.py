"""``PlanGraphs``: the merge plan replayed from CUDA graphs gives the plan that runs without them.

The bookkeeping (first sighting eager, capture on the second, copy-in, cloned outputs, keys,
eviction, copies of a model) is tested on the CPU with a stand-in graph that records the function
and re-runs it on its own buffers at each replay, writing into the same output tensors, as a CUDA
graph does. The real capture runs in the CUDA tests (skipped without a GPU; ``gpu_kernels.sh tests``).
"""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

import maelre.backbones.maelre as maelre_module
import maelre.layers.plan_graphs as plan_graphs
from maelre.backbones.maelre import MAELRE, MAELREConfig
from maelre.layers.merge import bipartite_soft_matching, replayed_merge
from maelre.layers.plan_graphs import PlanGraphs

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


class _StandInGraph:
    def __init__(self, fn, inputs, static, outputs) -> None:
        self.fn, self.inputs, self.static, self.outputs = fn, inputs, static, outputs

    def replay(self) -> None:
        for out, fresh in zip(self.outputs, self.fn(*self.inputs, *self.static)):
            if out is not None:
                out.copy_(fresh)


class _CPUGraphs(PlanGraphs):
    """``PlanGraphs`` on the CPU, with the stand-in graph; counts captures and replays."""

    captures = replays = 0
    fail = False

    @staticmethod
    def applies(x: torch.Tensor) -> bool:
        return True

    def _capture(self, fn, tensors, static, device):
        self.captures += 1
        if self.fail:
            raise RuntimeError("capture refused")
        with torch.inference_mode(False):  # as PlanGraphs._capture
            inputs = tuple(None if t is None else t.clone() for t in tensors)
            outputs = tuple(fn(*inputs, *static))  # filled anew by each replay, as a CUDA graph's are
        return _StandInGraph(fn, inputs, static, outputs), inputs, outputs

    def _replay(self, graph) -> None:
        self.replays += 1
        super()._replay(graph)


def _affine(x, bias, scale):
    return x * scale + (0 if bias is None else bias), x.sum(dim=-1)


def test_first_call_eager_then_capture_then_replay_with_fresh_inputs():
    graphs = _CPUGraphs()
    xs = [torch.randn(3, 5) for _ in range(4)]
    bias = torch.randn(3, 5)
    results = [graphs(_affine, (x, bias), (2.0,)) for x in xs]
    assert (graphs.captures, graphs.replays, len(graphs)) == (1, 3, 1)
    for x, (y, s) in zip(xs, results):  # every call saw its own input, also the replays
        torch.testing.assert_close(y, x * 2.0 + bias)
        torch.testing.assert_close(s, x.sum(dim=-1))


def test_outputs_are_not_overwritten_by_a_later_replay():
    graphs = _CPUGraphs()
    a, b, c = torch.ones(2, 4), torch.full((2, 4), 3.0), torch.full((2, 4), 5.0)
    graphs(_affine, (a, None), (1.0,))
    kept, _ = graphs(_affine, (b, None), (1.0,))  # a replay's output
    graphs(_affine, (c, None), (1.0,))  # replays again into the same buffers
    torch.testing.assert_close(kept, b)


def test_keys_cover_shapes_dtypes_static_arguments_and_missing_tensors():
    graphs = _CPUGraphs()
    x = torch.randn(2, 3)
    for _ in range(2):
        graphs(_affine, (x, None), (1.0,))
        graphs(_affine, (x, None), (2.0,))
        graphs(_affine, (x.double(), None), (1.0,))
        graphs(_affine, (torch.randn(4, 3), None), (1.0,))
        graphs(_affine, (x, torch.zeros(2, 3)), (1.0,))
    assert graphs.captures == 5 and len(graphs) == 5


def test_least_recently_used_graphs_go_first():
    graphs = _CPUGraphs(max_graphs=2)
    for shape in [(1, 3), (2, 3)]:
        for _ in range(2):
            graphs(_affine, (torch.randn(shape), None), (1.0,))
    graphs(_affine, (torch.randn(1, 3), None), (1.0,))  # (1, 3) used last: (2, 3) is the least recent
    for _ in range(2):
        graphs(_affine, (torch.randn(3, 3), None), (1.0,))
    assert len(graphs) == 2 and graphs.captures == 3
    replays = graphs.replays
    graphs(_affine, (torch.randn(1, 3), None), (1.0,))  # kept: replays
    assert graphs.replays == replays + 1
    graphs(_affine, (torch.randn(2, 3), None), (1.0,))  # evicted: seen afresh, runs eagerly
    assert graphs.replays == replays + 1 and graphs.captures == 3
    graphs.clear()
    assert len(graphs) == 0 and not graphs._entries
    with pytest.raises(ValueError, match="max_graphs"):
        PlanGraphs(max_graphs=0)


def test_the_autocast_state_is_part_of_the_key(monkeypatch):
    graphs = _CPUGraphs()
    x = torch.randn(2, 3)
    for state in [(False, torch.float16), (False, torch.float16), (True, torch.bfloat16), (True, torch.bfloat16)]:
        monkeypatch.setattr(plan_graphs, "autocast_state", lambda state=state: state)
        graphs(_affine, (x, None), (1.0,))
    assert graphs.captures == 2


def test_a_capture_made_in_inference_mode_replays_in_training():
    graphs = _CPUGraphs()
    with torch.inference_mode():
        for _ in range(2):
            graphs(_affine, (torch.randn(2, 3), None), (1.0,))
    x = torch.randn(2, 3)
    y, _ = graphs(_affine, (x, None), (1.0,))  # the copy into the buffers must not meet an inference tensor
    torch.testing.assert_close(y, x)


def test_a_failed_capture_runs_eagerly_from_then_on():
    graphs = _CPUGraphs()
    graphs.fail = True
    x = torch.randn(2, 3)
    graphs(_affine, (x, None), (2.0,))
    with pytest.warns(RuntimeWarning, match="capture refused"):
        y, _ = graphs(_affine, (x, None), (2.0,))
    graphs.fail = False
    z, _ = graphs(_affine, (x, None), (2.0,))  # not retried
    torch.testing.assert_close(y, 2.0 * x)
    torch.testing.assert_close(z, 2.0 * x)
    assert graphs.captures == 1 and graphs.replays == 0 and len(graphs) == 0


def test_off_cuda_the_function_runs_directly():
    graphs = PlanGraphs()
    x = torch.randn(2, 3)
    for _ in range(3):
        y, _ = graphs(_affine, (x, None), (3.0,))
        torch.testing.assert_close(y, 3.0 * x)
    assert len(graphs) == 0 and not graphs._entries


def test_copies_of_a_model_start_without_graphs():
    graphs = _CPUGraphs(max_graphs=3)
    for _ in range(2):
        graphs(_affine, (torch.randn(2, 2), None), (1.0,))
    assert len(graphs) == 1
    copied, pickled = copy.deepcopy(graphs), pickle.loads(pickle.dumps(graphs))
    for fresh in (copied, pickled):
        assert type(fresh) is _CPUGraphs and fresh.max_graphs == 3 and len(fresh) == 0 and not fresh._entries


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("window", [None, 4])
def test_replayed_plan_merges_as_the_plan_without_graphs(padded, window):
    torch.manual_seed(0)
    graphs = _CPUGraphs()
    b, n, c, n_out = 3, 12, 8, 8
    for step in range(4):  # eager, capture, replay, replay: each with new metric, states, sizes and, padded, r
        sizes = torch.randint(1, 4, (b, n)).float()  # merged tokens' sizes differ from call to call
        if padded:
            sizes[1, 9 - step:] = 0
            sizes[2, 5 + step:] = 0
        lengths = (sizes > 0).sum(dim=1)
        r = torch.minimum(lengths // 2 - step % 2, torch.full_like(lengths, n - n_out)) if padded else n - n_out
        metric, x = torch.randn(b, n, c), torch.randn(b, n, c)
        kwargs = dict(window=window, padded=padded, return_log_sizes=True)
        (want, _), (got, _) = (bipartite_soft_matching(metric, sizes, r, n_out, **kwargs, graphs=g) for g in (None, graphs))
        torch.testing.assert_close(got.sizes, want.sizes)
        torch.testing.assert_close(got.merge(x), want.merge(x))
        torch.testing.assert_close(got.unmerge(got.merge(x)), want.unmerge(want.merge(x)))
    assert graphs.captures == 1 and graphs.replays == 3


def _graphed_and_plain(monkeypatch, config: MAELREConfig, merges: bool = False) -> tuple[MAELRE, MAELRE, torch.Tensor]:
    """The same MAELRE with its merge sites through stand-in graphs (``merges``: plans and merges, else plans) and
    without, and a padding mask ``[2, 40]``."""
    monkeypatch.setattr(plan_graphs, "MERGES", merges)
    monkeypatch.setattr(plan_graphs, "ENABLED", True)
    monkeypatch.setattr(maelre_module, "PlanGraphs", _CPUGraphs)
    torch.manual_seed(0)
    graphed = MAELRE(config)
    monkeypatch.setattr(plan_graphs, "ENABLED", False)
    plain = MAELRE(config)
    plain.load_state_dict(graphed.state_dict())
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 29:] = False
    return graphed, plain, mask


def test_maelre_with_replayed_plans_equals_maelre_without(monkeypatch):
    """The block path through PlanGraphs (stand-in graphs on the CPU): eager, capture, replays, and a padded batch."""
    graphed, plain, mask = _graphed_and_plain(monkeypatch, MAELREConfig(dim=16, depth=3, heads=2, switch_threshold=8, match_window=4))
    with torch.no_grad():
        for step in range(4):
            tokens = torch.randn(2, 40, 16)
            kwargs = {"mask": mask} if step % 2 else {}
            torch.testing.assert_close(graphed(tokens, **kwargs), plain(tokens, **kwargs))
    sites = [g for blk in graphed.blocks for g in blk.plan_graphs.values()]
    assert sum(g.replays for g in sites) > 0


def test_maelre_blocks_hold_plan_graphs_only_when_enabled(monkeypatch):
    config = MAELREConfig(dim=16, depth=2, heads=2, switch_threshold=8, match_window=4)
    assert all(not blk.plan_graphs for blk in MAELRE(config).blocks)
    monkeypatch.setattr(plan_graphs, "ENABLED", True)
    torch.manual_seed(0)
    model = MAELRE(config)
    assert all(set(blk.plan_graphs) == set(blk.sites) for blk in model.blocks)
    tokens = torch.randn(2, 32, 16)
    with torch.no_grad():  # on the CPU the graphs stand aside: the same output as without them, and no graph kept
        out = model(tokens)
        copy.deepcopy(model)
    monkeypatch.setattr(plan_graphs, "ENABLED", False)
    torch.manual_seed(0)
    plain = MAELRE(config)
    with torch.no_grad():
        torch.testing.assert_close(out, plain(tokens))
    assert all(len(g) == 0 for blk in model.blocks for g in blk.plan_graphs.values())


def test_a_block_replays_with_the_mode_it_was_built_with(monkeypatch):
    """``plan_graphs.building``: the mode at build time holds at forward time, whatever the mode is then."""
    monkeypatch.setattr(maelre_module, "PlanGraphs", _CPUGraphs)
    calls = []
    monkeypatch.setattr(maelre_module, "replayed_merge", lambda *a, **k: calls.append(1) or replayed_merge(*a, **k))
    config = MAELREConfig(dim=16, depth=3, heads=2, switch_threshold=8, match_window=4)
    torch.manual_seed(0)
    with plan_graphs.building("merge"):
        graphed = MAELRE(config)
    plain = MAELRE(config)
    plain.load_state_dict(graphed.state_dict())
    tokens = torch.randn(2, 40, 16)
    with torch.no_grad():
        for _ in range(3):  # eager, capture, replay: outside the block that built it
            torch.testing.assert_close(graphed(tokens), plain(tokens))
        assert calls and all(blk.replay_merges for blk in graphed.blocks)
        calls.clear()
        with plan_graphs.building("merge"):  # a mode at forward time does not change a block built without it
            plain(tokens)
            plain(tokens)
        assert not calls and not any(blk.plan_graphs or blk.replay_merges for blk in plain.blocks)
        with plan_graphs.building("1"):
            plans_only = MAELRE(config)
        plans_only(tokens)
        plans_only(tokens)
        assert not calls and all(blk.plan_graphs and not blk.replay_merges for blk in plans_only.blocks)


def test_building_restores_the_mode_and_names_bad_ones():
    before = plan_graphs.MODE, plan_graphs.ENABLED, plan_graphs.MERGES
    with pytest.raises(RuntimeError, match="inside"):
        with plan_graphs.building("merge"):
            assert plan_graphs.ENABLED and plan_graphs.MERGES and plan_graphs.MODE == "plans and merges"
            raise RuntimeError("inside")
    assert (plan_graphs.MODE, plan_graphs.ENABLED, plan_graphs.MERGES) == before
    with pytest.raises(ValueError, match="use one of 0, 1, merge"):
        with plan_graphs.building("yes"):
            pass
    assert (plan_graphs.MODE, plan_graphs.ENABLED, plan_graphs.MERGES) == before


@cuda
@pytest.mark.parametrize("padded", [False, True])
def test_cuda_graph_plan_equals_eager_plan(padded):
    torch.manual_seed(0)
    graphs = PlanGraphs()
    b, n, c, n_out = 4, 4096, 64, 3072
    for step in range(4):  # eager, capture, replay, replay: new metric, states, sizes and (padded) r each time
        sizes = torch.randint(1, 4, (b, n), device="cuda").float()
        if padded:
            sizes[1, 3000 - 100 * step:] = 0
        lengths = (sizes > 0).sum(dim=1)
        r = torch.minimum(lengths // 2 - step, torch.full_like(lengths, n - n_out)) if padded else n - n_out
        metric, x = torch.randn(b, n, c, device="cuda"), torch.randn(b, n, c, device="cuda", requires_grad=True)
        kwargs = dict(window=16, padded=padded, return_log_sizes=True)
        (want, want_log), (got, got_log) = (bipartite_soft_matching(metric, sizes, r, n_out, **kwargs, graphs=g) for g in (None, graphs))
        torch.testing.assert_close(got.sizes, want.sizes)
        torch.testing.assert_close(got_log, want_log)
        merged_want, merged_got = want.merge(x), got.merge(x)
        torch.testing.assert_close(merged_got, merged_want)
        g_want, = torch.autograd.grad(merged_want.square().sum(), x)
        g_got, = torch.autograd.grad(merged_got.square().sum(), x)
        torch.testing.assert_close(g_got, g_want)
    assert len(graphs) == 1


@cuda
@pytest.mark.parametrize("merges", [False, True])
def test_cuda_maelre_train_step_with_plan_graphs_equals_without(monkeypatch, merges):
    """Eager, capture, replays: each step new tokens, the same parameter gradients with the graphs as without."""
    config = MAELREConfig(dim=64, depth=4, heads=4, switch_threshold=256, match_window=16, rope=merges)
    monkeypatch.setattr(plan_graphs, "MERGES", merges)  # MAELRE_PLAN_GRAPHS=merge: the merges in the graph too
    models = []
    for enabled in (False, True):
        monkeypatch.setattr(plan_graphs, "ENABLED", enabled)
        torch.manual_seed(0)
        models.append(MAELRE(config).cuda())
    plain, graphed = models
    mask = torch.ones(2, 2048, dtype=torch.bool, device="cuda")
    mask[1, 1500:] = False
    for step in range(4):
        tokens = torch.randn(2, 2048, 64, device="cuda", generator=torch.Generator("cuda").manual_seed(step))
        kwargs = {"mask": mask} if step == 3 else {}  # a new key at the last step: eager again
        for model in models:
            model.zero_grad()
            model(tokens, **kwargs).square().sum().backward()
        for (name, p), q in zip(graphed.named_parameters(), plain.parameters(), strict=True):
            assert (p.grad is None) == (q.grad is None), name
            if q.grad is not None:  # atomic adds: order-dependent rounding
                torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=f"step {step}: {name}")
    assert sum(len(g) for blk in graphed.blocks for g in blk.plan_graphs.values()) > 0


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_replayed_merge_equals_the_plan_and_merges_without_graphs(padded, device):
    """``replayed_merge`` (plan and every merge in one graph; on the CPU a stand-in): the merged states, sizes, log
    sizes, positions and keys, and the states' gradient, as ``bipartite_soft_matching`` and its merges give them.
    Some padded rows keep more real tokens than ``n_out``: the tokens cut off get no gradient."""
    torch.manual_seed(0)
    graphs = _CPUGraphs() if device == "cpu" else PlanGraphs()
    b, n, c, n_out = 3, 12, 8, 8
    for step in range(4):  # eager, capture, replays: new inputs, sizes and r each time
        sizes = torch.randint(1, 4, (b, n), device=device).float()
        if padded:
            sizes[1, 9 - step:] = 0
        lengths = (sizes > 0).sum(dim=1)
        r = (torch.minimum(lengths // 2, torch.full_like(lengths, n - n_out)) - 1 - step % 2).clamp_min(0) if padded else n - n_out
        if padded:  # row 0 (12 real tokens) removes too few to fit n_out: its last kept tokens are cut off
            assert (lengths - r > n_out).any()
        metric, positions = torch.randn(b, n, c, device=device), torch.rand(b, n, device=device) * n
        keys = torch.randn(b, n, 4, device=device, dtype=torch.float64)
        x = torch.randn(b, n, c, device=device, requires_grad=True)
        plan, log_sizes = bipartite_soft_matching(metric, sizes, r, n_out, window=4, padded=padded, return_log_sizes=True)
        want = plan.merge(x)
        got, got_sizes, got_log, (got_positions, got_keys) = replayed_merge(
            graphs, x, [(positions, None), (keys, torch.float32)], metric, sizes, r, n_out, window=4, padded=padded
        )
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got_sizes, plan.sizes)
        if device == "cpu":
            assert got_log is None and log_sizes is None  # the PyTorch plan computes no log
        else:
            torch.testing.assert_close(got_log, log_sizes)
        torch.testing.assert_close(got_positions, plan.merge(positions))
        assert got_keys.dtype == torch.float32
        torch.testing.assert_close(got_keys, plan.merge(keys, dtype=torch.float32))
        weights = torch.randn_like(want)
        (g_want,) = torch.autograd.grad((want * weights).sum(), x)
        (g_got,) = torch.autograd.grad((got * weights).sum(), x)
        torch.testing.assert_close(g_got, g_want)
        assert not got_sizes.requires_grad and not got_keys.requires_grad
    assert len(graphs) == 1
    with pytest.raises(ValueError, match=r"x \[B, N, C\]"):
        replayed_merge(graphs, x[..., 0], [], metric, sizes, r, n_out, window=4, padded=padded)


def test_maelre_with_replayed_merges_trains_as_maelre_without(monkeypatch):
    """MAELRE_PLAN_GRAPHS=merge through stand-in graphs: the same outputs and parameter gradients, RoPE positions
    and the keys merged along too, unpadded and padded batches."""
    config = MAELREConfig(dim=16, depth=3, heads=2, switch_threshold=8, match_window=4, rope=True)
    graphed, plain, mask = _graphed_and_plain(monkeypatch, config, merges=True)
    for step in range(4):
        tokens = torch.randn(2, 40, 16)
        kwargs = {"mask": mask} if step % 2 else {}
        for model in (graphed, plain):
            model.zero_grad()
            model(tokens, **kwargs).square().sum().backward()
        for (name, p), q in zip(graphed.named_parameters(), plain.parameters(), strict=True):
            assert (p.grad is None) == (q.grad is None), name
            if q.grad is not None:
                torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert sum(g.replays for blk in graphed.blocks for g in blk.plan_graphs.values()) > 0

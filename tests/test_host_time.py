"""benchmarks/host_time.py: host time of the eager step by region, MAELRE against its twin; its wrappers come off afterwards."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

import maelre.backbones.maelre as maelre_backbone
import maelre.bench.ideal as ideal
import maelre.layers.triton_linear_attention as tla
import maelre.layers.triton_merge as tm
from maelre.bench.triton_stubs import StubKernel
from maelre.layers import merge
from maelre.layers.linear_attention import LinearAttention

_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("host_time", _ROOT / "benchmarks" / "host_time.py")
host_time = importlib.util.module_from_spec(_spec)
sys.modules["host_time"] = host_time
_spec.loader.exec_module(host_time)

TINY = ["--seq-lens", "256", "--batch", "1", "--dim", "16", "--heads", "2", "--depth", "4", "--warmup", "1", "--steps", "2", "--rounds", "2", "--device", "cpu"]
PLAN, TWIN = host_time.MERGE_PLAN, "maelre.twin"


def _originals() -> dict[str, object]:
    """Everything the tool or its stubs replace while they run, as it is outside them."""
    return {
        "bipartite_soft_matching": merge.bipartite_soft_matching,
        "maelre's bipartite_soft_matching": maelre_backbone.bipartite_soft_matching,
        "_merge": maelre_backbone.MAELREBlock.__dict__["_merge"],
        "maelre's exact_attention": maelre_backbone.exact_attention,
        "twin's exact_attention": ideal.exact_attention,
        "LinearAttention.forward": LinearAttention.__dict__["forward"],
        "JITFunction.run": None if host_time.JITFunction is None else host_time.JITFunction.__dict__["run"],  # None: no triton
        "StubKernel.run": StubKernel.__dict__["run"],
        "_MergeStates.backward": tm._MergeStates.__dict__["backward"],
        "replayed_merge": merge.replayed_merge,
        "maelre's replayed_merge": maelre_backbone.replayed_merge,
        "_ReplayedMerge.backward": merge._ReplayedMerge.__dict__["backward"],
        "_FusedLinearAttention.backward": tla._FusedLinearAttention.__dict__["backward"],
        **{f"triton_merge.{name}": getattr(tm, name) for name in ("match_window", "plan", "merge_states", "available", "triton", "_plan_kernel")},
        **{f"triton_linear_attention.{name}": getattr(tla, name) for name in ("fused_linear_attention", "available", "triton", "_state_kernel")},
    }


@pytest.fixture
def originals():
    before = _originals()
    yield before
    after = _originals()
    assert [k for k in before if after[k] is not before[k]] == []  # every wrapper and stub is gone


@pytest.mark.parametrize("stubs", [True, False], ids=["fused-stubs", "pytorch-paths"])
def test_regions_of_maelre_and_its_twin(tmp_path, originals, stubs):
    out, table = tmp_path / "host.json", tmp_path / "host.md"
    assert host_time.main([*TINY, *(["--fused-stubs"] if stubs else []), "--out", str(out), "--table", str(table)]) == 0
    document = json.loads(out.read_text())
    cases = {c["backbone"]: c for c in document["cases"]}
    assert set(cases) == {"maelre", TWIN} and document["meta"]["fused_stubs"] is stubs
    assert cases["maelre"]["regions"][PLAN]["calls"] > 0 and cases[TWIN]["regions"][PLAN]["calls"] == 0
    for case in cases.values():
        assert case["step_ms"] > 0 and case["step_ms_bare"] > 0 and len(case["round_ms"]) == 2
        for region, value in case["regions"].items():
            assert 0 <= value["ms"] <= case["step_ms"], (case["backbone"], region)  # inclusive: never above the step
    launches = cases["maelre"]["regions"][host_time.ALL_LAUNCHES]["calls"]
    if stubs:  # the stubs are timed as launches, per kernel; MAELRE launches the merge kernels besides the twin's attention ones
        assert cases["maelre"]["regions"]["triton launch: _plan_kernel"]["calls"] > 0 and launches > cases[TWIN]["regions"][host_time.ALL_LAUNCHES]["calls"] > 0
        assert cases["maelre"]["regions"]["backward: triton_merge._MergeStates"]["calls"] > 0
    else:  # the PyTorch paths: no launch, no fused function
        assert launches == 0 and cases["maelre"]["regions"]["triton_merge.plan"]["calls"] == 0
    (diff,) = document["differences"]
    assert (diff["backbone"], diff["twin"]) == ("maelre", TWIN)
    assert diff["regions"][PLAN]["ms"] == cases["maelre"]["regions"][PLAN]["ms"]  # the twin has no plan
    assert diff["step_ms"] == pytest.approx(cases["maelre"]["step_ms"] - cases[TWIN]["step_ms"])
    text = table.read_text()
    assert "## N=256, batch 1" in text and "| merge plan: merge.bipartite_soft_matching | " in text and "maelre - maelre.twin ms" in text


def test_wrappers_come_off_when_a_step_raises(tmp_path, originals, monkeypatch):
    def failing_when_instrumented(*args, **kwargs):
        step = make_step(*args, **kwargs)

        def run() -> None:
            step()
            if merge.bipartite_soft_matching is not originals["bipartite_soft_matching"]:
                raise RuntimeError("a step failed")

        return run

    make_step = host_time.make_step
    monkeypatch.setattr(host_time, "make_step", failing_when_instrumented)
    with pytest.raises(RuntimeError, match="a step failed"):
        host_time.main([*TINY, "--fused-stubs", "--backbones", "maelre", "--out", str(tmp_path / "host.json")])


def test_a_triton_launch_is_timed_under_its_kernel_name(originals, monkeypatch):
    """``kernel[grid](*args)`` reaches the wrapped ``JITFunction.run`` (here a dummy: no GPU), keyed by the kernel's function."""
    if host_time.JITFunction is None:
        pytest.skip("triton does not import here")
    launched = []
    monkeypatch.setattr(host_time.JITFunction, "run", lambda self, *args, grid, warmup, **kwargs: launched.append((self.fn.__name__, grid, args)))
    with host_time.instrumented(host_time.Tally()) as tally:
        tm._plan_kernel[(3,)](1, 2, BLOCK=4)
        tm._plan_kernel[(3,)](5)
        regions = tally.take()
    assert launched == [("_plan_kernel", (3,), (1, 2)), ("_plan_kernel", (3,), (5,))]
    assert regions["triton launch: _plan_kernel"][0] == 2 and regions[host_time.ALL_LAUNCHES][0] == 2

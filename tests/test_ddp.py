"""DDP on CPU: two processes over gloo, launched the way ``maelre fit`` is (Lightning re-runs the command).

One launch of ``tests/ddp_worker.py`` trains four runs in both ranks (see its docstring);
one test then checks them against one process and against each other. It is a single test
function, with one ``check_*`` helper per property, because pytest-xdist would run a
module-scoped launch once per worker.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddp_worker import BATCH, CRASH_STEP, MATCH, datasets, fit

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_single_thread")]

WORKER = Path(__file__).with_name("ddp_worker.py")
ROOT = WORKER.parent.parent


def _launch(out: Path, timeout: float = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "RANK"):
        env.pop(key, None)  # rank 0 must launch rank 1 itself, on a port of its own
    # a session of its own: on a timeout both ranks (rank 1 is rank 0's child) are killed together
    proc = subprocess.Popen([sys.executable, str(WORKER), str(out)], env=env, cwd=ROOT, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the DDP workers did not finish in {timeout} s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]


def _weights(out: Path, run: str, rank: int) -> dict[str, torch.Tensor]:
    return load_file(out / f"{run}-rank{rank}.safetensors")


def check_two_processes_at_batch_b_match_one_at_2b(out: Path, ranks: list[dict]) -> None:
    train, val = datasets()
    single = fit(train, val, devices=1, batch_size=2 * BATCH, **MATCH)
    ddp = _weights(out, "match", 0)
    assert ranks[0]["match"]["world_size"] == 2 and ranks[0]["match"]["global_step"] == single.global_step == 14
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(ddp[key], value, rtol=1e-5, atol=1e-6, msg=key)
    for got, want in zip(ranks[0]["match"]["history"], single.history):
        assert got["train/loss"] == pytest.approx(want["train/loss"], abs=1e-5)  # class-weighted global-batch means, short last batch included
        assert got["val/loss"] == pytest.approx(want["val/loss"], abs=1e-5) and got["val/acc"] == pytest.approx(want["val/acc"])


def check_validation_metrics_are_synced_over_both_shards(out: Path, ranks: list[dict]) -> None:
    for run in ("match", "full"):
        last = [r[run]["history"][-1] for r in ranks]
        assert last[0] == last[1]  # both ranks log the same, all-reduced values
        full_eval = ranks[0][run]["eval"]  # plain evaluation of the final weights on all 17 samples
        assert full_eval["n"] == 17
        assert last[0]["val/acc"] == pytest.approx(full_eval["acc"]) and last[0]["val/f1"] == pytest.approx(full_eval["f1"])
    # evaluate's loss is unweighted: comparable where the run has no class weights
    assert ranks[0]["full"]["history"][-1]["val/loss"] == pytest.approx(ranks[0]["full"]["eval"]["loss"], abs=1e-5)


def check_replicas_stay_identical_and_only_rank_0_writes_checkpoints(out: Path, ranks: list[dict]) -> None:
    for run in ("match", "full", "resumed"):
        a, b = _weights(out, run, 0), _weights(out, run, 1)
        assert all(torch.equal(a[k], b[k]) for k in a), run
    assert ranks[1]["writes"] == []
    assert {"step-0000002", "step-0000008", "best"} <= set(ranks[0]["writes"])


def check_killed_ddp_run_resumes_bit_identically(out: Path, ranks: list[dict]) -> None:
    # crashed after CRASH_STEP (9), resumed from step-0000008, mid-epoch 2
    assert ranks[0]["resumed"]["global_step"] == ranks[0]["full"]["global_step"] == 14 > CRASH_STEP
    assert sorted(p.name for p in (out / "killed" / "checkpoints").iterdir()) == sorted(p.name for p in (out / "full" / "checkpoints").iterdir())
    full, resumed = _weights(out, "full", 0), _weights(out, "resumed", 0)
    for key, value in full.items():
        assert torch.equal(resumed[key], value), key  # same shards, per-rank dropout streams, optimizer and schedule
    assert [row["step"] for row in ranks[0]["resumed"]["history"]] == [7, 14]  # history survives the resume


def check_recipe_run_under_ddp_writes_one_run_folder_from_rank_0(out: Path, ranks: list[dict]) -> None:
    assert [r["cli_exit"] for r in ranks] == [0, 0]
    base = out / "recipe_runs"
    assert sorted(p.name for p in base.iterdir()) == ["version_0"]  # rank 1, re-running the command, made no version_1
    results = json.loads((base / "version_0" / "results.json").read_text())
    assert results["environment"]["world_size"] == 2 and results["best_checkpoint"] is not None
    assert results["samples"]["test"] == 60 and sum(map(sum, results["confusion_matrix"])) == 60  # tested on every sample


def test_ddp_on_cpu_over_gloo(tmp_path):
    _launch(tmp_path)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    check_two_processes_at_batch_b_match_one_at_2b(tmp_path, ranks)
    check_validation_metrics_are_synced_over_both_shards(tmp_path, ranks)
    check_replicas_stay_identical_and_only_rank_0_writes_checkpoints(tmp_path, ranks)
    check_killed_ddp_run_resumes_bit_identically(tmp_path, ranks)
    check_recipe_run_under_ddp_writes_one_run_folder_from_rank_0(tmp_path, ranks)

"""One process of the CPU DDP test (``tests/test_ddp.py``): ``python tests/ddp_worker.py OUT_DIR``.

Started once by the test as rank 0; Lightning's launcher (``strategy="ddp"``) re-runs
this same command as rank 1, exactly as it re-runs ``maelre fit`` on a multi-GPU
machine, and the two processes train over the gloo backend. Both ranks run:

1. ``match``: a run without dropout, with SGD and class weights, at 4 samples per
   process (global batch 8), which the test compares with one process at batch 8 (SGD because the attention's
   key bias has an exactly-zero gradient, whose float noise AdamW would blow up to
   learning-rate-sized steps that differ between any two summation orders);
2. ``full``: a run with dropout, checkpointing every 2 steps;
3. ``killed``: the same run crashed after step 9, then resumed from its step-8 checkpoint;
4. ``maelre fit`` of the CLI tests' tiny recipe into versioned ``recipe_runs/``: rank 1
   runs the command too, and must write nothing.

Each rank writes ``rank{R}.json`` (histories, evaluations, the checkpoints it wrote)
and ``{run}-rank{R}.safetensors`` (final weights) into ``OUT_DIR``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from safetensors.torch import save_file

from crash_after import CrashAfter
from maelre.cli import main as cli_main
from maelre.engine import OptimConfig, SafeCheckpointIO, TrainerConfig, build_model, evaluate, fit_classifier, prepare_adapter, seed_everything

BATCH = 4  # per process; one process at 2 * BATCH is the reference
EPOCHS = 2
CRASH_STEP = 9  # mid-epoch 2 (7 steps an epoch); the newest checkpoint is step 8
MATCH = dict(dropout=0.0, optim=OptimConfig(name="sgd", lr=0.05, warmup_steps=2), class_weights=[1.0, 2.0, 0.5])


def varlen_samples(n: int, seed: int) -> list[tuple[np.ndarray, int]]:
    """3 classes of noisy sines of lengths 24-40, so ranks' batches differ in shape (and in dropout draws)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        y = i % 3
        t = np.arange(rng.integers(24, 41))
        x = np.sin(t * (0.2 + 0.35 * y) + rng.uniform(0, 2 * np.pi)) + (y - 1) + 0.5 * rng.standard_normal(len(t))
        out.append((x.astype(np.float32)[None], y))
    return out


def datasets() -> tuple[list, list]:
    """51 training samples (7 global batches of 8; the last, of 3, splits 2/1) and 17 validation samples
    (global batches of 16 and 1: rank 0 validates on 2 batches, rank 1 on 1)."""
    return varlen_samples(51, seed=0), varlen_samples(17, seed=1)


def fit(train: list, val: list, devices: int, batch_size: int, dropout: float, run_dir: Path | None = None,
        optim: OptimConfig | None = None, **kwargs):
    """A seeded tiny transformer trained for ``EPOCHS`` (in memory when ``run_dir`` is ``None``)."""
    seed_everything(0)
    adapter = prepare_adapter("timeseries", {"dim": 16}, train)
    model = build_model(adapter, "transformer", {"depth": 1, "heads": 2, "dropout": dropout}, num_classes=3, head_dropout=dropout)
    strategy = "ddp" if devices > 1 else "auto"
    cfg = TrainerConfig(max_epochs=EPOCHS, accelerator="cpu", devices=devices, strategy=strategy, checkpoint_every_n_steps=2, enable_progress_bar=False)
    return fit_classifier(model, train, val, cfg, optim or OptimConfig(lr=3e-3, warmup_steps=2), run_dir,
                          batch_size=batch_size, eval_batch_size=2 * batch_size, restore_best=False, **kwargs)


def tmp_recipe(out: Path) -> Path:
    """The CLI tests' tiny ItalyPowerDemand recipe, writing versioned runs under ``out/recipe_runs``."""
    from conftest import TINY_RECIPE as RECIPE

    path = out / "tiny_ts.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "output": {"run_dir": str(out / "recipe_runs"), "versioned": True}}))
    return path


def main(out: Path) -> None:
    torch.set_num_threads(1)
    train, val = datasets()
    writes: list[str] = []
    save = SafeCheckpointIO.save_checkpoint

    def recording_save(self, checkpoint, path, storage_options=None):
        writes.append(Path(path).name)
        save(self, checkpoint, path, storage_options)

    SafeCheckpointIO.save_checkpoint = recording_save
    record: dict = {}
    runs = {
        "match": MATCH,
        "full": dict(dropout=0.2, run_dir=out / "full"),
    }
    for name, kwargs in runs.items():
        result = fit(train, val, 2, BATCH, **kwargs)
        record[name] = {"history": result.history, "global_step": result.global_step, "world_size": result.extra["world_size"],
                        "eval": {k: v for k, v in evaluate(result.model, val, device="cpu").items() if k != "confusion"}}
        save_file(result.model.state_dict(), out / f"{name}-rank{dist.get_rank()}.safetensors")
    try:
        fit(train, val, 2, BATCH, dropout=0.2, run_dir=out / "killed", callbacks=[CrashAfter(CRASH_STEP)])
        raise AssertionError("the crash callback did not fire")
    except RuntimeError as err:
        if "simulated crash" not in str(err):
            raise
    resumed = fit(train, val, 2, BATCH, dropout=0.2, run_dir=out / "killed", resume=True)
    record["resumed"] = {"history": resumed.history, "global_step": resumed.global_step}
    save_file(resumed.model.state_dict(), out / f"resumed-rank{dist.get_rank()}.safetensors")
    record["writes"] = writes
    recipe = tmp_recipe(out)
    record["cli_exit"] = cli_main(["fit", str(recipe), "--no-progress", "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=2",
                                   "--set", "trainer.strategy=ddp", "--set", "trainer.max_epochs=1"])
    rank = dist.get_rank()
    (out / f".rank{rank}.json").write_text(json.dumps(record, indent=1))
    (out / f".rank{rank}.json").replace(out / f"rank{rank}.json")
    dist.barrier()  # rank 0 exits (and the test reads the files) only when rank 1 is done too


if __name__ == "__main__":
    main(Path(sys.argv[1]))

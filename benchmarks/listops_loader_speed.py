"""Speed of the ListOps training loader as a ``listops_sky levers`` run builds it (issue 14, CPU only).

    python benchmarks/listops_loader_speed.py                        # 2,000 generated examples in /tmp/listops_loader_speed
    python benchmarks/listops_loader_speed.py --workers 0,2,3 --out benchmarks/results/listops_loader_speed.json

The ListOps runs at Skyformer's configuration are bound by the CPU loader: every training
sample is a raw expression string that ``listops_shuffle`` reorders (``AugmentedSamples``),
the text adapter encodes (``EncodedDataset``) and ``BatchCollator`` pads into a batch. This
builds that loader with the engine's own functions from the recipe that ``lra_learn.sh
listops_sky levers 0`` hands to ``maelre``: the script is run with ``CHECK=1`` and a stub
``PYTHON`` that records the ``--set`` overrides, so the settings here are the run's own,
read from the script. The data is written by ``lra_learn.py listops ROOT --n N`` (the same
generator and TSV layout as the runs, at a small ``N``). Then it times

* per sample: the shuffle (``train[i]``, i.e. ``AugmentedSamples.__getitem__``), the
  adapter's ``encode`` and the collate (a batch of ``batch_size`` through ``BatchCollator``,
  divided by its size), each over the same samples in the same order;
* the whole loader (``make_dataloader`` with the arguments ``fit_classifier`` gives it for an
  eager fit) in samples/s, for each ``--workers`` count, over whole epochs after the first batch
  (worker start-up excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def run_overrides(root: Path, extra: list[str]) -> tuple[Path, list[str]]:
    """``(recipe path, --set overrides)`` of the maelre run of ``lra_learn.sh listops_sky levers 0``, then ``extra``."""
    with tempfile.TemporaryDirectory() as tmp:
        stub, args_file = Path(tmp) / "python", Path(tmp) / "args"
        stub.write_text(f"#!{sys.executable}\nimport json, os, sys\nopen(os.environ['ARGS_FILE'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
        stub.chmod(0o755)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHON": str(stub), "ARGS_FILE": str(args_file), "CHECK": "1",
               "BACKBONES": "maelre", "LISTOPS_ROOT": str(root)}
        subprocess.run(["bash", str(REPO / "benchmarks" / "lra_learn.sh"), "listops_sky", "levers", "0"], env=env, check=True,
                       capture_output=True, text=True, timeout=60)
        (call,) = [json.loads(line) for line in args_file.read_text().splitlines()]  # -m maelre.cli check RECIPE --set K=V ...
    sets = [call[i + 1] for i in range(4, len(call) - 1) if call[i] == "--set"]
    return REPO / call[3], sets + list(extra)


def build(root: Path, extra: list[str]):
    """``(recipe, adapter, training samples)`` as ``maelre fit`` builds them (``runner.run_recipe``)."""
    from maelre.engine.run_setup import _fitted_adapter, load_run_data, training_samples
    from maelre.engine.seed import seed_everything
    from maelre.recipe import load_recipe

    recipe_path, overrides = run_overrides(root, extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16-mixed on a CPU-only machine
        recipe = load_recipe(recipe_path, overrides)
    seed_everything(recipe.trainer.seed, recipe.trainer.deterministic)
    data = load_run_data(recipe)
    adapter = _fitted_adapter(recipe, data.train, data.modality, None)
    return recipe, adapter, training_samples(recipe, data)


def per_sample_ms(recipe, adapter, train, n: int) -> dict[str, float]:
    """Mean milliseconds per sample of the shuffle, the encode and the collate, over the first ``n`` samples."""
    from maelre.engine.data import BatchCollator

    collate = BatchCollator(adapter, recipe.model.two_tower)
    batch = recipe.data.batch_size
    torch.manual_seed(0)
    t0 = time.perf_counter()
    raw = [train[i] for i in range(n)]
    t1 = time.perf_counter()
    items = [(adapter.encode(x), y) for x, y in raw]
    t2 = time.perf_counter()
    for start in range(0, n - batch + 1, batch):
        collate(items[start : start + batch])
    t3 = time.perf_counter()
    collated = n // batch * batch
    return {"shuffle": (t1 - t0) * 1e3 / n, "encode": (t2 - t1) * 1e3 / n, "collate": (t3 - t2) * 1e3 / collated,
            "total": (t1 - t0 + t2 - t1) * 1e3 / n + (t3 - t2) * 1e3 / collated}


def loader_samples_per_s(recipe, adapter, train, workers: int, epochs: int) -> float:
    """Samples/s of the training loader of an eager fit (``fit_classifier``'s arguments), first batch excluded."""
    from maelre.engine.data import make_dataloader

    loader = make_dataloader(train, adapter, recipe.data.batch_size, shuffle=True, seed=recipe.trainer.seed, num_workers=workers,
                             two_tower=recipe.model.two_tower, bucket_by_length=recipe.data.bucket_by_length, cache=recipe.data.cache)
    samples, started = 0, None
    for _ in range(epochs):  # the loader moves to the next epoch itself
        for batch, labels in loader:
            if started is None:  # worker start-up and the first batch
                started = time.perf_counter()
                continue
            samples += len(labels)
    return samples / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "listops_loader_speed")
    parser.add_argument("--n", type=int, default=2000, help="examples written by lra_learn.py listops (train is 96%%)")
    parser.add_argument("--samples", type=int, default=640, help="samples of the per-sample split")
    parser.add_argument("--workers", default="0,2", help="comma-separated num_workers values of the loader timing")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the loader timing")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra KEY=VALUE override (after the run's)")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON")
    args = parser.parse_args(argv)

    os.chdir(REPO)
    subprocess.run([sys.executable, "benchmarks/lra_learn.py", "listops", str(args.root), "--n", str(args.n)], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    torch.set_num_threads(1)
    recipe, adapter, train = build(args.root, args.sets)
    n = min(args.samples, len(train))
    split = per_sample_ms(recipe, adapter, train, n)
    loader = {int(w): loader_samples_per_s(recipe, adapter, train, int(w), args.epochs) for w in args.workers.split(",")}

    print(f"ListOps loader, {len(train)} training examples, augment_inputs={recipe.data.augment_inputs}, batch {recipe.data.batch_size}")
    print("| per sample (ms) | shuffle | encode | collate | total | samples/s one core |")
    print("|---|---|---|---|---|---|")
    print(f"| {n} samples | {split['shuffle']:.3f} | {split['encode']:.3f} | {split['collate']:.3f} | {split['total']:.3f} | {1e3 / split['total']:.0f} |")
    print("\n| loader | samples/s |\n|---|---|")
    for workers, rate in loader.items():
        print(f"| num_workers={workers} | {rate:.0f} |")
    result = {"train_examples": len(train), "samples": n, "per_sample_ms": split, "loader_samples_per_s": loader,
              "cpu": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()

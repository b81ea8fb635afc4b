"""Training engine: data order and resumable loading, LR schedule, checkpoints, fit/evaluate/predict, exact resume."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import maelre.engine.resumable as resumable_mod
from maelre.engine import (
    OptimConfig,
    TrainerConfig,
    build_model,
    evaluate,
    fit_classifier,
    latest_checkpoint,
    load_model,
    make_dataloader,
    predict_proba,
    prepare_adapter,
    save_model,
    seed_everything,
    split_validation,
)
from maelre.engine.checkpoint import SafeCheckpointIO, atomic_directory, check_weights_only_safe, load_weights
from maelre.engine.data import BatchCollator, ResumableBatchSampler
from maelre.engine.seed import rng_state, set_rng_state
from maelre.engine.task import ClassificationTask, LRSchedule

pytestmark = pytest.mark.usefixtures("torch_single_thread")

QUIET = dict(enable_progress_bar=False)


def sine_samples(n: int, length: int = 40, seed: int = 0, classes: int = 3) -> list[tuple[np.ndarray, int]]:
    """Class k: a noisy sine of frequency 0.2 + 0.35 k with random phase, shifted by k - 1 (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    out = []
    for i in range(n):
        y = i % classes
        x = np.sin(t * (0.2 + 0.35 * y) + rng.uniform(0, 2 * np.pi)) + (y - 1) + 0.5 * rng.standard_normal(length)
        out.append((x.astype(np.float32)[None], y))
    return out


def tiny_model(train, dropout: float = 0.0, backbone: str = "transformer"):
    adapter = prepare_adapter("timeseries", {"dim": 16}, train)
    return build_model(adapter, backbone, {"depth": 1, "heads": 2, "dropout": dropout}, num_classes=3, head_dropout=dropout)


# ---------------------------------------------------------------- schedule
def test_lr_schedule_matches_the_formulas():
    cosine = LRSchedule("cosine", warmup=4, total=24, min_ratio=0.1)
    assert [cosine(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    for step in (4, 10, 17, 24):
        progress = (step - 4) / 20
        assert cosine(step) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
    assert cosine(100) == pytest.approx(0.1)
    linear = LRSchedule("linear", warmup=0, total=10)
    assert [linear(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    assert LRSchedule("constant", warmup=2, total=0)(50) == 1.0
    rsqrt = LRSchedule("rsqrt", warmup=8000, total=20000)  # LRA text: 0.05 * min(1, s / 8000) / sqrt(max(s, 8000))
    peak = 0.05 / math.sqrt(8000)
    for step in (8000, 12000, 19999):
        assert peak * rsqrt(step) == pytest.approx(0.05 / math.sqrt(step))
    assert OptimConfig(warmup_fraction=0.1).warmup_for(200) == 20
    with pytest.raises(ValueError, match="either warmup_steps or warmup_fraction"):
        OptimConfig(warmup_steps=5, warmup_fraction=0.1)


def test_weight_decay_spares_biases_and_norms_and_schedule_spans_the_budget():
    train = sine_samples(30)
    model = tiny_model(train)
    task = ClassificationTask(model, OptimConfig(weight_decay=0.1), 3, batches_per_epoch=lambda: 7)
    task.trainer = type("T", (), {"accumulate_grad_batches": 2, "max_epochs": 3, "max_steps": -1})()
    assert task.total_training_steps() == 12  # ceil(7 / 2) * 3
    task.trainer.max_steps = 5
    assert task.total_training_steps() == 5
    groups = task.configure_optimizers()["optimizer"].param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1 and not name.endswith(".bias")), name


# ---------------------------------------------------------------- data
def test_sampler_orders_are_permutations_fixed_by_seed_and_epoch():
    sampler = ResumableBatchSampler(23, 5, shuffle=True, seed=3)
    epoch0 = list(sampler)
    assert sorted(i for b in epoch0 for i in b) == list(range(23)) and len(epoch0) == len(sampler) == 5
    sampler.set_epoch(1)
    assert list(sampler) != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0 == list(ResumableBatchSampler(23, 5, shuffle=True, seed=3))
    sampler.start_at(0, 3)
    assert list(sampler) == epoch0[3:]
    assert list(sampler) == epoch0  # the skip applies once
    assert [i for b in ResumableBatchSampler(7, 3, shuffle=False) for i in b] == list(range(7))


def _shards(monkeypatch, world: int, **kwargs) -> list[list[list[int]]]:
    """Every rank's batches of ``ResumableBatchSampler(**kwargs)`` under a faked ``world``-process group."""
    shards = []
    for rank in range(world):
        monkeypatch.setattr(resumable_mod, "_world", lambda rank=rank: (rank, world))
        sampler = ResumableBatchSampler(**kwargs)
        shards.append(list(sampler))
        assert len(shards[-1]) == len(sampler), (rank, world)
    monkeypatch.setattr(resumable_mod, "_world", lambda: (0, 1))
    return shards


@pytest.mark.parametrize("lengths", [None, list(range(40, 0, -1))], ids=["plain", "bucketed"])
def test_sampler_shards_global_batches_like_one_process(monkeypatch, lengths):
    # 40 samples, 4 per process x 3 processes: global batches of 12, 12, 12 and a short one of 4, split 2/1/1
    shards = _shards(monkeypatch, 3, num_samples=40, batch_size=4, shuffle=True, seed=1, lengths=lengths, bucket_batches=2)
    assert sorted(len(b) for s in shards for b in s) == [1, 1, 2] + [4] * 9
    assert sorted(i for s in shards for b in s for i in b) == list(range(40))  # no duplicates, none lost
    single = list(ResumableBatchSampler(40, 12, shuffle=True, seed=1, lengths=lengths, bucket_batches=2))
    assert [shards[0][k] + shards[1][k] + shards[2][k] for k in range(4)] == single  # step k = one process's batch k


def test_sampler_short_last_batch_under_ranks(monkeypatch):
    # 38 samples at 4 x 3: the last global batch has 2 samples, fewer than the 3 processes
    train = _shards(monkeypatch, 3, num_samples=38, batch_size=4, shuffle=True, seed=0)
    assert [len(s) for s in train] == [3, 3, 3]  # training: same step count everywhere, the 2 leftovers dropped
    assert len({i for s in train for b in s for i in b}) == 36
    evaluation = _shards(monkeypatch, 3, num_samples=38, batch_size=4, shuffle=False, for_eval=True)
    assert [len(s) for s in evaluation] == [4, 4, 3]  # evaluation keeps every sample once
    assert sorted(i for s in evaluation for b in s for i in b) == list(range(38))
    assert [len(s) for s in _shards(monkeypatch, 3, num_samples=38, batch_size=4, shuffle=True, drop_last=True)] == [3, 3, 3]
    unsharded = _shards(monkeypatch, 2, num_samples=10, batch_size=4, shuffle=False, shard=False)
    assert unsharded[0] == unsharded[1] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    with pytest.raises(ValueError, match="fewer devices"):
        _shards(monkeypatch, 3, num_samples=2, batch_size=4, shuffle=True)


def test_spawned_ddp_is_refused():
    with pytest.raises(ValueError, match="ddp_spawn is not supported"):
        TrainerConfig(strategy="ddp_spawn")


def test_length_bucketing_cuts_padding_and_keeps_every_sample():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 200, size=400).tolist()
    plain = ResumableBatchSampler(400, 16, shuffle=True, seed=0)
    bucketed = ResumableBatchSampler(400, 16, shuffle=True, seed=0, lengths=lengths, bucket_batches=10)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    assert sorted(i for b in bucketed for i in b) == list(range(400))
    assert padding(list(bucketed)) < 0.5 * padding(list(plain))


def test_loader_state_resumes_position_and_random_state():
    train = sine_samples(30)
    adapter = prepare_adapter("timeseries", {"dim": 8}, train)

    def loader():
        return make_dataloader(train, adapter, batch_size=4, shuffle=True, seed=5)

    original = loader()
    it = iter(original)
    for _ in range(3):
        next(it)
    state = original.state_dict()
    assert (state["epoch"], state["batches"]) == (0, 3)
    _, labels = next(it)
    expected = [labels.tolist()], torch.rand(3)  # the batch after the checkpoint, then a dropout-like draw
    expected[0].extend(y.tolist() for _, y in it)

    torch.manual_seed(123)  # scramble the generators: the loader must restore them
    resumed = loader()
    resumed.load_state_dict(state)
    it = iter(resumed)
    _, labels = next(it)
    got = [labels.tolist()], torch.rand(3)
    got[0].extend(y.tolist() for _, y in it)
    assert got[0] == expected[0] and torch.equal(got[1], expected[1])
    assert resumed.state_dict()["epoch"] == 1  # handing out the last batch moved to the next epoch
    assert len(list(resumed)) == len(resumed) == 8  # which starts from its first batch


def test_rng_state_round_trips_every_generator():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    check_weights_only_safe(state)
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_collate_gives_labels_and_two_tower_batches():
    train = sine_samples(6)
    adapter = prepare_adapter("timeseries", {"dim": 8}, train)
    items = [(adapter.encode(x), y) for x, y in train[:3]]
    batch, labels = BatchCollator(adapter)(items)
    assert labels.tolist() == [0, 1, 2] and batch["mask"].shape[0] == 3
    pairs = [((adapter.encode(x), adapter.encode(x[:, :20])), y) for x, y in train[:2]]
    batch, labels = BatchCollator(adapter, two_tower=True)(pairs)
    assert set(batch) == {"left", "right"} and batch["left"]["mask"].shape == (2, 40) and batch["right"]["mask"].shape == (2, 20)


def test_collate_rejects_nan_and_empty_rows_with_the_fix():
    """Value checks run where the batch is built (the backbone's forward skips them)."""
    adapter = prepare_adapter("timeseries", {"dim": 8}, sine_samples(3))
    good = adapter.encode(sine_samples(1)[0][0])
    nan = {**good, "values": good["values"].clone()}
    nan["values"][5, 0] = float("nan")
    with pytest.raises(ValueError, match=r"timeseries: tokens contain NaN or inf in batch rows \[1\].*nan_policy"):
        BatchCollator(adapter)([(good, 0), (nan, 1)])
    padded = {**nan, "mask": nan["mask"].clone()}
    padded["mask"][5] = False  # NaN under padding is fine
    BatchCollator(adapter)([(good, 0), (padded, 1)])
    empty = {**good, "mask": torch.zeros_like(good["mask"])}
    with pytest.raises(ValueError, match=r"rows \[0\] are all padding; drop empty sequences"):
        BatchCollator(adapter, two_tower=True)([((empty, good), 0)])


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])  # inductor: ~100 s of C++ builds on CPU
def test_compiled_steps_match_eager(backend, monkeypatch):
    """``trainer.compile``: the task's compiled forward gives eager's logits and gradients; the state dict is unchanged.

    ``aot_eager`` traces the same forward and backward graphs as inductor (dynamo + AOTAutograd)
    without generating code; ``inductor`` also checks the generated kernels.
    """
    if backend != "inductor":
        compile_ = torch.compile
        monkeypatch.setattr(torch, "compile", lambda model, mode: compile_(model, backend=backend, fullgraph=True))
    train = sine_samples(4)
    model = tiny_model(train)
    batch, labels = BatchCollator(model.adapter)([(model.adapter.encode(x), y) for x, y in train])
    task = ClassificationTask(model, OptimConfig(), 3, compile="default")
    assert set(task.state_dict()) == set(ClassificationTask(model, OptimConfig(), 3).state_dict())
    grads = []
    for forward in (model, task):
        model.zero_grad()
        logits = forward(batch)
        F.cross_entropy(logits, labels).backward()
        grads.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (eager, eager_grads), (compiled, compiled_grads) = grads
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=1e-5)
    for got, want in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert TrainerConfig(compile=True).compile == "default"
    with pytest.raises(ValueError, match="compile must be false, true or one of"):
        TrainerConfig(compile="fast")


def test_split_validation_is_stratified_and_disjoint():
    samples = sine_samples(60)
    train, val = split_validation(samples, 0.2, seed=0)
    assert len(val) == 12 and len(train) == 48
    assert sorted(train.indices + val.indices) == list(range(60))
    assert np.bincount([y for _, y in val]).tolist() == [4, 4, 4]


# ---------------------------------------------------------------- checkpoints
def test_model_checkpoint_round_trip(tmp_path):
    train = sine_samples(30)
    model = tiny_model(train)
    save_model(tmp_path / "ckpt", model, model.spec, ["a", "b", "c"], recipe={"name": "x"}, meta={"note": 1})
    loaded = load_model(tmp_path / "ckpt")
    assert loaded.classes == ["a", "b", "c"] and loaded.recipe == {"name": "x"} and loaded.meta["note"] == 1
    assert loaded.spec == model.spec
    assert loaded.model.adapter.preprocessing_state() == model.adapter.preprocessing_state()
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    inputs = [x for x, _ in train[:5]]
    np.testing.assert_array_equal(predict_proba(loaded.model, inputs, device="cpu"), predict_proba(model, inputs, device="cpu"))


def test_safe_checkpoint_io_is_pickle_free(tmp_path):
    io = SafeCheckpointIO()
    weights = {"model.w": torch.randn(3, 2), "model.b": torch.zeros(2)}
    ckpt = {"state_dict": weights, "epoch": 1, "global_step": 7, "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]}]}
    io.save_checkpoint(ckpt, tmp_path / "c")
    state = torch.load(tmp_path / "c" / "training_state.pt", weights_only=True)
    assert state["global_step"] == 7 and "state_dict" not in state
    assert set(load_weights(tmp_path / "c" / "model.safetensors")) == {"w", "b"}
    back = io.load_checkpoint(tmp_path / "c")
    assert torch.equal(back["state_dict"]["model.w"], weights["model.w"]) and back["optimizer_states"][0]["param_groups"][0]["betas"] == (0.9, 0.99)
    with pytest.raises(TypeError, match=r"training state\.bad"):
        io.save_checkpoint({**ckpt, "bad": object()}, tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_atomic_directory_keeps_the_old_copy_on_failure(tmp_path):
    target = tmp_path / "t"
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "f").write_text("new")
            raise RuntimeError("crash while writing")
    assert (target / "f").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


# ---------------------------------------------------------------- training
def test_in_memory_fit_learns_and_predicts_in_order():
    seed_everything(0)
    train, val, test = sine_samples(90, seed=0), sine_samples(30, seed=1), sine_samples(30, seed=2)
    model = tiny_model(train)
    result = fit_classifier(model, train, val, TrainerConfig(max_epochs=6, **QUIET), OptimConfig(lr=5e-3, warmup_steps=3), batch_size=16)
    assert result.global_step == 6 * 6 and len(result.history) == 6
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    assert result.best_score == max(row["val/acc"] for row in result.history)
    metrics = evaluate(result.model, test, device="cpu")
    assert metrics["acc"] >= 0.6  # chance is 1/3
    proba = predict_proba(result.model, [x for x, _ in test], batch_size=7, device="cpu")
    assert proba.shape == (30, 3) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert (proba.argmax(1) == np.array([y for _, y in test])).mean() == pytest.approx(metrics["acc"])
    assert np.asarray(metrics["confusion"]).sum() == 30
    assert result.throughput["samples_seen"] == 6 * 90 and result.peak_memory["bytes"] > 0


def test_fused_adamw_is_an_option():
    model = tiny_model(sine_samples(6))
    from maelre.engine.task import build_optimizer

    assert build_optimizer(model, OptimConfig(fused=True)).defaults["fused"] is True
    assert not build_optimizer(model, OptimConfig()).defaults.get("fused")


def _fit_to(run_dir, train, val, resume=False, crash=None):
    seed_everything(0)
    model = tiny_model(train, dropout=0.2)
    cfg = TrainerConfig(max_epochs=3, checkpoint_every_n_steps=3, **QUIET)
    return fit_classifier(model, train, val, cfg, OptimConfig(lr=3e-3, warmup_steps=2), run_dir, batch_size=8,
                          resume=resume, callbacks=[crash] if crash else [], restore_best=False)


@pytest.mark.parametrize("crash_step, last", [
    (11, "step-0000009"),  # mid-epoch 2; last checkpoint mid-epoch
    (9, "step-0000008"),  # the crash comes before step 9's checkpoint: the last one is epoch 1's end
])
def test_killed_run_resumes_exactly(tmp_path, crash_after, crash_step, last):
    train, val = sine_samples(60), sine_samples(24, seed=1)
    full = _fit_to(tmp_path / "full", train, val)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _fit_to(tmp_path / "killed", train, val, crash=crash_after(crash_step))
    assert latest_checkpoint(tmp_path / "killed").name == last
    resumed = _fit_to(tmp_path / "killed", train, val, resume=True)
    assert resumed.global_step == full.global_step == 24
    for key, value in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key  # same data order, dropout, optimizer, schedule
    assert [row["step"] for row in resumed.history] == [8, 16, 24]  # history survives the resume

"""Training levers for ListOps and Pathfinder: operand shuffling, flips, a curriculum, standardised pixels."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from maelre.engine.data import ResumableBatchSampler
from maelre.engine.runner import load_run_data, run_recipe, training_samples
from maelre.engine.train_data import AugmentedSamples, CurriculumSamples
from maelre.recipe import RecipeError, parse_recipe
from modalities import create_adapter
from modalities.datasets.listops import evaluate_listops, generate_listops, shuffle_operands
from modalities.datasets.pathfinder import generate_pathfinder, markers_connected

pytestmark = pytest.mark.usefixtures("torch_single_thread")

PATHFINDER = {
    "data": {"dataset": {"name": "pathfinder", "n_train": 8, "n_val": 4, "n_test": 4}, "adapter": {"name": "pixels", "max_len": 1024},
             "batch_size": 4},
    "model": {"backbone": "transformer", "dim": 16, "depth": 1, "heads": 2},
    "trainer": {"max_epochs": 3, "enable_progress_bar": False, "accelerator": "cpu"},
}


class _Identity:
    """Increasing keys: every argument keeps its place."""

    def random(self, n: int) -> np.ndarray:
        return np.arange(n) / max(n, 1)


def test_shuffled_operands_keep_the_evaluated_label():
    samples = generate_listops(30, seed=3, min_len=20, max_len=300, max_args=5)
    changed = 0
    for text, label in samples:
        assert shuffle_operands(text, _Identity()) == text  # the writer reproduces LRA's serialisation exactly
        shuffled = shuffle_operands(text, np.random.default_rng(0))
        assert evaluate_listops(shuffled) == label
        assert sorted(shuffled.split()) == sorted(text.split())
        changed += shuffled != text
    assert changed > 20
    for malformed, error in [("[MAX 1 2", "never closed"), (") [MAX 1 2 ] (", "unbalanced"), ("[MAX ]", "no arguments"),
                             ("[MAX 1 ] 2", "one top-level value"), ("[MAX 1 x ]", "unknown token"), ("1 ]", "without an open")]:
        with pytest.raises(ValueError, match=error):
            shuffle_operands(malformed, np.random.default_rng(0))


def test_flips_keep_the_pathfinder_label():
    images = generate_pathfinder(6, seed=1)
    flipped = AugmentedSamples(images, ["hflip", "vflip"])
    torch.manual_seed(0)
    for _ in range(3):
        for i, (image, label) in enumerate(images):
            out, y = flipped[i]
            assert y == label and markers_connected(out) == bool(label)
            assert sorted(out.ravel().tolist()) == sorted(image.ravel().tolist())
    with pytest.raises(ValueError, match="needs images"):
        AugmentedSamples([("( [MAX 1 2 ] )", 2)], ["hflip"])
    with pytest.raises(ValueError, match="needs ListOps expression strings"):
        AugmentedSamples(images, ["listops_shuffle"])


def test_bucket_lengths_of_augmented_listops_come_from_the_raw_expressions():
    """Measuring draws no augmentation (that took minutes for 96,000 examples) and leaves the random stream alone."""
    from maelre.engine.data import make_dataloader, sample_lengths

    samples = generate_listops(20, seed=5, min_len=20, max_len=200, max_args=5)
    adapter = create_adapter("text", dim=8, tokenizer="word", vocab_size=32, min_frequency=1, max_len=256, ignore_words=["(", ")"])
    adapter.fit([x for x, _ in samples])
    augmented = AugmentedSamples(samples, ["listops_shuffle"])
    draws = []
    augmented.transforms.append(draws.append)  # records any read through the augmentations
    state = torch.get_rng_state()
    lengths = sample_lengths(augmented, adapter)
    make_dataloader(augmented, adapter, 4, shuffle=True, bucket_by_length=True)
    assert not draws and torch.equal(torch.get_rng_state(), state)
    assert lengths == [len(adapter.encode(shuffle_operands(x, np.random.default_rng(i)))["ids"]) for i, (x, _) in enumerate(samples)]


def test_curriculum_reads_each_stage_for_its_epochs():
    stages = [[(f"s{s}-{i}", 0) for i in range(5)] for s in range(3)]
    curriculum = CurriculumSamples(stages, [2, 1])
    sampler = ResumableBatchSampler(len(curriculum), 2, shuffle=True, index_offset=curriculum.index_offset)
    seen = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        seen.append({curriculum[i][0].split("-")[0] for batch in sampler for i in batch})
    assert seen == [{"s0"}, {"s0"}, {"s1"}, {"s2"}, {"s2"}]
    with pytest.raises(ValueError, match="same number"):
        CurriculumSamples([stages[0], stages[1][:3]], [1])


def test_pixel_linear_embedding_standardises_with_fitted_statistics():
    images = [np.full((4, 4), v, dtype=np.uint8) for v in (0, 0, 0, 255)]
    adapter = create_adapter("pixels", dim=8, max_len=16, pixel_embed="linear")
    batch = adapter.collate([adapter.encode(x) for x in images])
    with pytest.raises(ValueError, match="call adapter.fit"):
        adapter(batch)
    adapter.fit(images)
    assert adapter.value_mean == pytest.approx([63.75]) and adapter.value_std[0] == pytest.approx(np.std([0] * 48 + [255] * 16, ddof=1))
    restored = create_adapter("pixels", dim=8, max_len=16, pixel_embed="linear")
    restored.load_state_dict(adapter.state_dict())
    restored.load_preprocessing_state(adapter.preprocessing_state())
    tokens, _ = restored(batch)
    assert torch.equal(tokens, adapter(batch)[0]) and tokens.shape == (4, 16, 8)
    with pytest.raises(ValueError, match="rgb_embed applies to pixel_embed='table'"):
        create_adapter("pixels", dim=8, channels="rgb", rgb_embed="linear", pixel_embed="linear")


def test_recipe_checks_augmentations_and_curriculum():
    def error(**data) -> str:
        raw = copy.deepcopy(PATHFINDER)
        raw["data"].update(data)
        with pytest.raises(RecipeError) as info:
            parse_recipe(raw)
        return str(info.value)

    assert "did you mean 'hflip'" in error(augment_inputs=["hflp"]).lower()
    assert "data.cache=false" in error(augment_inputs=["hflip"], cache=True)
    assert "data.curriculum[0]" in error(curriculum=[{"epochs": 1}])
    assert "data.curriculum[0].dataset: expected a mapping" in error(curriculum=[{"epochs": 1, "dataset": "curv_baseline"}])
    assert "data.curriculum[0].dataset.name" in error(curriculum=[{"epochs": 1, "dataset": {"name": "listops"}}])
    assert "data.curriculum[0].epochs" in error(curriculum=[{"epochs": 0, "dataset": {"difficulty": "curv_baseline"}}])


def test_pathfinder_run_with_curriculum_flips_and_standardised_pixels(tmp_path):
    raw = copy.deepcopy(PATHFINDER)
    raw["data"] |= {"augment_inputs": ["hflip", "vflip"], "curriculum": [{"epochs": 1, "dataset": {"difficulty": "curv_baseline"}}]}
    raw["data"]["adapter"]["pixel_embed"] = "linear"
    recipe = parse_recipe(raw)
    data = load_run_data(recipe)
    train = training_samples(recipe, data)
    assert isinstance(train, AugmentedSamples) and isinstance(train.samples, CurriculumSamples)
    easy, hard = train.samples.stages
    assert hard is data.train and not any(np.array_equal(easy[i][0], hard[i][0]) for i in range(len(hard)))
    raw["trainer"]["val_every_n_steps"] = 3
    results = run_recipe(parse_recipe(raw), run_dir=tmp_path / "run", progress=False)
    assert results["global_step"] == 6 and results["samples"]["train"] == 8
    metrics = pd.read_csv(next((tmp_path / "run" / "logs").glob("version_*/metrics.csv")))
    validations = metrics.dropna(subset=["val/acc"])
    assert validations["step"].tolist() == [2, 5]  # every 3 batches, across the 2-batch epochs
    # the best of every validation, also one the per-epoch history does not keep (step 2 is mid-epoch)
    assert results["metrics"]["val/best_acc"] == pytest.approx(validations["val/acc"].max())


def test_best_validation_is_the_best_checkpoints_score_not_the_epoch_history(tmp_path, monkeypatch):
    """The history keeps one validation per epoch (the last); with validations every few steps the
    best one can fall between, so ``val/best_acc`` comes from the best checkpoint's score."""
    import maelre.engine.runner as runner

    real_fit = runner.fit_classifier
    seen = {}

    def fit_with_an_epoch_history_that_missed_the_best(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        seen["best"] = result.best_score
        result.history = [{**row, "val/acc": -1.0} if "val/acc" in row else row for row in result.history]
        return result

    monkeypatch.setattr(runner, "fit_classifier", fit_with_an_epoch_history_that_missed_the_best)
    raw = copy.deepcopy(PATHFINDER)
    raw["trainer"] |= {"max_epochs": 2, "val_every_n_steps": 1}
    results = run_recipe(parse_recipe(raw), run_dir=tmp_path / "run", progress=False)
    assert seen["best"] is not None and results["metrics"]["val/best_acc"] == seen["best"]


def test_stop_after_minutes_ends_a_call_that_resume_continues_exactly(tmp_path):
    from maelre.engine.checkpoint import latest_checkpoint, load_weights

    raw = copy.deepcopy(PATHFINDER)
    raw["trainer"] |= {"max_epochs": 2, "checkpoint_every_n_steps": 100}
    raw["data"]["augment_inputs"] = ["hflip", "vflip"]  # the flips drawn after the resume must replay too
    whole = run_recipe(parse_recipe(raw), run_dir=tmp_path / "whole", progress=False)
    raw["trainer"]["stop_after_minutes"] = 1e-6
    first = run_recipe(parse_recipe(raw), run_dir=tmp_path / "chunks", progress=False)
    assert first["global_step"] == 1 and first["metrics"]["test/acc"] is not None  # a partial row, tested
    raw["trainer"]["stop_after_minutes"] = None
    rest = run_recipe(parse_recipe(raw), run_dir=tmp_path / "chunks", resume=True, progress=False)
    assert rest["global_step"] == whole["global_step"] == 4
    ours, theirs = (load_weights(latest_checkpoint(tmp_path / d) / "model.safetensors") for d in ("chunks", "whole"))
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)

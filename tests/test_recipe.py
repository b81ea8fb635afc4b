"""Recipe schema: every shipped recipe validates with every backbone; bad recipes fail early and clearly."""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pytest
import yaml

from maelre import list_backbones
from maelre.recipe import Recipe, RecipeError, RecipeWarning, apply_overrides, load_recipe, parse_recipe, recipe_from_dict

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
EXPECTED = {
    "audio_speechcommands", "audio_fsdd", "lra_listops", "lra_text", "lra_retrieval", "lra_image",
    "lra_pathfinder", "lra_pathx", "scifar10", "ts_acsf1", "ts_plaid", "text_imdb",
}

BASE = {
    "data": {"dataset": {"name": "gunpoint"}, "adapter": {"name": "timeseries", "max_len": 160}, "batch_size": 8},
    "model": {"backbone": "transformer", "dim": 32, "depth": 2, "heads": 4},
    "trainer": {"max_epochs": 2},
}


def parse(raw: dict, *overrides: str) -> Recipe:
    return parse_recipe(apply_overrides(copy.deepcopy(raw), overrides), name="t")


def error_of(raw: dict, *overrides: str) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        parse(raw, *overrides)
    return info.value


def test_all_expected_recipes_ship():
    assert {p.stem for p in RECIPES} == EXPECTED


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_validates_with_every_backbone(path):
    for backbone in list_backbones():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecipeWarning)  # bf16 recipes warn on this CPU machine
            recipe = load_recipe(path, [f"model.backbone={backbone}"])
        assert recipe.model.backbone == backbone
        kwargs = recipe.adapter_kwargs()
        assert kwargs["dim"] == recipe.shared["dim"]  # the adapter width follows model.dim
        assert kwargs["pad_to_multiple"] >= 1


def test_resolved_recipe_round_trips():
    recipe = parse(BASE)
    again = recipe_from_dict(yaml.safe_load(yaml.safe_dump(recipe.to_dict())), name="t")
    assert again.to_dict() == recipe.to_dict()
    assert recipe.to_dict()["trainer"]["max_epochs"] == 2
    assert recipe.to_dict()["optimizer"]["lr"] == 1e-3  # defaults are filled in


def test_unknown_keys_name_the_path_and_suggest():
    assert "did you mean 'trainer'" in str(error_of({**BASE, "trainr": {}}))
    raw = copy.deepcopy(BASE)
    raw["trainer"]["max_epoch"] = 3
    err = error_of(raw)
    assert err.path == "trainer.max_epoch" and "did you mean 'max_epochs'" in str(err)
    raw = copy.deepcopy(BASE)
    raw["model"]["dpeth"] = 3
    assert "did you mean 'depth'" in str(error_of(raw))
    raw = copy.deepcopy(BASE)
    raw["data"]["adapter"]["patchlen"] = 8
    err = error_of(raw)
    assert err.path == "data.adapter.patchlen" and "patch_len" in str(err)
    raw = copy.deepcopy(BASE)
    raw["data"]["dataset"]["sed"] = 1
    assert "did you mean 'seed'" in str(error_of(raw))


def test_wrong_types_fail_with_the_expected_type():
    err = error_of(BASE, "trainer.max_epochs=three")
    assert err.path == "trainer.max_epochs" and "integer" in str(err)
    assert "true or false" in str(error_of(BASE, "data.cache=1"))
    assert "number" in str(error_of(BASE, "optimizer.lr=fast"))
    assert "list of 2" in str(error_of(BASE, "optimizer.betas=[0.9]"))
    assert error_of(BASE, "model.dim=32.5").path == "model.dim"


def test_precision_32_may_be_written_as_a_number():
    assert parse(BASE, "trainer.precision=32").trainer.precision == "32"
    assert "must be one of" in str(error_of(BASE, "trainer.precision=16"))


def test_value_checks_keep_the_key_path():
    assert error_of(BASE, "model.heads=5").path == "model"  # dim 32 not divisible by 5
    assert "warmup" in str(error_of(BASE, "schedule.warmup_steps=10", "schedule.warmup_fraction=0.1"))
    assert error_of(BASE, "optimizer.name=adam").path == "optimizer"
    assert error_of(BASE, "data.val_fraction=1.5").path == "data"


def test_impossible_combinations():
    err = error_of(BASE, "data.adapter.dim=64")
    assert err.path == "data.adapter.dim" and "model.dim" in str(err)
    err = error_of(BASE, "model.backbone=ecp", "model.backbone_config.ecp.segment_size=32", "data.adapter.pad_to_multiple=8")
    assert err.path == "data.adapter.pad_to_multiple" and "16" in str(err)
    err = error_of(BASE, "model.segment_size=32")  # a backbone-specific key at the shared level
    assert "model.backbone_config.ecp.segment_size" in str(err)
    err = error_of(BASE, "model.backbone_config.ecp.depth=3")
    assert "set it once as model.depth" in str(err)
    err = error_of(BASE, "trainer.max_epochs=null", "trainer.max_time=5")  # cosine needs a step budget
    assert err.path == "schedule.kind"
    assert error_of(BASE, "trainer.precision=16-mixed", "trainer.accelerator=cpu").path == "trainer.precision"
    err = error_of(BASE, "model.max_len=64")  # adapter emits up to 160 tokens
    assert err.path == "model.max_len"


def test_bf16_on_cpu_warns():
    with pytest.warns(RecipeWarning, match="bf16"):
        parse(BASE, "trainer.precision=bf16-mixed", "trainer.accelerator=cpu")


def test_pad_to_multiple_follows_the_backbone():
    recipe = parse(BASE, "model.backbone=ecp", "model.backbone_config.ecp.segment_size=32")
    assert recipe.adapter_kwargs()["pad_to_multiple"] == 16
    assert recipe.backbone_kwargs()["segment_size"] == 32
    assert parse(BASE, "model.backbone=ecp", "data.adapter.pad_to_multiple=256").adapter_kwargs()["pad_to_multiple"] == 256
    assert parse(BASE).adapter_kwargs()["pad_to_multiple"] == 1


def test_only_the_active_backbone_entry_is_used_but_all_are_checked():
    raw = copy.deepcopy(BASE)
    raw["model"]["backbone_config"] = {"ecp": {"segment_size": 32}, "maelre": {"merge_schedule": "fraction", "merge_fraction": 0.2}}
    recipe = parse(raw)
    assert recipe.backbone_kwargs() == {"dim": 32, "depth": 2, "heads": 4}
    assert parse(raw, "model.backbone=maelre").backbone_kwargs()["merge_fraction"] == 0.2
    err = error_of(raw, "model.backbone_config.maelre.merge_fractoin=0.1")
    assert err.path == "model.backbone_config.maelre.merge_fractoin" and "merge_fraction" in str(err)
    err = error_of(raw, "model.backbone_config.ecpp.segment_size=8")
    assert "did you mean 'ecp'" in str(err)
    assert "true or false" in str(error_of(raw, "model.backbone_config.ecp.causal=maybe"))  # types: every entry
    inactive = parse(raw, "model.backbone_config.masformer.full_layers=[5]")  # values: the active one only
    assert inactive.model.backbone == "transformer"
    err = error_of(raw, "model.backbone=masformer", "model.backbone_config.masformer.full_layers=[5]")
    assert err.path == "model.backbone_config.masformer" and "full_layers" in str(err)


def test_overrides_are_yaml_typed_and_can_add_open_keys():
    recipe = parse(BASE, "model.depth=3", "trainer.max_epochs=5", "optimizer.betas=[0.8, 0.9]", "output.run_dir=runs/x",
                   "data.adapter.token=patch", "data.adapter.patch_len=8", "trainer.gradient_clip=null")
    assert recipe.shared["depth"] == 3 and recipe.trainer.max_epochs == 5
    assert recipe.optimizer.betas == (0.8, 0.9)
    assert recipe.adapter_kwargs()["patch_len"] == 8 and recipe.trainer.gradient_clip is None
    assert str(recipe.run_dir()) == "runs/x"


def test_bad_overrides():
    assert "did you mean 'max_epochs'" in str(error_of(BASE, "trainer.max_epoch=3"))
    assert "did you mean 'trainer'" in str(error_of(BASE, "traner.max_epochs=3"))
    assert "KEY.PATH=VALUE" in str(error_of(BASE, "trainer.max_epochs"))
    assert "not a section" in str(error_of(BASE, "trainer.max_epochs.x=3"))
    with pytest.raises(FileNotFoundError):
        load_recipe("recipes/nope.yaml")


def test_dataset_val_fraction_goes_through_data_val_fraction():
    err = error_of(BASE, "data.dataset.val_fraction=0.2")
    assert "data.val_fraction" in str(err)


def test_every_recipe_key_is_documented():
    from maelre.recipe import describe_keys

    doc = (Path(__file__).resolve().parents[1] / "docs" / "recipes.md").read_text()
    sections = describe_keys()
    for section, keys in sections.items():
        assert f"### `{section}`" in doc, section
        for key in keys:
            assert f"| `{key}` |" in doc, f"{section}.{key} is not documented in docs/recipes.md"

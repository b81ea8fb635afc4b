"""``model.head_hidden``: LRA's classifier head (a hidden ReLU layer), from the recipe to a checkpoint and back."""
from __future__ import annotations

import pytest
import torch

from maelre.engine import ModelSpec, build_model, model_from_spec
from maelre.model import ClassifierHead
from maelre.recipe import RecipeError, parse_recipe
from modalities import create_adapter

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def test_a_hidden_layer_of_that_width_then_relu_then_the_logits():
    head = ClassifierHead(16, 3, hidden=8)
    assert [type(m).__name__ for m in head.fc] == ["Linear", "ReLU", "Linear"] and head.fc[0].out_features == 8
    assert head(torch.randn(5, 16)).shape == (5, 3)
    assert isinstance(ClassifierHead(16, 3).fc, torch.nn.Linear)  # unset: the linear head of every earlier checkpoint
    with pytest.raises(ValueError, match="two-tower head has its hidden layer already"):
        ClassifierHead(16, 3, two_tower=True, hidden=8)
    with pytest.raises(ValueError, match="width >= 1"):
        ClassifierHead(16, 3, hidden=0)


def test_the_spec_rebuilds_the_same_head_and_an_old_spec_gets_the_linear_one():
    adapter = create_adapter("pixels", dim=16, max_len=64)
    model = build_model(adapter, "transformer", {"depth": 1, "heads": 2}, num_classes=4, head_hidden=8)
    assert model.spec.head_hidden == 8
    again = model_from_spec(adapter, ModelSpec.from_dict(model.spec.to_dict()))
    again.load_state_dict(model.state_dict(), strict=True)  # same parameter names and shapes
    old = {k: v for k, v in model.spec.to_dict().items() if k != "head_hidden"}  # written before the key existed
    assert isinstance(model_from_spec(adapter, ModelSpec.from_dict(old)).head.fc, torch.nn.Linear)


RECIPE = {"data": {"dataset": {"name": "pathfinder", "n_train": 8, "n_val": 4, "n_test": 4}, "adapter": {"name": "pixels", "max_len": 1024}},
          "model": {"backbone": "transformer", "dim": 16, "depth": 1, "heads": 2}}


@pytest.mark.parametrize("value, error", [(64, None), (0, "head_hidden must be a width >= 1"), (True, "model.head_hidden: expected an integer or null"),
                                          ("64", "model.head_hidden: expected an integer or null")])
def test_the_recipe_key_is_checked(value, error):
    raw = {**RECIPE, "model": {**RECIPE["model"], "head_hidden": value}}
    if error is None:
        recipe = parse_recipe(raw)
        assert recipe.model.head_kwargs()["head_hidden"] == 64
        saved = recipe.to_dict()  # what a run folder keeps, and --resume reads
        assert saved["model"]["head_hidden"] == 64 and parse_recipe(saved).model.head_hidden == 64
        assert "head_hidden" not in parse_recipe(RECIPE).to_dict()["model"]  # unset: recipes saved before it existed stay as they were
    else:
        with pytest.raises(RecipeError, match=error):
            parse_recipe(raw)


def test_a_two_tower_recipe_refuses_it():
    raw = {**RECIPE, "model": {**RECIPE["model"], "head_hidden": 8, "two_tower": True}}
    with pytest.raises(RecipeError, match="two-tower head has its hidden layer already"):
        parse_recipe(raw)


def test_head_norm_false_drops_the_pooled_layernorm_from_recipe_to_checkpoint():
    """``model.head_norm: false`` is LRA's and Skyformer's head (no LayerNorm after pooling); the default keeps it."""
    assert isinstance(ClassifierHead(16, 3, norm=False).norm, torch.nn.Identity)
    assert isinstance(ClassifierHead(16, 3).norm, torch.nn.LayerNorm)
    adapter = create_adapter("pixels", dim=16, max_len=64)
    model = build_model(adapter, "transformer", {"depth": 1, "heads": 2}, num_classes=4, head_hidden=8, head_norm=False)
    assert not any(k.startswith("head.norm") for k in model.state_dict())
    again = model_from_spec(adapter, ModelSpec.from_dict(model.spec.to_dict()))
    again.load_state_dict(model.state_dict(), strict=True)
    old = {k: v for k, v in model.spec.to_dict().items() if k != "head_norm"}  # written before the key existed
    assert isinstance(model_from_spec(adapter, ModelSpec.from_dict(old)).head.norm, torch.nn.LayerNorm)
    recipe = parse_recipe({**RECIPE, "model": {**RECIPE["model"], "head_norm": False}})
    assert recipe.model.head_kwargs()["head_norm"] is False
    assert recipe.to_dict()["model"]["head_norm"] is False and parse_recipe(recipe.to_dict()).model.head_norm is False
    assert "head_norm" not in parse_recipe(RECIPE).to_dict()["model"]  # the default: saved recipes stay as they were
    with pytest.raises(RecipeError, match="head_norm"):
        parse_recipe({**RECIPE, "model": {**RECIPE["model"], "head_norm": "no"}})


class _GivenTokens(torch.nn.Module):
    """An adapter stand-in: the batch holds the tokens and mask themselves."""

    dim = 16

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        return batch["tokens"], batch["mask"]


def test_pool_divisor_length_divides_the_real_tokens_sum_by_the_padded_length():
    """``model.pool_divisor: length`` is Skyformer's pooling (sum over real tokens / padded length); ``real`` the mean."""
    from maelre import create_backbone
    from maelre.model import SequenceClassifier

    torch.manual_seed(0)
    backbone = create_backbone("transformer", dim=16, depth=1, heads=2).eval()
    by_real, by_length = (SequenceClassifier(_GivenTokens(), backbone, 3, pool_divisor=d) for d in ("real", "length"))
    tokens, mask = torch.randn(2, 10, 16), torch.ones(2, 10, dtype=torch.bool)
    mask[0, 4:] = False  # 4 of 10 real
    batch = {"tokens": tokens, "mask": mask}
    mean = by_real.encode(batch)
    torch.testing.assert_close(by_length.encode(batch), mean * torch.tensor([[0.4], [1.0]]))
    unpadded = {"tokens": tokens, "mask": None}
    torch.testing.assert_close(by_length.encode(unpadded), by_real.encode(unpadded))  # no padding: the same
    with pytest.raises(ValueError, match="pool_divisor must be one of real, length"):
        SequenceClassifier(_GivenTokens(), backbone, 3, pool_divisor="max")
    cls_backbone = create_backbone("transformer", dim=16, depth=1, heads=2, pool="cls")
    with pytest.raises(ValueError, match="the backbone pools by 'cls'"):
        SequenceClassifier(_GivenTokens(), cls_backbone, 3, pool_divisor="length")


def test_pool_divisor_from_recipe_to_checkpoint():
    adapter = create_adapter("pixels", dim=16, max_len=64)
    model = build_model(adapter, "transformer", {"depth": 1, "heads": 2}, num_classes=4, pool_divisor="length")
    assert model_from_spec(adapter, ModelSpec.from_dict(model.spec.to_dict())).pool_divisor == "length"
    old = {k: v for k, v in model.spec.to_dict().items() if k != "pool_divisor"}  # written before the key existed
    assert model_from_spec(adapter, ModelSpec.from_dict(old)).pool_divisor == "real"
    recipe = parse_recipe({**RECIPE, "model": {**RECIPE["model"], "pool_divisor": "length"}})
    assert recipe.model.head_kwargs()["pool_divisor"] == "length"
    assert parse_recipe(recipe.to_dict()).model.pool_divisor == "length"
    assert "pool_divisor" not in parse_recipe(RECIPE).to_dict()["model"]  # the default: saved recipes stay as they were
    with pytest.raises(RecipeError, match="pool_divisor must be one of real, length"):
        parse_recipe({**RECIPE, "model": {**RECIPE["model"], "pool_divisor": "padded"}})
    with pytest.raises(RecipeError, match="model.pool_divisor.*the backbone pools by 'cls'"):
        parse_recipe({**RECIPE, "model": {**RECIPE["model"], "pool_divisor": "length", "pool": "cls"}})


def test_input_dropout_drops_the_adapters_tokens_in_training_only():
    """``model.input_dropout``: Skyformer's dropout on the embedded input, before the backbone."""
    from maelre import create_backbone
    from maelre.model import SequenceClassifier

    torch.manual_seed(0)
    backbone = create_backbone("transformer", dim=16, depth=1, heads=2)
    dropped, plain = (SequenceClassifier(_GivenTokens(), backbone, 3, input_dropout=p) for p in (0.5, 0.0))
    assert isinstance(plain.input_drop, torch.nn.Identity) and dropped.input_drop.p == 0.5
    plain.load_state_dict(dropped.state_dict())  # the same weights (dropout has none): the same parameter names
    seen = []
    backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    batch = {"tokens": torch.randn(2, 10, 16), "mask": None}
    dropped.train()(batch)
    assert ((seen[-1] == 0) | torch.isclose(seen[-1], 2 * batch["tokens"])).all() and (seen[-1] == 0).any()  # dropped or scaled by 1/(1-p)
    dropped.eval(), plain.eval()
    torch.testing.assert_close(dropped(batch), plain(batch))  # evaluation: no dropout
    with pytest.raises(ValueError, match=r"input_dropout must be in \[0, 1\)"):
        SequenceClassifier(_GivenTokens(), backbone, 3, input_dropout=1.0)


def test_input_dropout_from_recipe_to_checkpoint():
    adapter = create_adapter("pixels", dim=16, max_len=64)
    model = build_model(adapter, "transformer", {"depth": 1, "heads": 2}, num_classes=4, input_dropout=0.1)
    assert model_from_spec(adapter, ModelSpec.from_dict(model.spec.to_dict())).input_drop.p == 0.1
    old = {k: v for k, v in model.spec.to_dict().items() if k != "input_dropout"}  # written before the key existed
    assert isinstance(model_from_spec(adapter, ModelSpec.from_dict(old)).input_drop, torch.nn.Identity)
    recipe = parse_recipe({**RECIPE, "model": {**RECIPE["model"], "input_dropout": 0.1}})
    assert recipe.model.head_kwargs()["input_dropout"] == 0.1
    assert parse_recipe(recipe.to_dict()).model.input_dropout == 0.1
    assert "input_dropout" not in parse_recipe(RECIPE).to_dict()["model"]  # the default: saved recipes stay as they were
    with pytest.raises(RecipeError, match=r"input_dropout must be in \[0, 1\)"):
        parse_recipe({**RECIPE, "model": {**RECIPE["model"], "input_dropout": 1.5}})

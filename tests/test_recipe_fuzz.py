"""Fuzzing recipes: random (seeded) mutations of a valid recipe must end in a ``Recipe`` or one clear
``RecipeError``; through ``maelre check`` in exit status 0 or 2 with one error line, never a traceback."""
from __future__ import annotations

import copy
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from maelre.cli import main
from maelre.recipe import RecipeError, describe_keys, recipe_from_dict

BASE = {
    "name": "fuzz",
    "data": {"dataset": {"name": "italypowerdemand"}, "adapter": {"name": "timeseries", "max_len": 32}, "batch_size": 16,
             "val_fraction": 0.2},
    "model": {"backbone": "maelre", "dim": 16, "depth": 2, "heads": 2, "dropout": 0.1,
              "backbone_config": {"maelre": {"merge_schedule": "fraction", "merge_fraction": 0.25}, "ecp": {"segment_size": 8}}},
    "optimizer": {"lr": 0.005, "betas": [0.9, 0.99]},
    "schedule": {"warmup_steps": 2},
    "loss": {"label_smoothing": 0.1},
    "trainer": {"max_epochs": 3, "enable_progress_bar": False},
}
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 3, 2**63, -0.5, 0.5, 1.5, 1e30, math.nan, math.inf, -math.inf, "", "abc", "2e-3",
    "transformer", "x" * 300, [], [1, 2], [[1]], {}, {"name": "fsdd"}, {"x": 1}, {1: 2},
]
KEYS = sorted({key for section in describe_keys().values() for key in section} | {"name", "backbone_config", "maelre", "ecp"})


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested dict/list (the root is ``()``)."""
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _parent(root: dict, path: tuple) -> Any:
    node = root
    for key in path[:-1]:
        node = node[key]
    return node


def mutate(raw: dict, rng: random.Random) -> dict:
    """One to three random edits: drop a key, set an odd value, add or misspell a key, or swap two values."""
    out = copy.deepcopy(raw)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(out) if p]
        if not paths:
            break
        path = rng.choice(paths)
        parent, key = _parent(out, path), path[-1]
        op = rng.randrange(5)
        if op == 0:
            del parent[key]
        elif op == 1:
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif op == 2 and isinstance(parent, dict):
            parent[rng.choice([*KEYS, "bogus"])] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif op == 3 and isinstance(parent, dict) and isinstance(key, str) and key:
            parent[key[:-1] + rng.choice("sx_") if rng.random() < 0.5 else key.upper()] = parent.pop(key)
        else:
            other = rng.choice(paths)
            if other[: len(path)] != path and path[: len(other)] != other:  # neither inside the other
                parent[key] = copy.deepcopy(_parent(out, other)[other[-1]])
    return out


def mutate_text(text: str, rng: random.Random) -> str:
    """Character-level damage to a YAML file: deletions, duplicated lines, odd characters."""
    lines = text.splitlines(keepends=True)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(lines))
        op = rng.randrange(4)
        if op == 0:
            lines.insert(i, lines[rng.randrange(len(lines))])  # a key given twice, or indented wrongly
        elif op == 1:
            del lines[i]
        elif op == 2 and lines[i]:
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + rng.choice([":", "[", "{", "-", "\t", "&a", "*a", "!!python/object:os.system", "\x00", "'"]) + lines[i][j:]
        else:
            lines[i] = lines[i].replace(": ", ": " + rng.choice(["2e-3 ", ".nan ", "-", "[", "~ "]), 1)
    return "".join(lines)


def random_override(raw: dict, rng: random.Random) -> str:
    """A ``--set KEY.PATH=VALUE`` with a path of the recipe (or a misspelt one) and an odd YAML value."""
    path = ".".join(map(str, rng.choice([p for p in _paths(raw) if p]))) if rng.random() < 0.8 else rng.choice([*KEYS, "data..x", ""])
    value = rng.choice(["2e-3", ".nan", "-1", "[1, 2", "{a: 1}", "null", "", "x=y", "!!binary aGk=", "1.5", "ecp"])
    return f"{path}={value}" if rng.random() < 0.95 else path


def test_the_base_recipe_is_valid():
    assert recipe_from_dict(BASE).model.backbone == "maelre"


@pytest.mark.timeout(120)  # a mutation that hangs (e.g. building a huge model) fails instead of stalling CI
def test_mutated_recipes_end_in_a_recipe_or_a_recipe_error():
    rng = random.Random(16)
    outcomes = {"valid": 0, "error": 0}
    for i in range(600):
        raw = mutate(BASE, rng)
        overrides = [random_override(raw, rng) for _ in range(rng.choice([0, 0, 1, 2]))]
        try:
            recipe_from_dict(raw, overrides)
        except RecipeError:
            outcomes["error"] += 1
        except Exception as err:  # noqa: BLE001 -- the point of the test: anything else is a bug
            pytest.fail(f"mutation {i} raised {type(err).__name__}: {err}\nrecipe: {raw!r}\noverrides: {overrides}")
        else:
            outcomes["valid"] += 1
    assert outcomes["error"] > 300 and outcomes["valid"] > 20  # the mutations reach both sides


@pytest.mark.timeout(120)  # a mutation that hangs (e.g. building a huge model) fails instead of stalling CI
def test_maelre_check_on_damaged_recipe_files_exits_0_or_2(tmp_path: Path, capsys):
    rng = random.Random(1616)
    text = yaml.safe_dump(BASE, sort_keys=False)
    path = tmp_path / "fuzz.yaml"
    codes = {0: 0, 2: 0}
    for i in range(200):  # fewer than above: a valid recipe builds its model and prints the plan
        damaged = mutate_text(text, rng) if i % 2 else yaml.safe_dump(mutate(BASE, rng), sort_keys=False)
        path.write_text(damaged, encoding="utf-8")
        try:
            code = main(["check", str(path), "--num-classes", "3"])
        except Exception as err:  # noqa: BLE001
            pytest.fail(f"mutation {i}: maelre check raised {type(err).__name__}: {err}\nfile:\n{damaged}")
        err = capsys.readouterr().err
        assert code in codes, (i, code, err)
        if code == 2:
            assert err.count("maelre check: error: ") == 1 and "Traceback" not in err, err
        codes[code] += 1
    assert codes[2] > 100 and codes[0] > 10

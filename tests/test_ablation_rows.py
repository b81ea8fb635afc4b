"""The merge ablation's row table (benchmarks/ablation_rows.py): rows are fixed models that recipes accept."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.ablation_rows import LEVERS, POSITIONS, ROWS, overrides, run_label
from maelre.backbones.maelre import MAELREConfig
from maelre.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:trainer.precision=bf16-mixed on CPU")


@pytest.mark.parametrize("row", [name for name, row in ROWS.items() if row.backbone == "maelre"])
def test_every_maelre_row_states_value_conv_so_a_new_default_cannot_change_it(row):
    assert "value_conv" in ROWS[row].config


@pytest.mark.parametrize("pos", POSITIONS)
@pytest.mark.parametrize("row", ROWS)
def test_a_rows_overrides_make_a_valid_recipe_with_the_rows_config(row, pos):
    recipe = load_recipe(ROOT / "recipes" / "scifar10.yaml", overrides(row, pos))
    assert recipe.model.backbone == ROWS[row].backbone
    kwargs = recipe.backbone_kwargs()
    for key, value in ROWS[row].config.items():
        assert kwargs[key] == value
    assert kwargs["rope"] == (pos == "rope")
    assert recipe.adapter_kwargs()["pos_embed"] == ("none" if pos == "rope" else "learned")


def test_auto1_and_vconv_differ_in_the_value_convolution_only():
    auto1 = load_recipe(ROOT / "recipes" / "scifar10.yaml", overrides("auto1", "rope")).backbone_kwargs()
    vconv = load_recipe(ROOT / "recipes" / "scifar10.yaml", overrides("vconv", "rope")).backbone_kwargs()
    assert {k for k in auto1 if auto1[k] != vconv.get(k)} == {"value_conv"}
    assert MAELREConfig().value_conv == vconv["value_conv"]  # the default is the vconv row


def test_the_cli_prints_overrides_and_refuses_an_unknown_row():
    script = ROOT / "benchmarks" / "ablation_rows.py"
    ok = subprocess.run([sys.executable, str(script), "overrides", "auto1", "rope"], capture_output=True, text=True, check=True)
    assert "model.backbone_config.maelre.value_conv=null" in ok.stdout.splitlines()
    bad = subprocess.run([sys.executable, str(script), "overrides", "auto9", "rope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown row 'auto9'" in bad.stderr


@pytest.mark.parametrize("lever", LEVERS)
def test_every_training_lever_makes_a_valid_recipe_that_changes_what_it_names(lever):
    base = load_recipe(ROOT / "recipes" / "scifar10.yaml", overrides("ecp", "rope"))
    moved = load_recipe(ROOT / "recipes" / "scifar10.yaml", overrides("ecp", "rope", lever))
    assert moved.model.backbone == "ecp"
    changed = {k for k in ("optimizer", "schedule", "loss", "data", "model") if getattr(moved, k) != getattr(base, k)}
    changed |= {key for key, value in moved.backbone_kwargs().items() if base.backbone_kwargs().get(key) != value}
    assert (lever == "base") == (not changed), (lever, changed)
    if lever == "nodrop":  # the shared backbone keys, beside the model section
        assert changed == {"dropout", "drop_path"} and moved.backbone_kwargs()["drop_path"] == 0.0


def test_a_lever_run_is_named_row_dash_lever_and_the_report_reads_it_back(tmp_path):
    import json

    from benchmarks import merge_ablation_report as report

    assert run_label("ecp") == "ecp" and run_label("ecp", "lr2x") == "ecp-lr2x"
    cli = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablation_rows.py"), "label", "ecp", "lr2x"], capture_output=True, text=True, check=True)
    assert cli.stdout.strip() == "ecp-lr2x"  # merge_ablation.sh names its runs with it
    for label, acc in (("ecp", 0.55), ("ecp-lr2x", 0.57), ("perceiver_ar-noaug", 0.50)):
        result = {"results": [{"status": "ok", "accuracy": acc, "val_accuracy": acc, "epochs": 20}]}
        (tmp_path / f"scifar10_{label}_rope_s0.json").write_text(json.dumps(result))
    runs = report.collect(tmp_path)
    assert sorted((r["row"], r["lever"]) for r in runs) == [("ecp", "base"), ("ecp", "lr2x"), ("perceiver_ar", "noaug")]
    summary, table = report.summarise(runs, [])
    assert [(e["row"], e["lever"]) for e in summary] == [("ecp", "base"), ("ecp", "lr2x"), ("perceiver_ar", "noaug")]
    assert "learning rate 0.002" in table and "no augmentation" in table

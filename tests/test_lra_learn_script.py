"""The helpers of benchmarks/lra_learn.sh: run status, pruning between device calls, curves merged over calls."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "lra_learn.py"
_spec = importlib.util.spec_from_file_location("lra_learn", _PATH)
lra_learn = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lra_learn)


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A fit run folder after two calls, as `maelre fit --run-dir` leaves it."""
    run = tmp_path / "group" / "maelre" / "fit"
    for name in ("step-0000010", "step-0000020", "best"):
        (run / "checkpoints" / name).mkdir(parents=True)
        (run / "checkpoints" / name / "model.safetensors").write_bytes(b"w")
        (run / "checkpoints" / name / "training_state.pt").write_bytes(b"s")
    for version, lines in ((0, ["1.0,,,4", ",0.5,0.9,9"]), (1, ["0.7,,,14", ",0.6,0.8,19"])):
        logs = run / "logs" / f"version_{version}"
        (logs / "tensorboard").mkdir(parents=True)
        (logs / "metrics.csv").write_text("train/loss_step,val/acc,val/loss,step\n" + "\n".join(lines) + "\n")
    (run / "results.json").write_text(json.dumps({"backbone": "maelre", "global_step": 20, "metrics": {"test/acc": 0.55}}))
    return run


def test_status_prune_and_curves(run, tmp_path):
    assert lra_learn.cmd_status(run, 30) == "resume" and lra_learn.cmd_status(run, 20) == "done"
    assert lra_learn.cmd_status(tmp_path / "absent", 5) == "new"
    (run / "checkpoints" / ".tmp-step-0000030").mkdir()  # a write the watchdog's SIGKILL cut short
    lra_learn.cmd_prune(run, drop_checkpoints=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best", "step-0000020"]
    assert not (run / "checkpoints" / "best" / "training_state.pt").exists()
    assert (run / "checkpoints" / "step-0000020" / "training_state.pt").exists()
    assert not list(run.glob("logs/*/tensorboard"))
    out = tmp_path / "curves.json"
    lra_learn.cmd_curves(run.parents[1], out)
    summary = json.loads(out.read_text())["runs"]["maelre/fit"]
    assert summary["global_step"] == summary["checkpoint_step"] == 20
    curve = summary["curve"]
    assert curve == [{"step": 4, "train/loss": 1.0}, {"step": 9, "val/acc": 0.5, "val/loss": 0.9},
                     {"step": 14, "train/loss": 0.7}, {"step": 19, "val/acc": 0.6, "val/loss": 0.8}]
    lra_learn.cmd_prune(run, drop_checkpoints=True)
    assert not (run / "checkpoints").exists() and (run / "results.json").exists()


def test_call_guard_stops_the_runs_in_time_and_lets_the_script_go_on(tmp_path):
    """benchmarks/call_guard.sh: SIGTERM at CALL_SECONDS - PACK_SECONDS, SIGKILL GRACE_SECONDS later, then nothing starts."""
    import subprocess
    import sys
    import time

    guard = _PATH.with_name("call_guard.sh")
    ignores_term = f"{sys.executable} -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)'"
    script = f"""
        set -euo pipefail
        started=$(date +%s)
        source {guard}
        guard_start
        echo "deadline $(guard_train_deadline 10) $(( started + 1 ))"
        rc=0; guarded sleep 30 & a=$!
        guarded {ignores_term} & b=$!
        wait $a || rc=$?; echo "term $rc"
        rc=0; wait $b || rc=$?; echo "kill $rc"
        rc=0; guarded true 2>/dev/null || rc=$?; echo "late $rc"
    """
    env = {"PATH": "/usr/bin:/bin", "CALL_SECONDS": "4", "PACK_SECONDS": "2", "GRACE_SECONDS": "2", "TEST_SECONDS": "1"}
    began = time.monotonic()
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=25, check=True).stdout.split("\n")
    assert time.monotonic() - began < 10
    deadline, expected = out[0].split()[1:]
    assert deadline == expected  # clamped: TEST_SECONDS before the watchdog, not 10 minutes
    assert out[1:4] == ["term 143", "kill 137", "late 143"]


def test_pack_fills_few_tars_under_the_limit_and_splits_an_oversized_folder(tmp_path):
    import tarfile

    # sizes as a tar holds them: a 512-byte header per entry, data in 512-byte blocks
    for name, sizes in {"a": [3072, 1536], "b": [3584], "c": [1536], "d": [1024]}.items():
        (tmp_path / name).mkdir()
        for i, size in enumerate(sizes):
            (tmp_path / name / f"f{i}").write_bytes(b"x" * size)
    limit = 13 * 512
    out = tmp_path / "out" / "lb"
    written = lra_learn.cmd_pack(out, [tmp_path / n for n in "abcd"] + [tmp_path / "missing"], limit=limit)
    members = [sorted({m.split("/")[0] for m in tarfile.open(w).getnames()}) for w in written]
    assert members == [["a"], ["b", "d"], ["c"]]  # first fit by decreasing size: a=12 blocks, b=9, c=5, d=4
    assert all(w.stat().st_size <= limit + 10240 for w in written)  # tar pads to 10 KiB records
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "f").write_bytes(b"x" * 7000)
    (written,) = lra_learn.cmd_pack(out, [tmp_path / "c"], base=tmp_path.parent, limit=limit)
    assert tarfile.open(written).getnames()[0] == f"{tmp_path.name}/c"
    written = lra_learn.cmd_pack(out, [tmp_path / "big"], limit=limit)  # parts and a manifest: tests/test_device_xfer.py
    assert [w.name for w in written][:2] == ["lb_1.tar.manifest.json", "lb_1.tar.001"]
    assert all(w.stat().st_size <= limit for w in written[1:])


def _listops_sky_calls(tmp_path: Path, variant: str, tag: str | None = None) -> list[tuple[list[str], str]]:
    """(overrides, recipe path) of each backbone's `maelre check` call, run by lra_learn.sh CHECK=1 with a stub PYTHON."""
    import subprocess
    import sys

    stub = tmp_path / "python"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\nopen(os.environ['ARGS_FILE'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n")
    stub.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "ARGS_FILE": str(tmp_path / "args"), "CHECK": "1", **({"TAG": tag} if tag else {})}
    done = subprocess.run(["bash", str(_PATH.with_name("lra_learn.sh")), "listops_sky", variant, "0"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"listops_sky_{variant}_s0{'_' + tag if tag else ''}'s settings validate" in done.stdout
    calls = [json.loads(line) for line in (tmp_path / "args").read_text().splitlines()]
    assert [c[:3] for c in calls] == [["-m", "maelre.cli", "check"]] * 4
    return [([c[4:][i + 1] for i in range(len(c) - 4) if c[4:][i] == "--set"], c[3]) for c in calls]


@pytest.mark.parametrize("variant", ["plain", "levers"])
def test_listops_sky_settings_validate_for_every_backbone(tmp_path, variant):
    """lra_learn.sh CHECK=1 hands each run's settings to `maelre check`; a stub records them, load_recipe validates them.

    They are Skyformer's ListOps config (src/config.py `listops`, src/main.py, src/models/model_LRA.py):
    the Linear-ReLU-Linear head of width 128, and its tokens (LRA's tfds tokenizer of 2020 keeps
    operators and digits, so the closing `]` is dropped like the parentheses). Skyformer's depth 2
    leaves MAELRE one merging block: 2,048 tokens reach 512 at best, so the task sets
    switch_threshold=512 (the default, dim=64, made the recipe invalid for maelre).
    """
    import warnings

    from maelre.recipe import RecipeError, RecipeWarning, load_recipe

    backbones = []
    for overrides, recipe_path in _listops_sky_calls(tmp_path, variant, "sky2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecipeWarning)  # bf16 on this CPU
            recipe = load_recipe(_PATH.parents[1] / recipe_path, overrides)
        backbones.append(recipe.model.backbone)
        kw = recipe.backbone_kwargs()
        assert (kw["dim"], kw["depth"], kw["heads"], kw["mlp_ratio"], kw["dropout"], kw["attn_dropout"]) == (64, 2, 2, 2.0, 0.1, 0.1)
        assert kw.get("pool", "mean") == "mean" and recipe.data.adapter.get("pos_embed", "learned") == "learned"
        assert recipe.model.head_hidden == 128  # Linear(64, 128)-ReLU-Linear(128, 10)
        adapter = recipe.data.adapter
        assert (adapter["tokenizer"], adapter["vocab_size"], adapter["max_len"]) == ("word", 32, 2048)
        assert sorted(adapter["ignore_words"]) == ["(", ")"]  # `]` stays a token (LRA's fixed pipeline; Skyformer's drops it)
        o, sch, t = recipe.optimizer, recipe.schedule, recipe.trainer
        assert (o.name, o.lr, o.weight_decay, tuple(o.betas)) == ("adamw", 1e-4, 0.0, (0.9, 0.999))
        assert (sch.kind, sch.warmup_steps, sch.warmup_fraction, sch.min_lr_ratio) == ("linear", 1000, 0.0, 0.0)
        assert (recipe.data.batch_size, t.max_steps, t.val_every_n_steps, t.seed) == (32, 50_000, 500, 0)
        assert recipe.data.dataset == {"name": "listops", "root": "/tmp/listops"}
        assert recipe.data.augment_inputs == ([] if variant == "plain" else ["listops_shuffle"])
        if recipe.model.backbone == "maelre":
            assert kw["switch_threshold"] == 512
            without = [o for o in overrides if "switch_threshold" not in o]
            with pytest.raises(RecipeError, match="switch_threshold >= 512"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RecipeWarning)
                load_recipe(_PATH.parents[1] / recipe_path, without)
    assert backbones == ["maelre", "transformer", "ecp", "perceiver_ar"]


def test_a_resumed_run_trains_from_its_own_saved_recipe_and_the_calls_set(tmp_path):
    """listops_sky_levers_s0_compiled started before the hidden-layer head: a resume must keep its saved settings.

    maelre refuses to resume a run whose data or model sections differ from its recipe.yaml, so a
    resumed run trains from that file (plus the call's SET), while a new run gets today's settings.
    """
    import subprocess

    stub = _recording_python(tmp_path, reply="resume")
    state, out = tmp_path / "state", tmp_path / "out"
    saved = state / "listops_sky_levers_s0_compiled" / "maelre" / "fit" / "recipe.yaml"
    saved.parent.mkdir(parents=True)
    saved.write_text("name: saved\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "ARGS_FILE": str(tmp_path / "args"), "STATE": str(state), "OUT": str(out),
           "PACK": "0", "TAG": "compiled", "BACKBONES": "maelre,transformer", "SET": "trainer.compile=reduce-overhead", "MINUTES": "5"}
    done = subprocess.run(["bash", str(_PATH.with_name("lra_learn.sh")), "listops_sky", "levers", "0"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=_PATH.parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    fits = {c[c.index("--run-dir") + 1]: c for c in (json.loads(line) for line in (tmp_path / "args").read_text().splitlines())
            if c[:3] == ["-m", "maelre.cli", "fit"]}  # fmt: skip
    resumed = fits[str(saved.parent)]  # had a recipe.yaml: from it, with the call's SET and the call's budget and deadline
    assert resumed[3] == str(saved) and "--resume" in resumed and "model.head_hidden=128" not in resumed
    assert "trainer.compile=reduce-overhead" in resumed and "trainer.max_steps=50000" in resumed
    fresh = fits[str(state / "listops_sky_levers_s0_compiled" / "transformer" / "fit")]  # no saved recipe: the script's settings
    assert fresh[3] == "recipes/lra_listops.yaml" and "model.head_hidden=128" in fresh and "trainer.compile=reduce-overhead" in fresh


def _recording_python(tmp_path: Path, reply: str = "") -> Path:
    """A stand-in PYTHON that appends its argv to $ARGS_FILE as one JSON line and prints ``reply`` for `lra_learn.py status`."""
    import sys

    stub = tmp_path / "python"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\nopen(os.environ['ARGS_FILE'], 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
                    f"if sys.argv[1:3] == ['benchmarks/lra_learn.py', 'status']:\n    print({reply!r})\n")
    stub.chmod(0o755)
    return stub


@pytest.mark.parametrize("variant", ["plain", "levers", "nomask"])
def test_pathfinder_sky_settings_validate_for_every_backbone(tmp_path, variant):
    """pathfinder_sky is Skyformer's Pathfinder-32 config (src/config.py) on our generated images, for every backbone.

    Depth 2 leaves MAELRE one merging block: 1,024 pixels reach 256 at best, so the task sets
    switch_threshold=256. `plain` keeps Skyformer's pixel table; `levers` swaps in the Linear and flips.
    """
    import subprocess
    import warnings

    from maelre.recipe import RecipeError, RecipeWarning, load_recipe

    stub = _recording_python(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "ARGS_FILE": str(tmp_path / "args"), "CHECK": "1", "PF_ROOT": "/data/pf"}
    done = subprocess.run(["bash", str(_PATH.with_name("lra_learn.sh")), "pathfinder_sky", variant, "1"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pathfinder_sky_" + variant + "_s1's settings validate" in done.stdout
    calls = [json.loads(line) for line in (tmp_path / "args").read_text().splitlines()]
    assert [c[:3] for c in calls] == [["-m", "maelre.cli", "check"]] * 4
    backbones = []
    for call in calls:
        rest = call[4:]
        overrides = [rest[i + 1] for i in range(len(rest)) if rest[i] == "--set"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RecipeWarning)  # bf16 on this CPU
            recipe = load_recipe(_PATH.parents[1] / call[3], overrides)
        backbones.append(recipe.model.backbone)
        kw = recipe.backbone_kwargs()
        assert (kw["dim"], kw["depth"], kw["heads"], kw["mlp_ratio"], kw["dropout"], kw["attn_dropout"]) == (64, 2, 2, 2.0, 0.1, 0.1)
        assert kw.get("pool", "mean") == "mean" and recipe.data.adapter.get("pos_embed", "learned") == "learned"
        assert recipe.model.head_hidden == 128  # background pixels are padding, but in the masking ablation
        assert recipe.data.adapter["mask_zero"] is (variant != "nomask")
        o, sch, t = recipe.optimizer, recipe.schedule, recipe.trainer
        assert (o.name, o.lr, o.weight_decay, tuple(o.betas)) == ("adamw", 2e-4, 0.0, (0.9, 0.999))
        assert (sch.kind, sch.warmup_steps, sch.warmup_fraction, sch.min_lr_ratio) == ("linear", 312, 0.0, 0.0)
        assert (recipe.data.batch_size, t.max_steps, t.val_every_n_steps, t.seed) == (128, 50_000, 500, 1)
        assert recipe.data.dataset == {"name": "pathfinder", "root": "/data/pf"}  # the folder lra_learn.py data writes, as `pathfinder` reads it
        if variant in ("plain", "nomask"):  # Skyformer's pixels: the 8-bit value indexes a learned table
            assert recipe.data.adapter.get("pixel_embed", "table") == "table" and not recipe.data.augment_inputs
        else:
            assert recipe.data.adapter["pixel_embed"] == "linear" and recipe.data.augment_inputs == ["hflip", "vflip"]
        if recipe.model.backbone == "maelre":
            assert kw["switch_threshold"] == 256
            without = [o for o in overrides if "switch_threshold" not in o]
            with pytest.raises(RecipeError, match="switch_threshold >= 256"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RecipeWarning)
                load_recipe(_PATH.parents[1] / call[3], without)
    assert backbones == ["maelre", "transformer", "ecp", "perceiver_ar"]


def test_pathfinder_sky_reads_the_pathfinder_images_and_is_probed(tmp_path):
    """lra_learn.sh pathfinder_sky makes (or reuses) the same generated Pathfinder-32 folder as `pathfinder`,
    and probes each run's best checkpoint for the marker-distance shortcut afterwards."""
    import subprocess

    stub = _recording_python(tmp_path, reply="done")
    state, out = tmp_path / "state", tmp_path / "out"
    best = state / "pathfinder_sky_plain_s0" / "transformer" / "fit" / "checkpoints" / "best"
    best.mkdir(parents=True)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "ARGS_FILE": str(tmp_path / "args"), "PF_ROOT": "/data/pf",
           "STATE": str(state), "OUT": str(out), "PACK": "0", "BACKBONES": "maelre,transformer"}
    done = subprocess.run(["bash", str(_PATH.with_name("lra_learn.sh")), "pathfinder_sky", "plain", "0"], env=env,
                          capture_output=True, text=True, timeout=60, cwd=_PATH.parents[1])
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [json.loads(line) for line in (tmp_path / "args").read_text().splitlines()]
    assert ["benchmarks/lra_learn.py", "data", "/data/pf", "curv_contour_length_14", "--n", "200000"] in calls
    assert not any(c[1:2] == ["listops"] for c in calls)
    probes = [c for c in calls if c[0] == "benchmarks/pathfinder_probe.py"]
    assert [c[1] for c in probes] == [str(best)]  # maelre has no best checkpoint here


def test_a_run_the_committed_curves_record_is_lost_not_new_on_a_bare_machine(tmp_path):
    curves = tmp_path / "group_h200.json"
    curves.write_text(json.dumps({"group": "g", "runs": {"maelre/fit": {"global_step": 5337, "checkpoint_step": 6000}}}))
    run = tmp_path / "state" / "g" / "maelre" / "fit"
    assert lra_learn.committed_step(curves, run) == 6000
    assert lra_learn.cmd_status(run, 50_000, curves) == "lost"  # no checkpoint here: starting afresh would lose 6,000 steps
    assert lra_learn.cmd_status(tmp_path / "state" / "g" / "ecp" / "fit", 50_000, curves) == "new"  # never trained
    assert lra_learn.cmd_status(run, 50_000, tmp_path / "absent.json") == "new" and lra_learn.cmd_status(run, 50_000) == "new"
    (run / "checkpoints" / "step-0006000").mkdir(parents=True)
    assert lra_learn.cmd_status(run, 50_000, curves) == "resume"


def test_rows_marks_a_run_short_of_its_budget_partial_and_its_data_generated(tmp_path):
    """`rows` turns a group's fits into leaderboard rows: a run at 23,000 of 50,000 steps is a
    `time_limit` row that says how far it got, and Pathfinder read from the generated folder is `generated`."""
    committed = Path(__file__).resolve().parents[1] / "benchmarks/results/lra_state_h200/pathfinder_levers_s0_compiled/maelre/fit"
    recipe = committed / "recipe.yaml"
    if not recipe.exists():
        pytest.skip("the committed Pathfinder run folder is not in this checkout")
    run = tmp_path / "group" / "maelre" / "fit"
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(recipe.read_text())
    results = json.loads((committed / "results.json").read_text())
    results.update(global_step=23_000, metrics={**results["metrics"], "test/acc": 0.7136})
    (run / "results.json").write_text(json.dumps(results))
    out = tmp_path / "rows.json"
    lra_learn.cmd_rows(tmp_path / "group", "pathfinder", out, concurrent=4)
    (row,) = json.loads(out.read_text())["results"]
    assert (row["task"], row["backbone"], row["data"]) == ("pathfinder", "maelre", "generated")
    assert row["accuracy"] == pytest.approx(71.36)
    assert row["status"] == "time_limit" and "23000 of 50000 steps" in row["message"]
    assert row["train_seconds"] is None and row["concurrent_runs"] == 4
    assert row["val_accuracy"] == pytest.approx(100 * results["metrics"]["val/best_acc"])  # no best checkpoint here

    best = run / "checkpoints" / "best"
    best.mkdir(parents=True)
    (best / "meta.json").write_text(json.dumps({"global_step": 22_000, "metrics": {"val/acc": 0.7201}}))
    lra_learn.cmd_rows(tmp_path / "group", "pathfinder", out, concurrent=4, names={"maelre": "maelre_noconv"})
    (row,) = json.loads(out.read_text())["results"]
    assert row["backbone"] == "maelre_noconv" and row["val_accuracy"] == pytest.approx(72.01)  # the best checkpoint's validation

    # a call that finished the run but whose folders did not come back: its curves say how far it got
    curves = tmp_path / "curves.json"
    curves.write_text(json.dumps({"group": "group", "runs": {"maelre/fit": {"global_step": 50_000, "metrics": {"test/acc": 0.7657, "val/best_acc": 0.73}}}}))
    lra_learn.cmd_rows(tmp_path / "group", "pathfinder", out, concurrent=4, curves=curves)
    (row,) = json.loads(out.read_text())["results"]
    assert (row["status"], row["steps"]) == ("ok", 50_000) and row["accuracy"] == pytest.approx(76.57)
    assert "stops at step 23000" in row["message"] and row["val_accuracy"] == pytest.approx(73.0)  # the better of the two
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"group": "another", "runs": {}}))
    with pytest.raises(SystemExit, match="another"):
        lra_learn.cmd_rows(tmp_path / "group", "pathfinder", out, concurrent=4, curves=other)
    other.write_text(json.dumps({"group": "group", "runs": {"maelre/fit": {"global_step": None, "metrics": None}}}))
    lra_learn.cmd_rows(tmp_path / "group", "pathfinder", out, concurrent=4, curves=other)  # nulls: not used
    curves.write_text(json.dumps({"runs": {"maelre/fit": {"global_step": 20_000, "metrics": {"test/acc": 0.5}}}}))
    lra_learn.cmd_rows(tmp_path / "group", "pathfinder", out, concurrent=4, curves=curves)  # behind the folder: not used
    (row,) = json.loads(out.read_text())["results"]
    assert (row["status"], row["steps"], round(row["accuracy"], 2)) == ("time_limit", 23_000, 71.36)


def test_the_masking_ablation_variants_belong_to_their_task(tmp_path):
    """`masked` is pathfinder's levers with zero pixels as padding; each ablation variant refuses the other task."""
    import subprocess
    import warnings

    from maelre.recipe import RecipeWarning, load_recipe

    stub = _recording_python(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHON": str(stub), "ARGS_FILE": str(tmp_path / "args"), "CHECK": "1", "PF_ROOT": "/data/pf",
           "BACKBONES": "transformer"}
    script = str(_PATH.with_name("lra_learn.sh"))
    done = subprocess.run(["bash", script, "pathfinder", "masked", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    call = json.loads((tmp_path / "args").read_text().splitlines()[0])
    overrides = [call[4:][i + 1] for i in range(len(call) - 4) if call[4:][i] == "--set"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RecipeWarning)
        recipe = load_recipe(_PATH.parents[1] / call[3], overrides)
    assert recipe.data.adapter["mask_zero"] is True and recipe.data.adapter["pixel_embed"] == "linear"
    assert recipe.data.augment_inputs == ["hflip", "vflip"] and recipe.backbone_kwargs()["dim"] == 128  # levers, at pathfinder's size
    for task, variant in (("pathfinder", "nomask"), ("pathfinder_sky", "masked"), ("listops", "masked")):
        refused = subprocess.run(["bash", script, task, variant, "0"], env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "nomask variant is for pathfinder_sky" in refused.stderr


def test_plot_draws_the_named_runs_of_curves_files(tmp_path):
    curves = tmp_path / "g_h200.json"
    curve = [{"step": 500, "val/acc": 0.5}, {"step": 1000, "train/loss": 0.6}, {"step": 1500, "val/acc": 0.61}]
    curves.write_text(json.dumps({"group": "g", "runs": {"maelre/fit": {"curve": curve}, "ecp/fit": {"curve": []}}}))
    out = tmp_path / "curves.png"
    lra_learn.cmd_plot(out, [f"{curves}:maelre/fit=MAELRE"], title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for spec, message in [("no-label", "FILE:RUN=LABEL"), (f"{curves}:transformer/fit=x", "no run 'transformer/fit'"),
                          (f"{curves}:ecp/fit=ECP", "logged no val/acc")]:
        with pytest.raises(SystemExit, match=message):
            lra_learn.cmd_plot(tmp_path / "other.png", [spec])
    with pytest.raises(SystemExit, match="from step 2000"):
        lra_learn.cmd_plot(tmp_path / "late.png", [f"{curves}:maelre/fit=m"], from_step=2000)

"""Bad input, as a new user gives it: each case ends in one clear error (exit 2) or the right behaviour, never
a traceback or a silently wrong result. Corrupt checkpoints fall back to the newest good one (issue 16)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from maelre.cli import main
from maelre.engine.checkpoint import CheckpointWarning, find_checkpoints, load_weights, resume_checkpoint, save_model
from maelre.engine.fit import build_model, prepare_adapter
from maelre.engine.runner import run_recipe
from maelre.recipe import RecipeError, load_recipe
from modalities.datasets import load_dataset
from modalities.datasets.io import TruncatedAudioWarning

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def one_error_line(capsys) -> str:
    """The single ``maelre <command>: error: ...`` line on stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("maelre ")]
    assert len(lines) == 1 and ": error: " in lines[0], err
    return lines[0]


def truncate(path: Path, size: int | None = None) -> None:
    """Cut ``path`` to ``size`` bytes (default: half), as a kill during a copy would."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])


# ---------------------------------------------------------------- recipes
def write_recipe(tmp_path: Path, text: str | bytes, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("value, message", [
    (".nan", "optimizer.lr: expected a finite number, got nan"),
    (".inf", "optimizer.lr: expected a finite number, got inf"),
    ("-1e-3", "optimizer.lr: lr must be a positive finite number, got -0.001"),
])
def test_bad_lr_fails_check_and_fit_before_any_data_or_run_folder(recipe_file, tmp_path, capsys, value, message):
    assert main(["check", str(recipe_file), "--set", f"optimizer.lr={value}"]) == 2
    assert message in one_error_line(capsys)
    run_dir = tmp_path / "run"
    assert main(["fit", str(recipe_file), "--set", f"optimizer.lr={value}", "--run-dir", str(run_dir)]) == 2
    assert message in one_error_line(capsys) and not run_dir.exists()


def test_exponent_floats_are_numbers_as_in_yaml_1_2(recipe_file, tmp_path, capsys):
    text = recipe_file.read_text().replace("lr: 0.005", "lr: 2e-3")
    assert "lr: 2e-3" in text
    assert load_recipe(write_recipe(tmp_path, text)).optimizer.lr == 0.002
    assert load_recipe(write_recipe(tmp_path, text), ["optimizer.weight_decay=1e-2"]).optimizer.weight_decay == 0.01
    quoted = text.replace("lr: 2e-3", "lr: '2e-3'")
    assert main(["check", str(write_recipe(tmp_path, quoted))]) == 2
    assert "optimizer.lr: expected a number, got '2e-3' (a string: remove the quotes" in one_error_line(capsys)


def test_a_section_given_twice_is_an_error(recipe_file, tmp_path, capsys):
    text = recipe_file.read_text() + "trainer:\n  max_epochs: 1\n"
    path = write_recipe(tmp_path, text)
    assert main(["check", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "key 'trainer' is given a second time (first at line" in line and "merge the two" in line


def test_a_binary_recipe_names_the_file(tmp_path, capsys):
    path = write_recipe(tmp_path, bytes(range(256)) * 4, "binary.yaml")
    assert main(["check", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "not a text file" in line


def test_a_recipe_that_is_a_list_names_the_file(tmp_path, capsys):
    path = write_recipe(tmp_path, "- data\n- model\n")
    assert main(["check", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and "holds a YAML list, not a mapping" in line


@pytest.mark.parametrize("override, message", [
    ("model.dropout=1.5", "model.dropout: backbone 'transformer': dropout must be in [0, 1), got 1.5"),
    ("model.drop_path=-0.1", "model.drop_path: backbone 'transformer': drop_path must be in [0, 1), got -0.1"),
    ("optimizer.weight_decay=.nan", "optimizer.weight_decay: expected a finite number, got nan"),
    # found by the fuzz test: sizes beyond int64 escaped from torch as TypeError / OverflowError
    ("model.mlp_ratio=1e30", "model: backbone 'transformer' cannot be built with these settings (empty(): argument"),
    ("model.backbone=maelre model.depth=9223372036854775808", "model.depth: backbone 'maelre': depth must be at most 1024 blocks"),
    ("model.depth=100000", "model.depth: backbone 'transformer': depth must be at most 1024 blocks, got 100000"),  # built for hours before
    # typed by the dataset loader's signature: a number as a path was a TypeError traceback at fit
    ("data.dataset.root=5", "data.dataset.root: expected a string or null, got 5"),
    ("data.dataset.seed=x", "data.dataset.seed: expected an integer, got 'x'"),
    # a negative weight trained the model to get that class wrong; all zeros gave a NaN loss
    ("loss.class_weights=[1,-2]", "loss.class_weights: class_weights must be >= 0 with at least one above 0 (one weight per class), got [1.0, -2.0]"),
    ("loss.class_weights=[0,0]", "loss.class_weights: class_weights must be >= 0 with at least one above 0"),
    ("trainer.devices=0", "trainer.devices: expected a device count (>= 1) or 'auto', got 0"),  # Lightning's traceback at fit
    # named the section only ("data: batch sizes must be >= 1"), not the key or the value
    ("data.eval_batch_size=0", "data.eval_batch_size: eval_batch_size must be >= 1, got 0"),
    ("trainer.log_every_n_steps=-1", "trainer.log_every_n_steps: log_every_n_steps must be >= 1, got -1"),
    # adapter config messages lead with the adapter ("timeseries: ..."): the path named the section only
    ("data.adapter.nan_policy=foo", "data.adapter.nan_policy: timeseries: nan_policy must be one of"),
    ("data.adapter.max_len=0", "data.adapter.max_len: TimeSeriesAdapterConfig: max_len must be a positive integer, got 0"),
])
def test_out_of_range_values_name_the_key(recipe_file, capsys, override, message):
    assert main(["check", str(recipe_file), *(arg for item in override.split() for arg in ("--set", item))]) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("args, message", [
    (["test", "RUN", "--batch-size", "0"], "--batch-size must be >= 1, got --batch-size 0"),  # 0 was ignored silently
    (["validate", "RUN", "--batch-size", "-2"], "--batch-size must be >= 1, got --batch-size -2"),
    (["check", "RECIPE", "--length", "0"], "--length must be >= 1, got --length 0"),  # 0 was ignored, -5 planned nonsense
    (["check", "RECIPE", "--num-classes", "1"], "--num-classes must be >= 2, got --num-classes 1"),
])
def test_out_of_range_command_options_name_the_option(recipe_file, tmp_path, capsys, args, message):
    args = [str(recipe_file) if a == "RECIPE" else str(tmp_path) if a == "RUN" else a for a in args]
    assert main(args) == 2
    assert message in one_error_line(capsys)


@pytest.mark.parametrize("text, message", [
    ("- just\n- a list\n", "holds a YAML list, not a recipe mapping"),
    ("name: [unclosed\n", "is not valid YAML"),
    ("a: 1\na: 2\n", "line 2, column 1: key 'a' is given a second time"),
])
def test_info_names_a_broken_recipe_in_the_recipes_dir(tmp_path, capsys, text, message):
    write_recipe(tmp_path, "description: fine\n", "good.yaml")
    bad = write_recipe(tmp_path, text, "bad.yaml")
    assert main(["info", "--recipes-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and message in line


# ---------------------------------------------------------------- audio files
def write_tone(path: Path, seconds: float = 0.25, subtype: str = "PCM_16", nan: bool = False) -> Path:
    wave = (0.3 * np.sin(np.arange(int(8000 * seconds)) / 5)).astype(np.float32)
    if nan:
        wave[10] = np.nan
    sf.write(path, wave, 8000, subtype=subtype)
    return path


def bad_wavs(folder: Path) -> dict[str, Path]:
    """A 30-byte wav, a zero-byte one and a text file named .wav (all undecodable)."""
    good = write_tone(folder / "good.wav")
    out = {name: folder / f"{name}.wav" for name in ("short30", "empty", "text")}
    out["short30"].write_bytes(good.read_bytes()[:30])
    out["empty"].write_bytes(b"")
    out["text"].write_text("this is not audio\n")
    return out


@pytest.fixture(scope="module")
def audio_model(tmp_path_factory) -> Path:
    """An untrained tiny audio classifier saved as a checkpoint (predict only needs a model)."""
    folder = tmp_path_factory.mktemp("audio")
    train = [(sf.read(write_tone(folder / f"{i}.wav", 0.1 + 0.05 * i), dtype="float32")[0], i % 2) for i in range(4)]
    config = {"dim": 16, "n_mels": 16, "sample_rate": 8000, "max_len": 64}
    adapter = prepare_adapter("audio", config, [((w, 8000), y) for w, y in train])
    model = build_model(adapter, "transformer", {"depth": 1, "heads": 2}, num_classes=2)
    return save_model(folder / "model", model, model.spec, ["a", "b"])


@pytest.mark.parametrize("kind", ["short30", "empty", "text"])
def test_predict_on_an_undecodable_wav_names_it(audio_model, tmp_path, capsys, kind):
    path = bad_wavs(tmp_path)[kind]
    assert main(["predict", str(audio_model), str(path)]) == 2
    line = one_error_line(capsys)
    assert f"cannot decode audio file {path}" in line and "re-download or delete it" in line


def test_predict_warns_about_a_cut_wav_and_still_classifies_it(audio_model, tmp_path, capsys):
    path = write_tone(tmp_path / "cut.wav")
    truncate(path)
    assert main(["predict", str(audio_model), str(path)]) == 0
    captured = capsys.readouterr()
    assert f"warning: audio file {path} is truncated" in captured.err and "cut.wav" in captured.out


def test_predict_rejects_top_k_below_one(audio_model, tmp_path, capsys):
    assert main(["predict", str(audio_model), str(write_tone(tmp_path / "ok.wav")), "--top-k", "0"]) == 2
    assert "--top-k and --batch-size must be >= 1, got --top-k 0" in one_error_line(capsys)


@pytest.fixture
def fsdd_folder(tmp_path) -> Path:
    """A two-file FSDD folder: ``0_x_0.wav`` is test, ``1_x_5.wav`` train."""
    write_tone(tmp_path / "0_x_0.wav")
    write_tone(tmp_path / "1_x_5.wav")
    return tmp_path


def test_dataset_loader_names_a_wav_holding_nan(fsdd_folder):
    path = write_tone(fsdd_folder / "1_x_5.wav", subtype="FLOAT", nan=True)
    train = load_dataset("fsdd", root=fsdd_folder).train
    with pytest.raises(ValueError, match=f"audio file {path} holds 1 NaN or inf samples"):
        train[0]


def test_dataset_loader_warns_about_a_cut_wav(fsdd_folder):
    path = fsdd_folder / "1_x_5.wav"
    truncate(path)
    train = load_dataset("fsdd", root=fsdd_folder).train
    with pytest.warns(TruncatedAudioWarning, match=f"audio file {path} is truncated"):
        wave, _ = train[0]
    assert 0 < len(wave) < 2000


@pytest.mark.parametrize("content", [b"\x93NUMPY garbage", b""])
def test_predict_names_an_unreadable_npy(audio_model, tmp_path, capsys, content):
    path = tmp_path / "x.npy"
    path.write_bytes(content)
    for args in (["--npy", str(path)], [str(path)]):
        assert main(["predict", str(audio_model), *args]) == 2
        line = one_error_line(capsys)
        assert f"cannot read {path} as a numeric .npy array" in line and "numpy.save" in line


def test_predict_names_a_text_file_that_is_not_utf8(tmp_path, capsys):
    adapter = prepare_adapter("text", {"dim": 16, "max_len": 32}, [("ab cd", 0), ("ef gh", 1)])
    model = build_model(adapter, "transformer", {"depth": 1, "heads": 2}, num_classes=2)
    checkpoint = save_model(tmp_path / "model", model, model.spec, ["a", "b"])
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))  # was "'utf-8' codec can't decode byte 0xe9 ...", naming no file
    assert main(["predict", str(checkpoint), str(path)]) == 2
    assert f"input file {path} is not UTF-8 text (byte 3 is 0xe9); convert it to UTF-8" in one_error_line(capsys)


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n garbage", b"not an image"])
def test_predict_names_an_unreadable_image(tmp_path, capsys, content):
    images = [(np.full((8, 8), 40 * i, dtype=np.uint8), i % 2) for i in range(4)]
    model = build_model(prepare_adapter("pixels", {"dim": 16}, images), "transformer", {"depth": 1, "heads": 2}, num_classes=2)
    checkpoint = save_model(tmp_path / "model", model, model.spec, ["a", "b"])
    path = tmp_path / "x.png"
    path.write_bytes(content)  # was a PIL OSError traceback ("Truncated File Read", "cannot identify image file")
    assert main(["predict", str(checkpoint), str(path)]) == 2
    line = one_error_line(capsys)
    assert f"cannot read image file {path}" in line and "damaged or not an image" in line


def test_fit_on_a_single_class_dataset_names_the_dataset(recipe_file, tmp_path, capsys):
    header = "@problemName one\n@timeStamps false\n@univariate true\n@equalLength true\n@seriesLength 4\n@classLabel true a\n@data\n"
    for split in ("TRAIN", "TEST"):
        (tmp_path / f"one_{split}.ts").write_text(header + "".join(f"{i},1,2,3:a\n" for i in range(8)))
    run_dir = tmp_path / "run"
    args = ["fit", str(recipe_file), "--set", "data.dataset.name=ucr", "--set", f"data.dataset.path={tmp_path}", "--run-dir", str(run_dir)]
    assert main(args) == 2
    line = one_error_line(capsys)
    assert f"dataset 'ucr' ({tmp_path}) has 1 class ['a']; a classifier needs at least 2" in line and not run_dir.exists()


# ---------------------------------------------------------------- checkpoints
def test_find_checkpoints_skips_a_folder_removed_while_it_was_listed(finished_run, tmp_path, monkeypatch):
    """Under DDP rank 0 prunes old step checkpoints while another rank may be listing them."""
    import maelre.engine.checkpoint as ckpt

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    found = find_checkpoints(run)
    gone, read = found[0], ckpt.read_json

    def racing_read(path, *args, **kwargs):
        if Path(path).parent == gone and gone.exists():
            shutil.rmtree(gone)  # pruned between the listing and the read
        return read(path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "read_json", racing_read)
    assert len(found) >= 2 and find_checkpoints(run) == found[1:]


def test_resume_falls_back_past_a_corrupt_checkpoint_bit_identically(recipe_file, finished_run, tmp_path, crash_after, capsys):
    run_dir = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_recipe(load_recipe(recipe_file), run_dir=run_dir, callbacks=[crash_after(8)], progress=False)
    newest = run_dir / "checkpoints" / "step-0000006"
    assert find_checkpoints(run_dir)[-1] == newest
    truncate(newest / "training_state.pt")
    stale = run_dir / "checkpoints" / ".tmp-step-0000009-abc123"  # a checkpoint write cut by a kill
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    assert main(["fit", str(recipe_file), "--run-dir", str(run_dir), "--resume", "--no-progress"]) == 0
    err = capsys.readouterr().err
    results = json.loads((run_dir / "results.json").read_text())
    fallback = results["resumed_from"]
    assert fallback.endswith("step-0000004")  # an epoch-end checkpoint: LoaderStateRestore keeps it exact
    assert f"warning: the newest checkpoint {newest} is unreadable" in err and f"resuming from {fallback}" in err
    assert not stale.exists()
    ours = load_weights(run_dir / "checkpoints" / "step-0000012" / "model.safetensors")
    reference = load_weights(finished_run / "checkpoints" / "step-0000012" / "model.safetensors")
    assert ours.keys() == reference.keys() and all(torch.equal(ours[k], reference[k]) for k in ours)


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    return Path(shutil.copytree(finished_run, tmp_path / "copy"))


@pytest.mark.parametrize("damage", ["truncated training_state.pt", "zero-byte training_state.pt", "truncated model.safetensors"])
def test_resume_checkpoint_skips_an_unreadable_newest_one(run_copy, damage):
    newest = find_checkpoints(run_copy)[-1]
    name = damage.split()[-1]
    truncate(newest / name, 0 if damage.startswith("zero") else None)
    with pytest.warns(CheckpointWarning, match=f"the newest checkpoint {newest} is unreadable .*{name} cannot be read"):
        chosen = resume_checkpoint(run_copy)
    assert chosen is not None and chosen != newest and chosen in find_checkpoints(run_copy)


def test_resume_with_every_checkpoint_unreadable_is_a_clear_error(recipe_file, run_copy, capsys):
    for checkpoint in find_checkpoints(run_copy):
        (checkpoint / "training_state.pt").write_bytes(b"")
    assert main(["fit", str(recipe_file), "--run-dir", str(run_copy), "--resume"]) == 2
    line = one_error_line(capsys)
    assert f"cannot resume {run_copy}: no checkpoint reads back" in line and "start a new run" in line


@pytest.mark.parametrize("command", ["test", "predict"])
def test_a_corrupt_best_checkpoint_points_to_the_newest_good_one(run_copy, tmp_path, capsys, command):
    truncate(run_copy / "checkpoints" / "best" / "model.safetensors")
    np.save(tmp_path / "x.npy", np.zeros((2, 24), dtype=np.float32))
    extra = ["--npy", str(tmp_path / "x.npy")] if command == "predict" else []
    assert main([command, str(run_copy), *extra]) == 2
    line = one_error_line(capsys)
    best, good = run_copy / "checkpoints" / "best", run_copy / "checkpoints" / "step-0000012"
    assert f"checkpoint {best} is corrupt" in line and "model.safetensors cannot be read" in line
    assert f"the newest good checkpoint is {good}: pass that path instead" in line
    assert main([command, str(good), *extra]) == 0  # and that one works


def test_recipe_error_is_the_only_error_type_of_load_recipe(tmp_path):
    with pytest.raises(RecipeError, match="not a text file"):
        load_recipe(write_recipe(tmp_path, b"\xff\xfe\x00binary"))


@pytest.mark.parametrize("text", ["", "data: [unclosed\n", "- a list\n"])
def test_resume_with_a_damaged_run_recipe_says_how_to_restore_it(recipe_file, run_copy, capsys, text):
    (run_copy / "recipe.yaml").write_text(text)  # was an AttributeError / YAML traceback
    assert main(["fit", str(recipe_file), "--run-dir", str(run_copy), "--resume"]) == 2
    line = one_error_line(capsys)
    assert f"cannot check the run being resumed: {run_copy / 'recipe.yaml'} is damaged" in line
    assert "every checkpoint keeps a copy" in line


def test_an_emptied_checkpoint_recipe_is_corrupt_not_missing(run_copy, capsys):
    """It read as "not trained from a recipe", which sent the user to the Python API."""
    (run_copy / "checkpoints" / "best" / "recipe.yaml").write_text("")
    assert main(["test", str(run_copy)]) == 2
    line = one_error_line(capsys)
    assert "recipe.yaml cannot be read (ValueError: empty file)" in line and "the newest good checkpoint is" in line


def test_test_takes_a_runs_own_recipe_file_and_names_a_recipe_without_runs(recipe_file, run_copy, tmp_path, capsys, monkeypatch):
    assert main(["test", str(run_copy / "recipe.yaml")]) == 0  # that run, not runs/<name> under the working directory
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    assert main(["test", str(recipe_file)]) == 2
    line = one_error_line(capsys)
    assert f"recipe {recipe_file} has no run under runs/tiny_ts (its output.run_dir); pass the run directory" in line


def test_init_from_a_corrupt_checkpoint_points_to_the_newest_good_one(recipe_file, run_copy, tmp_path, capsys):
    truncate(run_copy / "checkpoints" / "best" / "model.safetensors")  # was a SafetensorError traceback
    run_dir = tmp_path / "fine_tuned"
    assert main(["fit", str(recipe_file), "--init-from", str(run_copy), "--run-dir", str(run_dir)]) == 2
    line = one_error_line(capsys)
    assert f"checkpoint {run_copy / 'checkpoints' / 'best'} is corrupt" in line and "model.safetensors cannot be read" in line
    assert f"the newest good checkpoint is {run_copy / 'checkpoints' / 'step-0000012'}: pass that path instead" in line
    assert not run_dir.exists()

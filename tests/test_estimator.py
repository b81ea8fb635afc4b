"""``MAELREClassifier`` and ``maelre.inputs`` on real data (UCR/UEA sets bundled with sktime,
scikit-learn's digits, FSDD speech) and tiny synthetic text."""
from __future__ import annotations

import logging
import pickle

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from safetensors import safe_open
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.class_weight import compute_class_weight
from sktime.datasets import load_UCR_UEA_dataset

import maelre.engine
from maelre import MAELREClassifier
from maelre.inputs import detect_input, to_items

TINY = dict(dim=16, depth=1, heads=2, max_epochs=3, batch_size=16, lr=1e-2, random_state=0)


pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def gunpoint():
    """GunPoint (UCR, univariate, length 150, 2 classes) as numpy ``(n, T)`` arrays, official split."""
    out = []
    for split in ("train", "test"):
        X, y = load_UCR_UEA_dataset("GunPoint", split=split, return_X_y=True)
        out += [np.stack(X.iloc[:, 0].map(np.asarray).to_list()), y]
    return out


@pytest.fixture(scope="module")
def fitted(gunpoint):
    X, y, _, _ = gunpoint
    # 200 steps: small UCR sets need steps more than width (10-step patches: 15 tokens)
    return MAELREClassifier(**{**TINY, "max_epochs": 40, "batch_size": 10, "lr": 3e-3, "adapter_params": {"patch_len": 10}}).fit(X, y)


# ----------------------------------------------------------------- input detection
@pytest.mark.parametrize(
    "X, modality, layout",
    [
        (np.zeros((4, 10)), "timeseries", "table"),
        ([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]], "timeseries", "table"),
        (pd.DataFrame(np.zeros((4, 3))), "timeseries", "table"),
        (np.zeros((4, 2, 10)), "timeseries", "array"),
        ([np.zeros(5), np.zeros(9)], "timeseries", "sequence"),
        ([np.zeros((2, 5)), np.zeros((2, 9))], "timeseries", "sequence"),
        (np.zeros((4, 8, 8), dtype=np.uint8), "image", "array"),
        (np.zeros((4, 8, 8, 3)), "image", "array"),
        (["a text", "another"], "text", "text"),
        (np.array(["a text", "another"]), "text", "text"),
        (pd.Series(["a text", "another"], dtype=object), "text", "text"),
        ([(np.zeros(80, dtype=np.float32), 8000)], "audio", "audio_pairs"),
    ],
)
def test_detect_input_forms(X, modality, layout):
    found = detect_input(X)
    assert (found.modality, found.layout) == (modality, layout)
    assert found.reason


def test_detect_input_sktime_panels():
    X, _ = load_UCR_UEA_dataset("BasicMotions", split="train", return_X_y=True)
    assert detect_input(X).layout == "panel"  # nested_univ
    from sktime.datatypes import convert_to

    multi = convert_to(X, to_type="pd-multiindex")
    assert detect_input(multi).layout == "panel"
    items = to_items(multi, detect_input(multi))
    assert len(items) == len(X) and items[0].shape == (6, 100)
    np.testing.assert_allclose(items[3][2], X.iloc[3, 2].to_numpy())


@pytest.mark.parametrize("X, index", [([None, None], 0), ([np.zeros(5), None, np.zeros(5)], 1)])
def test_a_missing_sample_is_named_not_called_a_list_of_numbers(X, index):
    with pytest.raises(ValueError, match=rf"X\[{index}\] is NoneType None, not a sample"):
        detect_input(X)


def test_3d_float_is_series_but_uint8_is_images_and_modality_overrides():
    floats = np.random.default_rng(0).random((3, 8, 8))
    assert detect_input(floats).modality == "timeseries"
    assert "modality='image'" in detect_input(floats).reason  # says how to override
    assert detect_input((floats * 255).astype(np.uint8)).modality == "image"
    assert detect_input(floats, modality="image").modality == "image"


def test_sample_rate_makes_waveforms_audio():
    waves = np.zeros((3, 400), dtype=np.float32)
    found = detect_input(waves, sample_rate=8000)
    assert found.modality == "audio"
    items = to_items(waves, found, sample_rate=8000)
    assert len(items) == 3 and items[0][1] == 8000 and items[0][0].shape == (400,)


def test_variable_length_series_keep_their_lengths():
    X = [np.arange(5.0), np.arange(9.0)]
    items = to_items(X, detect_input(X))
    assert [x.shape for x in items] == [(1, 5), (1, 9)]
    np.testing.assert_array_equal(items[1][0], np.arange(9.0))


@pytest.mark.parametrize(
    "X, kwargs, message",
    [
        ([], {}, "empty"),
        (["text", 3.0], {}, "mixes strings"),
        ([np.zeros((2, 2, 2, 2))], {}, "cannot tell what X is"),
        ([1.0, 2.0, 3.0], {}, "flat list of numbers"),
        (np.zeros((3, 5)), {"modality": "text"}, "does not take this input"),
        (np.zeros((3, 5)), {"modality": "image"}, "3D"),
        (np.zeros((3, 5)), {"modality": "timeseries", "sample_rate": 8000}, "sample_rate only applies to audio"),
        (np.zeros((3, 5)), {"modality": "audio"}, "needs a sample rate"),
        (np.zeros((3, 5)), {"modality": "video"}, "modality must be"),
    ],
)
def test_detect_input_errors(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        detect_input(X, **kwargs)


def test_nan_in_series_is_rejected_unless_a_nan_policy_is_set():
    X = [np.array([0.0, np.nan, 1.0])]
    with pytest.raises(ValueError, match="NaN.*nan_policy"):
        to_items(X, detect_input(X))
    assert np.isnan(to_items(X, detect_input(X), allow_nan=True)[0]).any()


# ----------------------------------------------------------------- fitting real data
def test_fits_gunpoint_well_above_chance(fitted, gunpoint):
    _, _, X_test, y_test = gunpoint
    assert fitted.modality_ == "timeseries" and fitted.n_features_in_ == 150
    assert fitted.n_iter_ == 40 and len(fitted.history_) == 40
    assert fitted.history_[-1]["train/loss"] < fitted.history_[0]["train/loss"]
    assert fitted.score(X_test, y_test) > 0.7  # 2 balanced classes: chance is 0.5
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(X_test))


def test_multivariate_panel_and_unequal_length_lists():
    X, y = load_UCR_UEA_dataset("BasicMotions", split="train", return_X_y=True)
    X_test, y_test = load_UCR_UEA_dataset("BasicMotions", split="test", return_X_y=True)
    clf = MAELREClassifier(**{**TINY, "max_epochs": 15}).fit(X, y)  # nested_univ DataFrame, 6 channels
    assert clf.adapter_.channels == 6 and not hasattr(clf, "n_features_in_")
    assert clf.score(X_test, y_test) > 0.5  # 4 classes: chance is 0.25

    Xv, yv = load_UCR_UEA_dataset("JapaneseVowels", split="train", return_X_y=True)
    series = [np.stack([Xv.iloc[i, c].to_numpy() for c in range(Xv.shape[1])]) for i in range(60)]
    assert len({s.shape[1] for s in series}) > 1  # really unequal lengths
    clf = MAELREClassifier(**TINY).fit(series, yv[:60])
    assert clf.predict(series[:5]).shape == (5,)
    with pytest.raises(ValueError, match="channels"):
        clf.predict([s[:3] for s in series[:5]])


def test_digit_images_uint8(caplog):
    digits = load_digits()
    images = (digits.images * 15).astype(np.uint8)  # 0..16 -> 0..240
    with caplog.at_level(logging.INFO, logger="maelre.estimator"):
        clf = MAELREClassifier(**{**TINY, "max_epochs": 6}).fit(images[:600], digits.target[:600])
    assert clf.modality_ == "image" and "uint8" in caplog.text
    config = clf.adapter_.config
    assert config.img_size == (8, 8) and config.in_chans == 1 and config.patch_size == (2, 2)
    assert clf.score(images[1200:], digits.target[1200:]) > 0.4  # 10 classes: chance is 0.1


def test_float_images_read_as_series_unless_told(capsys):
    images = load_digits().images[:40] / 16.0
    y = load_digits().target[:40] % 2
    clf = MAELREClassifier(**{**TINY, "max_epochs": 1, "verbose": 1}).fit(images, y)
    assert clf.modality_ == "timeseries" and clf.adapter_.channels == 8
    assert "modality='image'" in capsys.readouterr().out
    clf = MAELREClassifier(**{**TINY, "max_epochs": 1}, modality="image").fit(images, y)
    assert clf.modality_ == "image"
    pixels = MAELREClassifier(**{**TINY, "max_epochs": 1}, modality="pixels").fit(images, y)
    assert pixels.modality_ == "pixels" and pixels.predict(images[:3]).shape == (3,)


def test_text_and_label_types():
    rng = np.random.default_rng(0)
    words = {"pos": ["great", "lovely", "superb"], "neg": ["awful", "boring", "dreadful"]}
    labels = rng.choice(["neg", "pos"], size=60)
    docs = [" ".join(rng.choice(words[label], size=4)) + " film" for label in labels]
    clf = MAELREClassifier(**{**TINY, "max_epochs": 8}).fit(docs, labels)
    assert clf.modality_ == "text"
    assert clf.classes_.tolist() == ["neg", "pos"]
    assert clf.score(docs, labels) > 0.9
    with pytest.raises(ValueError, match="does not take this input"):
        clf.predict(np.zeros((2, 5)))

    ints = MAELREClassifier(**{**TINY, "max_epochs": 1}).fit(docs, np.where(labels == "pos", 7, -3))
    assert ints.classes_.tolist() == [-3, 7] and set(ints.predict(docs)) <= {-3, 7}
    with pytest.raises(TypeError, match="uniformly strings or numbers"):  # LabelEncoder semantics
        MAELREClassifier(**TINY).fit(docs[:4], np.array(["a", 1, "b", 2], dtype=object))


def test_audio_pairs_and_waveforms_with_sample_rate(shared_data):
    folder = shared_data / "fsdd" / "recordings"
    clips, labels = [], []
    for digit in (0, 1):
        for index in range(5, 11):
            wave, rate = sf.read(folder / f"{digit}_jackson_{index}.wav", dtype="float32")
            clips.append((wave, rate))
            labels.append(digit)
    small = dict(TINY, max_epochs=2, adapter_params={"n_mels": 16, "max_len": 256})
    clf = MAELREClassifier(**small).fit(clips, labels)
    assert clf.modality_ == "audio" and clf.adapter_.config.sample_rate == 8000
    assert clf.predict_proba(clips[:3]).shape == (3, 2)
    waves = [w for w, _ in clips]
    bare = MAELREClassifier(**small, sample_rate=8000).fit(waves, labels)
    assert bare.modality_ == "audio"
    np.testing.assert_allclose(bare.predict_proba(waves), clf.predict_proba(clips), atol=1e-6)


# ----------------------------------------------------------------- options
def test_class_weight_reaches_the_loss(monkeypatch, gunpoint):
    X, y = gunpoint[0][:30], gunpoint[1][:30]
    seen = {}
    real = maelre.engine.fit_classifier

    def spy(*args, **kwargs):
        seen["weights"] = kwargs["class_weights"]
        return real(*args, **kwargs)

    monkeypatch.setattr(maelre.engine, "fit_classifier", spy)
    MAELREClassifier(**{**TINY, "max_epochs": 1}, class_weight="balanced").fit(X, y)
    np.testing.assert_allclose(seen["weights"], compute_class_weight("balanced", classes=np.unique(y), y=y))
    heavy = MAELREClassifier(**{**TINY, "max_epochs": 3}, class_weight={1: 1000.0, 2: 1e-4}).fit(X, y)
    assert seen["weights"] == [1000.0, 1e-4]
    assert (heavy.predict(gunpoint[2]) == "1").mean() > 0.9


def test_series_of_different_lengths_train_in_length_buckets(monkeypatch, gunpoint):
    X, y = gunpoint[0][:16], gunpoint[1][:16]
    seen = []
    real = maelre.engine.fit_classifier

    def spy(*args, **kwargs):
        seen.append((kwargs["bucket_by_length"], kwargs["bucket_batches"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(maelre.engine, "fit_classifier", spy)
    MAELREClassifier(**{**TINY, "max_epochs": 1}).fit(X, y)
    MAELREClassifier(**{**TINY, "max_epochs": 1}).fit([x[: 50 + 5 * i] for i, x in enumerate(X)], y)
    assert seen == [(False, 4), (True, 4)]


def test_early_stopping_holds_out_and_stops(gunpoint):
    X, y = gunpoint[0], gunpoint[1]
    clf = MAELREClassifier(**{**TINY, "max_epochs": 40}, early_stopping=True, n_iter_no_change=2, validation_fraction=0.2).fit(X, y)
    assert clf.n_iter_ < 40
    assert "val/acc" in clf.history_[-1]
    assert sum(1 for _ in clf.history_) == clf.n_iter_


def test_random_state_reproducible_and_global_rng_untouched(gunpoint):
    X, y = gunpoint[0][:30], gunpoint[1][:30]
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    torch_before = torch.get_rng_state().clone()
    a = MAELREClassifier(**TINY).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(np.random.get_state()[1], before)
    assert torch.equal(torch.get_rng_state(), torch_before)
    b = MAELREClassifier(**TINY).fit(X, y).predict_proba(X)
    c = MAELREClassifier(**{**TINY, "random_state": 1}).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_nan_policy_lets_missing_values_through(gunpoint):
    X, y = gunpoint[0][:20].copy(), gunpoint[1][:20]
    X[::3, 40:45] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MAELREClassifier(**TINY).fit(X, y)
    clf = MAELREClassifier(**{**TINY, "max_epochs": 1}, adapter_params={"nan_policy": "interpolate"}).fit(X, y)
    assert clf.__sklearn_tags__().input_tags.allow_nan
    assert np.isfinite(clf.predict_proba(X)).all()


def test_other_backbone():
    X, y = load_UCR_UEA_dataset("ArrowHead", split="train", return_X_y=True)
    clf = MAELREClassifier(**TINY, backbone="transformer").fit(X, y)
    assert clf.model_.spec.backbone == "transformer"
    config = clf.adapter_.config
    assert (config.token, config.patch_len, config.max_len) == ("patch", 2, 126)  # ceil(251 / 128) steps per patch


@pytest.mark.parametrize(
    "params, error, message",
    [
        ({"lr": -1.0}, ValueError, "'lr' parameter"),
        ({"modality": "video"}, ValueError, "'modality' parameter"),
        ({"backbone": "maelr"}, ValueError, "did you mean 'maelre'"),
        ({"backbone_params": {"dim": 8}}, ValueError, "estimator's own parameters"),
        ({"adapter_params": {"dim": 8}}, ValueError, "estimator's dim parameter"),
        ({"adapter_params": {"patch_size": 3}}, ValueError, "no setting 'patch_size'"),
        ({"dim": 10, "heads": 4}, ValueError, "divisible"),
    ],
)
def test_bad_parameters_raise_clear_errors(params, error, message):
    X = np.random.default_rng(0).random((8, 6))
    with pytest.raises(error, match=message):
        MAELREClassifier(**{**TINY, **params}).fit(X, np.arange(8) % 2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised where CUDA is missing")
def test_cuda_device_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        MAELREClassifier(**TINY, device="cuda").fit(np.zeros((4, 3)), [0, 1, 0, 1])


def test_predict_checks_fixed_length(fitted, gunpoint):
    with pytest.raises(ValueError, match="has 100 features, but MAELREClassifier is expecting 150"):
        fitted.predict(gunpoint[2][:, :100])


# ----------------------------------------------------------------- persistence
def test_save_load_roundtrip(tmp_path, fitted, gunpoint):
    path = fitted.save(tmp_path / "gunpoint.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gunpoint.safetensors"]  # no temp file left
    with safe_open(str(path), framework="pt") as fh:
        assert "maelre_estimator" in fh.metadata()
    loaded = MAELREClassifier.load(path)
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.classes_, fitted.classes_)
    assert loaded.classes_.dtype == fitted.classes_.dtype
    assert loaded.n_features_in_ == 150 and loaded.history_ == fitted.history_
    np.testing.assert_allclose(loaded.predict_proba(gunpoint[2]), fitted.predict_proba(gunpoint[2]), atol=1e-6)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        MAELREClassifier.load(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="no MAELREClassifier state"):
        MAELREClassifier.load(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x05")
    with pytest.raises(ValueError, match="not a safetensors file"):
        MAELREClassifier.load(tmp_path / "junk.safetensors")


def test_load_of_a_truncated_file_names_it(fitted, tmp_path):
    path = fitted.save(tmp_path / "clf.safetensors")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])  # a copy cut short: was a SafetensorError traceback
    with pytest.raises(ValueError, match=f"cannot load a MAELREClassifier from {path} .*incomplete metadata.*save the fitted estimator again"):
        MAELREClassifier.load(path)


def test_pickle_stores_weights_not_modules(fitted, gunpoint):
    blob = pickle.dumps(fitted)
    assert b"SequenceClassifier" not in blob and b"maelre.model" not in blob
    restored = pickle.loads(blob)
    np.testing.assert_allclose(restored.predict_proba(gunpoint[2]), fitted.predict_proba(gunpoint[2]), atol=1e-6)
    unfitted = pickle.loads(pickle.dumps(clone(fitted)))
    assert not hasattr(unfitted, "model_") and unfitted.get_params() == fitted.get_params()


def test_random_state_object_pickles_but_is_refused_by_save(tmp_path, gunpoint):
    clf = MAELREClassifier(**{**TINY, "max_epochs": 1, "random_state": np.random.RandomState(0)}).fit(gunpoint[0][:20], gunpoint[1][:20])
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(restored.predict_proba(gunpoint[2][:5]), clf.predict_proba(gunpoint[2][:5]), atol=1e-6)
    with pytest.raises(ValueError, match="JSON-serialisable"):
        clf.save(tmp_path / "clf.safetensors")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------- scikit-learn composition
def test_pipeline_grid_search_and_cross_val(gunpoint):
    X, y = gunpoint[0][:40], gunpoint[1][:40]
    pipe = Pipeline([("diff", FunctionTransformer(np.diff)), ("clf", MAELREClassifier(**{**TINY, "max_epochs": 2}))])
    assert pipe.fit(X, y).predict(X).shape == (40,)
    assert pipe.named_steps["clf"].n_features_in_ == 149
    search = GridSearchCV(MAELREClassifier(**{**TINY, "max_epochs": 2}), {"lr": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert search.best_params_["lr"] in (1e-3, 1e-2) and len(search.cv_results_["mean_test_score"]) == 2
    scores = cross_val_score(MAELREClassifier(**{**TINY, "max_epochs": 2}), X, y, cv=2)
    assert scores.shape == (2,) and ((scores >= 0) & (scores <= 1)).all()


# ----------------------------------------------------------------- data-derived defaults
def test_auto_settings_rules():
    from maelre.estimator import GENERIC_DEFAULTS, auto_settings

    params = MAELREClassifier().get_params()
    small = auto_settings(params, "timeseries", np.repeat([0, 1], 25))  # GunPoint-sized
    assert small["dim"] == 32 and small["heads"] == 2 and small["depth"] == 2 and small["batch_size"] == 8
    assert not small["early_stopping"] and small["max_epochs"] == 58  # 400 steps of 7 batches, all 50 series
    large = auto_settings(params, "timeseries", np.arange(2000) % 4)
    assert large["dim"] == 64 and large["heads"] == 4 and large["batch_size"] == 32 and large["max_epochs"] == 20
    assert large["early_stopping"] and large["stop_on"] == "val/loss" and large["n_iter_no_change"] == 10
    assert auto_settings(params, "text", np.repeat([0, 1], 25)) == {**GENERIC_DEFAULTS, "stop_on": "val/acc"}
    # the user's values win; a fixed epoch count means exactly that many epochs (no stopping)
    fixed = auto_settings({**params, "max_epochs": 7, "dim": 48}, "timeseries", np.arange(2000) % 4)
    assert fixed["max_epochs"] == 7 and fixed["dim"] == 48 and not fixed["early_stopping"]
    assert not auto_settings(params, "timeseries", np.array([0] * 1200 + [1]))["early_stopping"]  # a class with one series: no split


def test_auto_defaults_stop_early_on_large_sets(gunpoint, monkeypatch, capsys):
    import maelre.estimator_settings as est

    monkeypatch.setattr(est, "TS_LARGE", 20)
    monkeypatch.setattr(est, "TS_TARGET_STEPS", 2)
    monkeypatch.setattr(est, "TS_EPOCH_RANGE", (3, 3))
    X, y, X_test, _ = gunpoint
    clf = MAELREClassifier(dim=8, depth=1, heads=2, random_state=0).fit(X[:30], y[:30])
    assert capsys.readouterr().out == ""  # progress only with verbose
    s = clf.settings_
    assert s["early_stopping"] and s["max_epochs"] == 3 and 1 <= clf.n_iter_ <= 3 and "val/acc" in clf.history_[0]
    config = clf.adapter_.config
    assert config.stem == "conv" and config.normalize == "instance" and config.scale_channels and config.augment == ()
    assert config.stem_kernels == (9, 9, 9) and config.stem_dilations == (1, 2, 4) and config.stem_pool == "input"
    assert config.stem_layers == 1 and config.stem_token_layers == 2 and config.stem_norm == "batch"
    assert clf.predict(X_test[:5]).shape == (5,)
    again = MAELREClassifier(dim=8, depth=1, heads=2, random_state=0).fit(X[:30], y[:30])
    np.testing.assert_array_equal(again.predict_proba(X_test[:5]), clf.predict_proba(X_test[:5]))


def test_own_stem_kernels_drop_the_default_dilations(gunpoint):
    X, y = gunpoint[0][:12], gunpoint[1][:12]
    clf = MAELREClassifier(dim=8, depth=1, heads=2, max_epochs=1, random_state=0, adapter_params={"stem_kernels": [5, 11]}).fit(X, y)
    assert clf.adapter_.config.stem_kernels == (5, 11) and clf.adapter_.config.stem_dilations is None


def test_defaults_see_the_shape_of_series_at_any_scale():
    """Series whose scales span six decades (as in PLAID's currents): the defaults z-normalize each series,
    so the small ones are not flattened to a constant by the large ones' statistics (they were: chance on them)."""
    rng = np.random.default_rng(0)
    t = np.linspace(0, 1, 32)

    def panel(n: int) -> tuple[list, np.ndarray]:
        y = np.arange(n) % 2
        shapes = np.where(y[:, None] == 1, np.sign(np.sin(6 * t)), np.sin(6 * t))  # sine vs square wave
        scale = 10.0 ** rng.uniform(-4, 2, size=(n, 1))
        return list(scale * (shapes + 0.05 * rng.normal(size=(n, 32)))), y

    X, y = panel(40)
    X_test, y_test = panel(40)
    clf = MAELREClassifier(dim=16, depth=1, heads=2, max_epochs=15, batch_size=8, random_state=0).fit(X, y)
    assert clf.adapter_.config.normalize == "instance" and clf.adapter_.config.scale_channels
    assert clf.score(X_test, y_test) >= 0.9
    assert clf.model_.backbone.config.value_conv is None  # TS_MAELRE_DEFAULTS; backbone_params win:
    own = MAELREClassifier(dim=16, depth=1, heads=2, max_epochs=1, batch_size=8, backbone_params={"value_conv": 3}, random_state=0).fit(X, y)
    assert own.model_.backbone.config.value_conv == 3

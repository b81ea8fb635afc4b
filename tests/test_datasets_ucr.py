"""UCR/UEA loader on the sets bundled with sktime and on user .ts files; the dataset registry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sktime.datasets import load_from_tsfile, load_UCR_UEA_dataset

import modalities.datasets as registry
from modalities.base import DatasetSplits
from modalities.datasets import get_dataset_loader, list_datasets, load_dataset, register_dataset
from modalities.datasets.ucr import class_names, sktime_bundled_dir

# shortcut: (archive name, train, test, channels, length or None if variable, classes)
BUNDLED = {
    "gunpoint": ("GunPoint", 50, 150, 1, 150, 2),
    "italypowerdemand": ("ItalyPowerDemand", 67, 1029, 1, 24, 2),
    "arrowhead": ("ArrowHead", 36, 175, 1, 251, 3),
    "osuleaf": ("OSULeaf", 200, 242, 1, 427, 6),
    "acsf1": ("ACSF1", 100, 100, 1, 1460, 10),
    "basicmotions": ("BasicMotions", 40, 40, 6, 100, 4),
    "plaid": ("PLAID", 537, 537, 1, None, 11),
    "japanesevowels": ("JapaneseVowels", 270, 370, 12, None, 9),
}


@pytest.mark.parametrize("shortcut", sorted(BUNDLED))
def test_bundled_sets_match_sktime(shortcut: str) -> None:
    name, n_train, n_test, channels, length, n_classes = BUNDLED[shortcut]
    data = load_dataset(shortcut)
    assert (len(data.train), len(data.test), len(data.classes)) == (n_train, n_test, n_classes)
    assert data.modality == "timeseries" and data.meta["name"] == name and data.meta["num_channels"] == channels
    lengths = {x.shape[1] for x, _ in data.test}
    assert all(x.shape[0] == channels and x.dtype == np.float32 for x, _ in data.train)
    assert lengths == {length} if length else len(lengths) > 1  # PLAID and JapaneseVowels keep their own lengths
    if length:  # values and labels equal sktime's own 3D array
        x_ref, y_ref = load_UCR_UEA_dataset(name, split="test", return_type="numpy3D")
        np.testing.assert_array_equal(np.stack([x for x, _ in data.test]), x_ref.astype(np.float32))
        assert [data.classes[y] for y in data.test.labels] == list(y_ref)


def test_variable_length_values_and_numeric_class_order() -> None:
    data = load_dataset("ucr", name="plaid")  # case-insensitive name
    x_ref, y_ref = load_UCR_UEA_dataset("PLAID", split="train")
    assert data.classes == [str(c) for c in range(11)]  # "10" after "9", not after "1"
    for i in (0, 100, 536):
        np.testing.assert_array_equal(data.train[i][0][0], x_ref.iloc[i, 0].to_numpy(np.float32))
        assert data.classes[data.train[i][1]] == y_ref[i]
    assert (data.meta["min_length"], data.meta["max_length"]) == (100, 1344)


def test_validation_split_is_stratified_and_seeded() -> None:
    full = load_dataset("gunpoint")
    data = load_dataset("gunpoint", val_fraction=0.2, seed=7)
    assert (len(data.train), len(data.val), len(data.test)) == (40, 10, 150)
    ratio = lambda split: np.bincount(split.labels, minlength=2) / len(split)  # noqa: E731
    np.testing.assert_allclose(ratio(data.val), ratio(full.train), atol=0.1)
    rows = lambda split: sorted(x.tobytes() for x, _ in split)  # noqa: E731
    assert sorted(rows(data.train) + rows(data.val)) == rows(full.train)
    assert rows(load_dataset("gunpoint", val_fraction=0.2, seed=7).val) == rows(data.val)
    assert rows(load_dataset("gunpoint", val_fraction=0.2, seed=8).val) != rows(data.val)


def test_user_ts_files(tmp_path: Path) -> None:
    unit = load_dataset("ucr", path=sktime_bundled_dir() / "UnitTest")  # a folder with *_TRAIN.ts / *_TEST.ts
    x_ref, y_ref = load_from_tsfile(str(sktime_bundled_dir() / "UnitTest" / "UnitTest_TEST.ts"), return_data_type="numpy3D")
    assert (len(unit.train), len(unit.test), unit.classes, unit.meta["name"]) == (20, 22, ["1", "2"], "UnitTest")
    np.testing.assert_array_equal(np.stack([x for x, _ in unit.test]), x_ref.astype(np.float32))

    header = ("@problemName Toy\n@timeStamps false\n@missing false\n@univariate false\n@dimensions 2\n"
              "@equalLength false\n@classLabel true up down\n@data\n")
    (tmp_path / "Toy_TRAIN.ts").write_text(header + "1,2,3:4,5,6:up\n7,8:9,10:down\n0.5:1.5:up\n")
    (tmp_path / "Toy_TEST.ts").write_text(header + "1,1,1,1:2,2,2,2:down\n")
    toy = load_dataset("ucr", path=tmp_path / "Toy_TRAIN.ts")
    assert toy.classes == ["down", "up"] and toy.train.labels.tolist() == [1, 0, 1] and toy.test.labels.tolist() == [0]
    expected = [[[1, 2, 3], [4, 5, 6]], [[7, 8], [9, 10]], [[0.5], [1.5]]]
    for (x, _), ref in zip(toy.train, expected):
        np.testing.assert_array_equal(x, np.array(ref, np.float32))

    (tmp_path / "Toy_TEST.ts").write_text(header + "1,1,1:2,2:down\n")
    with pytest.raises(ValueError, match="case 0 has channels of different lengths"):
        load_dataset("ucr", path=tmp_path)
    (tmp_path / "Toy_TEST.ts").write_text("@problemName Toy\n@data\n1,2:up\n")
    with pytest.raises(ValueError, match="cannot parse time-series file .*Toy_TEST.ts"):
        load_dataset("ucr", path=tmp_path)
    (tmp_path / "Toy_TEST.ts").unlink()
    with pytest.raises(FileNotFoundError, match="Toy_TEST.ts does not exist"):
        load_dataset("ucr", path=tmp_path / "Toy_TRAIN.ts")


def test_root_folder_of_archive_sets(tmp_path: Path) -> None:
    header = ("@problemName Mine\n@timeStamps false\n@missing false\n@univariate true\n@equalLength true\n"
              "@seriesLength 3\n@classLabel true a b\n@data\n")
    (tmp_path / "Mine").mkdir()
    (tmp_path / "Mine" / "Mine_TRAIN.ts").write_text(header + "1,2,3:a\n4,5,6:b\n")
    (tmp_path / "Mine" / "Mine_TEST.ts").write_text(header + "7,8,9:b\n")
    data = load_dataset("ucr", root=tmp_path, name="mine")
    assert data.meta["source"] == str(tmp_path) and data.classes == ["a", "b"]
    np.testing.assert_array_equal(data.test[0][0], [[7, 8, 9]])
    assert len(load_dataset("ucr", root=tmp_path, name="GunPoint").train) == 50  # bundled sets still load from sktime


def test_ucr_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown UCR/UEA dataset 'gunpiont'; did you mean 'GunPoint'"):
        load_dataset("ucr", name="gunpiont")
    with pytest.raises(FileNotFoundError, match="'Adiac' is not bundled with sktime"):
        load_dataset("ucr", name="adiac")  # in the archive, but offline use needs root= or download=True
    with pytest.raises(ValueError, match="exactly one of name= .* or path="):
        load_dataset("ucr")
    with pytest.raises(FileNotFoundError, match=f"UCR/UEA root folder {tmp_path / 'typo'} does not exist"):
        load_dataset("ucr", root=tmp_path / "typo", name="GunPoint")  # loaded sktime's bundled copy silently
    with pytest.raises(ValueError, match="exactly one of name="):
        load_dataset("ucr", name="GunPoint", path=tmp_path)
    with pytest.raises(FileNotFoundError, match="exactly one \\*_TRAIN.ts"):
        load_dataset("ucr", path=tmp_path)
    with pytest.raises(ValueError, match="apply to archive sets"):
        load_dataset("ucr", path=tmp_path, download=True)
    with pytest.raises(ValueError, match="no setting 'name'"):  # shortcuts fix the set
        load_dataset("gunpoint", name="ArrowHead")


def test_class_names_sort_numbers_numerically() -> None:
    assert class_names(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert class_names(["-1", "1", "0.5"]) == ["-1", "0.5", "1"]
    assert class_names(["walk", "10", "run"]) == ["10", "run", "walk"]


# --------------------------------------------------------------------------- registry


def test_registry_lists_all_loaders() -> None:
    assert {"fsdd", "speechcommands", "cifar10", "ucr", *BUNDLED} <= set(list_datasets())
    assert get_dataset_loader("GunPoint") is get_dataset_loader("gunpoint")


def test_registry_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'gunpont'; did you mean 'gunpoint'"):
        load_dataset("gunpont")
    with pytest.raises(ValueError, match="has no setting 'val_frac'; did you mean 'val_fraction'"):
        load_dataset("gunpoint", val_frac=0.1)
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("gunpoint")(lambda root=None: None)

    monkeypatch.setattr(registry, "_DATASETS", dict(registry._DATASETS))  # registrations below are undone

    @register_dataset("Toy")
    def load_toy(root=None, **settings):
        return DatasetSplits(train=[(root, 0)], test=[], classes=["only"], modality="timeseries", meta=settings)

    assert load_dataset("toy", root="r", anything=1).meta == {"anything": 1}  # **settings: no name check
    register_dataset("broken")(lambda root=None: [])
    with pytest.raises(TypeError, match="returned list, not DatasetSplits"):
        load_dataset("broken")

"""FSDD and Speech Commands loaders on real speech (../shared/data/fsdd), and their errors."""
from __future__ import annotations

import shutil
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

import modalities.datasets.io as dataset_io
from modalities.datasets import load_dataset
from modalities.datasets.audio import (
    FSDD_DIGIT_WORDS,
    NOISE_REGIONS,
    FsddRecording,
    resample_many,
    write_fsdd_as_speechcommands,
)
from modalities.datasets.io import AudioClip, read_wav, write_wav

SPEAKERS = ("george", "jackson")


@pytest.fixture(scope="module")
def fsdd_root(shared_data: Path) -> Path:
    return shared_data / "fsdd"


def _keys(split) -> list[tuple[int, str, int]]:
    """(digit, speaker, index) of every FSDD item."""
    return [(r.digit, r.speaker, r.index) for r in map(FsddRecording.from_path, split.items)]


def _sc_keys(split) -> list[tuple[int, str, int]]:
    """(digit, speaker, index) of every FSDD-as-Speech-Commands item, from its word folder and name."""
    keys = []
    for clip in split.items:
        path = Path(clip.path)
        speaker, _, index = path.stem.split("_")
        keys.append((FSDD_DIGIT_WORDS.index(path.parent.name), speaker, int(index)))
    return keys


# --------------------------------------------------------------------------- FSDD


def test_fsdd_official_split_on_real_data(fsdd_root: Path) -> None:
    data = load_dataset("fsdd", root=fsdd_root)
    assert (len(data.train), len(data.test), data.val) == (2700, 300, None)
    assert data.classes == [str(d) for d in range(10)] and data.modality == "audio"
    for split, is_test in ((data.train, False), (data.test, True)):
        keys = _keys(split)
        assert all((index < 5) == is_test for _, _, index in keys)
        assert split.labels.tolist() == [digit for digit, _, _ in keys]  # label = the digit in the file name
        assert Counter(split.labels.tolist()) == {d: 270 if not is_test else 30 for d in range(10)}
        assert Counter(s for _, s, _ in keys) == {s: 450 if not is_test else 50 for s in data.meta["speakers"]}
    assert len(data.meta["speakers"]) == 6
    for i in range(0, 300, 7):  # read real files: 8 kHz mono float32, same samples as soundfile's int16 / 32768
        (wave, rate), label = data.test[i]
        path = data.test.items[i]
        pcm, ref_rate = sf.read(path, dtype="int16")
        assert rate == ref_rate == 8000 and wave.dtype == np.float32 and wave.ndim == 1
        np.testing.assert_array_equal(wave, pcm.astype(np.float32) / 32768)
        assert label == int(Path(path).name[0])


def test_fsdd_default_root_then_env(fsdd_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert len(load_dataset("fsdd").test) == 300  # ../shared/data/fsdd/recordings beside the checkout
    monkeypatch.setattr(dataset_io, "SHARED_DATA", tmp_path / "nowhere")
    monkeypatch.setenv("MAELRE_DATA", str(fsdd_root.parent))
    assert len(load_dataset("fsdd", speakers=["theo"]).train) == 450
    monkeypatch.delenv("MAELRE_DATA")
    with pytest.raises(FileNotFoundError, match="MAELRE_DATA"):
        load_dataset("fsdd")


def test_fsdd_validation_is_speaker_stratified_and_seeded(fsdd_root: Path) -> None:
    full = load_dataset("fsdd", root=fsdd_root)
    data = load_dataset("fsdd", root=fsdd_root, val_fraction=0.1, seed=3)
    assert (len(data.train), len(data.val), len(data.test)) == (2430, 270, 300)
    train, val = set(_keys(data.train)), set(_keys(data.val))
    assert not train & val and train | val == set(_keys(full.train))
    per_pair = Counter((digit, speaker) for digit, speaker, _ in val)
    assert len(per_pair) == 60 and set(per_pair.values()) <= {4, 5}  # 10% of 45 per (speaker, digit)
    assert _keys(load_dataset("fsdd", root=fsdd_root, val_fraction=0.1, seed=3).val) == _keys(data.val)
    assert set(_keys(load_dataset("fsdd", root=fsdd_root, val_fraction=0.1, seed=4).val)) != val


def test_fsdd_speaker_subset(fsdd_root: Path) -> None:
    data = load_dataset("fsdd", root=fsdd_root / "recordings", speakers=["george"])
    assert (len(data.train), len(data.test)) == (450, 50)
    assert {s for _, s, _ in _keys(data.train)} == {"george"}
    with pytest.raises(ValueError, match="did you mean 'george'"):
        load_dataset("fsdd", root=fsdd_root, speakers=["gorge"])


def test_fsdd_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"\{digit\}_\{speaker\}_\{index\}\.wav"):
        load_dataset("fsdd", root=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no \\*.wav files"):
        load_dataset("fsdd", root=tmp_path)
    write_wav(tmp_path / "3_bob_7.wav", np.zeros(800, np.float32), 8000)
    write_wav(tmp_path / "bob_says_3.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(ValueError, match="bob_says_3.wav"):
        load_dataset("fsdd", root=tmp_path)
    (tmp_path / "bob_says_3.wav").unlink()
    with pytest.raises(ValueError, match="no setting 'val_fracton'; did you mean 'val_fraction'"):
        load_dataset("fsdd", root=tmp_path, val_fracton=0.1)
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        load_dataset("fsdd", root=tmp_path, val_fraction=1.5)


def test_corrupt_and_empty_wavs_name_the_file(tmp_path: Path) -> None:
    write_wav(tmp_path / "1_bob_7.wav", np.full(400, 0.25, np.float32), 8000)
    (tmp_path / "2_bob_8.wav").write_bytes(b"RIFF\x00\x00not really a wav file")
    sf.write(tmp_path / "3_bob_9.wav", np.zeros(0, np.float32), 8000, subtype="PCM_16")
    data = load_dataset("fsdd", root=tmp_path)  # lazy: listing does not read
    (wave, rate), label = data.train[0]
    assert rate == 8000 and label == 1 and np.allclose(wave, 0.25, atol=1 / 32768)
    with pytest.raises(ValueError, match="cannot decode audio file .*2_bob_8.wav"):
        data.train[1]
    with pytest.raises(ValueError, match="3_bob_9.wav has no samples"):
        data.train[2]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_wav(tmp_path / "absent.wav")


def test_read_wav_mixes_stereo_to_mono(tmp_path: Path) -> None:
    stereo = np.stack([np.linspace(-0.5, 0.5, 100), np.full(100, 0.25)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, 16000, subtype="FLOAT")
    wave, rate = read_wav(tmp_path / "s.wav")
    assert rate == 16000 and wave.shape == (100,)
    np.testing.assert_allclose(wave, stereo.mean(axis=1), atol=1e-7)
    part, _ = read_wav(tmp_path / "s.wav", start=10, frames=5)
    np.testing.assert_allclose(part, stereo[10:15].mean(axis=1), atol=1e-7)


# --------------------------------------------------------------------------- FSDD laid out as Speech Commands


@pytest.fixture(scope="module")
def sc_root(fsdd_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two FSDD speakers as Speech Commands at 16 kHz, plus background noise (one file too short to use)."""
    root = write_fsdd_as_speechcommands(fsdd_root, tmp_path_factory.mktemp("sc") / "speech_commands",
                                        val_fraction=0.1, seed=0, speakers=SPEAKERS)
    rng = np.random.default_rng(0)
    write_wav(root / "_background_noise_" / "white_noise.wav", 0.1 * rng.standard_normal(20 * 16000), 16000)
    write_wav(root / "_background_noise_" / "blip.wav", 0.1 * rng.standard_normal(8000), 16000)
    return root


@pytest.fixture(scope="module")
def fsdd_subset(fsdd_root: Path):
    return load_dataset("fsdd", root=fsdd_root, val_fraction=0.1, seed=0, speakers=SPEAKERS)


def test_write_fsdd_as_speechcommands_resamples_real_speech(sc_root: Path, fsdd_root: Path) -> None:
    assert sorted(p.name for p in sc_root.iterdir() if p.is_dir() and not p.name.startswith("_")) == sorted(FSDD_DIGIT_WORDS)
    assert len(list(sc_root.glob("*/*_nohash_*.wav"))) == 1000
    original, rate = read_wav(fsdd_root / "recordings" / "7_jackson_12.wav")
    written, new_rate = read_wav(sc_root / "seven" / "jackson_nohash_12.wav")
    expected = torchaudio.functional.resample(torch.from_numpy(original), 8000, 16000).numpy()
    assert (rate, new_rate) == (8000, 16000) and written.shape == expected.shape == (2 * len(original),)
    np.testing.assert_allclose(written, np.clip(expected, -1, 1), atol=1.01 / 32768)  # 16-bit PCM quantisation


def test_resample_many_equals_one_call_per_clip() -> None:
    rng = np.random.default_rng(1)
    clips = [(rng.standard_normal(n).astype(np.float32), rate) for n, rate in ((501, 8000), (77, 8000), (1200, 22050), (3, 8000))]
    for (wave, rate), out in zip(clips, resample_many(clips, 16000)):
        expected = torchaudio.functional.resample(torch.from_numpy(wave), rate, 16000).numpy()
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, atol=1e-5)


def test_speechcommands_35_reproduces_fsdd_split(sc_root: Path, fsdd_subset) -> None:
    data = load_dataset("speechcommands", root=sc_root)  # task "35": every word folder
    assert data.classes == sorted(FSDD_DIGIT_WORDS) and data.modality == "audio"
    for ours, theirs in ((data.train, fsdd_subset.train), (data.val, fsdd_subset.val), (data.test, fsdd_subset.test)):
        assert len(ours) == len(theirs)
        assert sorted(_sc_keys(ours)) == sorted(_keys(theirs))
        words = [data.classes[label] for label in ours.labels]
        assert words == [FSDD_DIGIT_WORDS[digit] for digit, _, _ in _sc_keys(ours)]
    assert (len(data.train), len(data.val), len(data.test)) == (810, 90, 100)
    (wave, rate), label = data.test[0]
    assert rate == 16000 and wave.dtype == np.float32 and wave.ndim == 1 and wave.size > 0


def test_speechcommands_10_keeps_only_keywords(sc_root: Path) -> None:
    full = load_dataset("speechcommands", root=sc_root)
    keywords = ("three", "one", "two")
    data = load_dataset("speechcommands", root=sc_root, task="10", keywords=keywords)
    assert data.classes == list(keywords)
    for ours, theirs in ((data.train, full.train), (data.val, full.val), (data.test, full.test)):
        expected = sorted((clip.path, keywords.index(full.classes[label]))
                          for clip, label in zip(theirs.items, theirs.labels) if full.classes[label] in keywords)
        assert sorted((clip.path, int(label)) for clip, label in zip(ours.items, ours.labels)) == expected
    assert len(data.test) == 3 * 2 * 5


def test_speechcommands_12_adds_unknown_and_silence(sc_root: Path) -> None:
    keywords = ("zero", "one", "two", "three", "four", "five")
    full = load_dataset("speechcommands", root=sc_root)
    data = load_dataset("speechcommands", root=sc_root, task=12, keywords=keywords, silence_fraction=0.1, seed=5)
    assert data.classes == ["_silence_", "_unknown_", *keywords]
    noise_path = str(sc_root / "_background_noise_" / "white_noise.wav")
    noise, _ = read_wav(noise_path)
    for name, split, reference in (("train", data.train, full.train), ("val", data.val, full.val), ("test", data.test, full.test)):
        words = Counter(full.classes[label] for label in reference.labels)
        counts = Counter(split.labels.tolist())
        n_silence = round(0.1 * len(reference))
        assert counts[0] == n_silence > 0
        assert counts[1] == sum(words[w] for w in ("six", "seven", "eight", "nine"))  # the other words are _unknown_
        assert [counts[2 + i] for i in range(len(keywords))] == [words[w] for w in keywords]
        assert len(split) == len(reference) + n_silence
        lo, hi = NOISE_REGIONS[name]
        silence = [clip for clip, label in zip(split.items, split.labels) if label == 0]
        for clip in silence:  # the 0.5 s file is too short: every clip comes from white_noise.wav's region
            assert clip.path == noise_path and clip.frames == 16000
            assert lo * len(noise) <= clip.start <= hi * len(noise) - 16000
        index = int(np.flatnonzero(split.labels == 0)[0])
        (wave, rate), _ = split[index]
        np.testing.assert_array_equal(wave, noise[silence[0].start : silence[0].start + 16000])
    again = load_dataset("speechcommands", root=sc_root, task="12", keywords=keywords, seed=5)
    other = load_dataset("speechcommands", root=sc_root, task="12", keywords=keywords, seed=6)
    assert again.train.items == data.train.items and other.train.items != data.train.items


def test_speechcommands_torchaudio_layout_and_download(sc_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchaudio.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchaudio.datasets, "SPEECHCOMMANDS", offline)
    with pytest.raises(FileNotFoundError, match="could not download Speech Commands"):
        load_dataset("speechcommands", root=tmp_path / "dl", download=True)

    def fake_download(root, url, download):  # what torchaudio leaves behind
        assert url == "speech_commands_v0.02" and download
        shutil.copytree(sc_root, Path(root) / "SpeechCommands" / "speech_commands_v0.02")

    monkeypatch.setattr(torchaudio.datasets, "SPEECHCOMMANDS", fake_download)
    data = load_dataset("speechcommands", root=tmp_path / "dl", download=True)
    assert (len(data.train), len(data.val), len(data.test)) == (810, 90, 100)
    assert data.meta["root"] == str(tmp_path / "dl" / "SpeechCommands" / "speech_commands_v0.02")
    assert len(load_dataset("speechcommands", root=tmp_path / "dl").test) == 100  # found without downloading again


def _tiny_speech_commands(root: Path, noise: bool = False) -> Path:
    for word in ("yes", "no"):
        for n in range(3):
            write_wav(root / word / f"spk{n}_nohash_0.wav", np.full(1600, 0.1, np.float32), 16000)
    (root / "validation_list.txt").write_text("yes/spk1_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("yes/spk2_nohash_0.wav\nno/spk2_nohash_0.wav\n")
    if noise:
        write_wav(root / "_background_noise_" / "n.wav", np.zeros(16000 * 12, np.float32), 16000)
    return root


def test_speechcommands_errors(sc_root: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="testing_list.txt"):
        load_dataset("speechcommands", root=tmp_path / "absent")
    with pytest.raises(ValueError, match="unknown Speech Commands task '7'"):
        load_dataset("speechcommands", root=sc_root, task="7")
    with pytest.raises(ValueError, match="unknown Speech Commands word 'fiev'; did you mean 'five'"):
        load_dataset("speechcommands", root=sc_root, task="10", keywords=["one", "fiev"])
    with pytest.raises(ValueError, match="unknown Speech Commands word 'yes'"):  # the default keywords are not FSDD digits
        load_dataset("speechcommands", root=sc_root, task="12")
    with pytest.raises(ValueError, match="keywords applies to tasks"):
        load_dataset("speechcommands", root=sc_root, keywords=["one"])

    tiny = _tiny_speech_commands(tmp_path / "tiny")
    data = load_dataset("speechcommands", root=tiny, task="10", keywords=["yes", "no"])
    assert [len(data.train), len(data.val), len(data.test)] == [3, 1, 2]
    with pytest.raises(FileNotFoundError, match="_background_noise_"):
        load_dataset("speechcommands", root=tiny, task="12", keywords=["yes"])
    (tiny / "validation_list.txt").write_text("yes/spk1_nohash_0.wav\nyes/spk9_nohash_0.wav\n")
    with pytest.raises(ValueError, match="do not exist.*spk9"):
        load_dataset("speechcommands", root=tiny)
    (tiny / "validation_list.txt").write_text("yes/spk2_nohash_0.wav\n")
    with pytest.raises(ValueError, match="both validation_list.txt and testing_list.txt"):
        load_dataset("speechcommands", root=tiny)
    (tiny / "validation_list.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation_list.txt is missing"):
        load_dataset("speechcommands", root=tiny)


def test_speechcommands_silence_needs_long_enough_noise(tmp_path: Path) -> None:
    tiny = _tiny_speech_commands(tmp_path / "tiny", noise=True)  # 12 s: 1.2 s val/test regions
    data = load_dataset("speechcommands", root=tiny, task="12", keywords=["yes"], silence_fraction=0.5)
    assert Counter(data.train.labels.tolist()) == {0: 2, 1: 2, 2: 1}  # 1 silence clip per 2 speech clips
    assert all(isinstance(clip, AudioClip) for clip in data.test.items)
    write_wav(tiny / "_background_noise_" / "n.wav", np.zeros(16000 * 5, np.float32), 16000)  # 0.5 s regions
    with pytest.raises(ValueError, match="no background-noise file is long enough"):
        load_dataset("speechcommands", root=tiny, task="12", keywords=["yes"], silence_fraction=0.5)

"""Spoken-word audio datasets: FSDD (``"fsdd"``) and Speech Commands v0.02 (``"speechcommands"``).

Inputs are ``(waveform np.float32 [T], sample_rate)`` pairs read lazily from the wav
files with ``soundfile``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

from maelre.suggest import did_you_mean
from modalities.base import DatasetSplits
from modalities.datasets import register_dataset
from modalities.datasets.io import (
    AudioClip,
    LazySplit,
    carve_validation,
    check_fraction,
    list_files,
    read_clip,
    read_wav,
    resolve_root,
    wav_info,
    write_text,
    write_wav,
)

# --------------------------------------------------------------------------- FSDD

FSDD_HINT = (
    "FSDD is a flat folder of '{digit}_{speaker}_{index}.wav' files (8 kHz mono): the 'recordings' folder of "
    "https://github.com/Jakobovski/free-spoken-digit-dataset. Pass root= that folder or its parent."
)
FSDD_CLASSES = [str(digit) for digit in range(10)]
FSDD_NUM_TEST_INDICES = 5
"""Official split: recordings with index 0-4 (of every speaker and digit) are the test set."""
_FSDD_FILE = re.compile(r"(?P<digit>\d)_(?P<speaker>[^_]+)_(?P<index>\d+)\.wav")


@dataclass(frozen=True)
class FsddRecording:
    """One FSDD file, parsed from its name ``{digit}_{speaker}_{index}.wav``."""

    path: Path
    digit: int
    speaker: str
    index: int

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "FsddRecording":
        path = Path(path)
        match = _FSDD_FILE.fullmatch(path.name)
        if match is None:
            raise ValueError(f"FSDD file {path} is not named '{{digit}}_{{speaker}}_{{index}}.wav'; remove or rename it")
        return cls(path, int(match["digit"]), match["speaker"], int(match["index"]))

    @property
    def is_test(self) -> bool:
        return self.index < FSDD_NUM_TEST_INDICES


def fsdd_recordings(root: str | os.PathLike | None = None) -> list[FsddRecording]:
    """Every recording of an FSDD folder, sorted by file name.

    ``root`` is the folder of wavs or its parent holding ``recordings/``; ``None`` uses
    ``../shared/data/fsdd`` beside the checkout, else ``$MAELRE_DATA/fsdd``.
    """
    base = resolve_root(root, "fsdd", FSDD_HINT)
    folder = base / "recordings" if (base / "recordings").is_dir() else base
    return [FsddRecording.from_path(path) for path in list_files(folder, ".wav", "FSDD recordings", FSDD_HINT)]


@register_dataset("fsdd")
def load_fsdd(
    root: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.0,
    seed: int = 0,
    speakers: Sequence[str] | None = None,
) -> DatasetSplits:
    """Free Spoken Digit Dataset: 10 spoken digits, 8 kHz mono, official train/test split.

    Args:
        root: folder of ``{digit}_{speaker}_{index}.wav`` files or its parent (see ``fsdd_recordings``).
        val_fraction: share of the training recordings moved to ``val``, stratified by
            (speaker, digit) and seeded, so every speaker and digit keeps its proportion.
        seed: seed of the validation carve.
        speakers: keep only these speakers (default: all).

    Returns:
        ``DatasetSplits`` with modality ``"audio"``: items ``(waveform float32 [T], 8000)``,
        classes ``"0"``-``"9"``; recordings with index 0-4 are ``test`` (300 of the
        3,000), the rest ``train`` (minus ``val``).
    """
    recordings = fsdd_recordings(root)
    if speakers is not None:
        recordings = _select_speakers(recordings, speakers)
    train = [r for r in recordings if not r.is_test]
    test = [r for r in recordings if r.is_test]
    train_split, val_split = carve_validation(
        _fsdd_split(train), val_fraction, seed, stratify=[f"{r.speaker}/{r.digit}" for r in train]
    )
    return DatasetSplits(
        train=train_split,
        test=_fsdd_split(test),
        val=val_split,
        classes=list(FSDD_CLASSES),
        modality="audio",
        meta={"source": "fsdd", "root": str(recordings[0].path.parent), "val_fraction": val_fraction, "seed": seed,
              "speakers": sorted({r.speaker for r in recordings})},
    )


def _fsdd_split(recordings: list[FsddRecording]) -> LazySplit:
    return LazySplit([str(r.path) for r in recordings], [r.digit for r in recordings], load=read_wav)


def _select_speakers(recordings: list[FsddRecording], speakers: Sequence[str]) -> list[FsddRecording]:
    wanted = [speakers] if isinstance(speakers, str) else list(speakers)
    known = sorted({r.speaker for r in recordings})
    for speaker in wanted:
        if speaker not in known:
            raise ValueError(f"unknown FSDD speaker {speaker!r}{did_you_mean(speaker, known)} Speakers: {', '.join(known)}")
    if not wanted:
        raise ValueError(f"speakers is empty; pass None for all speakers or some of: {', '.join(known)}")
    return [r for r in recordings if r.speaker in wanted]


# --------------------------------------------------------------------------- Speech Commands

SPEECH_COMMANDS_HINT = (
    "Speech Commands v0.02 is a folder of '<word>/<speaker>_nohash_<n>.wav' (16 kHz) with validation_list.txt, "
    "testing_list.txt and _background_noise_/: the extracted "
    "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz. Pass root= that folder, or download=True."
)
SPEECH_COMMANDS_KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_COMMANDS_TASKS = ("35", "12", "10")
SILENCE_LABEL, UNKNOWN_LABEL = "_silence_", "_unknown_"
BACKGROUND_NOISE_FOLDER = "_background_noise_"
NOISE_REGIONS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
"""Each background-noise file is cut into consecutive regions, one per split, so no noise
is shared between the silence clips of different splits."""
SILENCE_SECONDS = 1.0


@register_dataset("speechcommands")
def load_speech_commands(
    root: str | os.PathLike | None = None,
    *,
    task: str = "35",
    keywords: Sequence[str] | None = None,
    silence_fraction: float = 0.1,
    seed: int = 0,
    download: bool = False,
) -> DatasetSplits:
    """Speech Commands v0.02 keyword spotting with the official validation/testing lists.

    Args:
        root: the dataset folder (holding ``testing_list.txt``) or the folder torchaudio
            downloads into (holding ``SpeechCommands/speech_commands_v0.02``); ``None``
            uses ``../shared/data/speechcommands`` or ``$MAELRE_DATA/speechcommands``.
        task: ``"35"``: every word folder is a class (35 in v0.02), sorted;
            ``"10"``: only the keywords, in keyword order;
            ``"12"``: ``_silence_``, ``_unknown_`` (every other word, all clips kept), then the keywords.
        keywords: the command words of tasks ``"10"``/``"12"`` (default: yes, no, up, down,
            left, right, on, off, stop, go).
        silence_fraction: task ``"12"`` only: each split gets
            ``round(silence_fraction * its speech clips)`` one-second ``_silence_`` clips
            cut at seeded random offsets from ``_background_noise_/*.wav`` (raw noise,
            no gain); each noise file gives 80% / 10% / 10% of its length to train / val / test.
        seed: seed of the silence clip offsets.
        download: fetch the archive with ``torchaudio.datasets.SPEECHCOMMANDS`` into ``root`` if absent.

    Returns:
        ``DatasetSplits`` with modality ``"audio"``: items ``(waveform float32 [T], sample_rate)``;
        ``val`` from ``validation_list.txt``, ``test`` from ``testing_list.txt``, ``train`` the rest.
    """
    task = str(task)
    if task not in SPEECH_COMMANDS_TASKS:
        hint = did_you_mean(task, SPEECH_COMMANDS_TASKS)
        raise ValueError(f"unknown Speech Commands task {task!r}{hint} Tasks: {', '.join(SPEECH_COMMANDS_TASKS)}")
    if keywords is not None and task == "35":
        raise ValueError("keywords applies to tasks '10' and '12' only; task '35' uses every word folder")
    check_fraction(silence_fraction, "silence_fraction")
    folder = _speech_commands_folder(root, download)
    clips = _speech_commands_clips(folder)
    words = sorted({word for word, _ in clips})
    if task == "35":
        classes = words
    else:
        keywords = _check_keywords(SPEECH_COMMANDS_KEYWORDS if keywords is None else keywords, words)
        classes = list(keywords) if task == "10" else [SILENCE_LABEL, UNKNOWN_LABEL, *keywords]
    index = {name: i for i, name in enumerate(classes)}
    unknown = index.get(UNKNOWN_LABEL)

    splits: dict[str, tuple[list[AudioClip], list[int]]] = {name: ([], []) for name in ("train", "val", "test")}
    for (word, split), paths in clips.items():
        label = index.get(word, unknown)
        if label is None:  # task "10" drops the other words
            continue
        splits[split][0].extend(AudioClip(str(path)) for path in paths)
        splits[split][1].extend([label] * len(paths))
    if task == "12":
        noise = list_files(folder / BACKGROUND_NOISE_FOLDER, ".wav", "Speech Commands background noise",
                           f"Task '12' cuts its _silence_ clips from these files. {SPEECH_COMMANDS_HINT}")
        for i, (split, (items, labels)) in enumerate(splits.items()):
            count = round(silence_fraction * len(items))
            items.extend(silence_clips(noise, split, count, np.random.default_rng([seed, i])))
            labels.extend([index[SILENCE_LABEL]] * count)
    built = {split: LazySplit(items, labels, load=read_clip) for split, (items, labels) in splits.items()}
    return DatasetSplits(
        train=built["train"],
        val=built["val"],
        test=built["test"],
        classes=classes,
        modality="audio",
        meta={"source": "speech_commands_v0.02", "root": str(folder), "task": task, "seed": seed,
              "silence_fraction": silence_fraction if task == "12" else 0.0},
    )


def _speech_commands_folder(root: str | os.PathLike | None, download: bool) -> Path:
    base = resolve_root(root, "speechcommands", SPEECH_COMMANDS_HINT)
    downloaded = base / "SpeechCommands" / "speech_commands_v0.02"  # torchaudio's layout
    for folder in (base, downloaded):
        if (folder / "testing_list.txt").is_file():
            return folder
    if not download:
        raise FileNotFoundError(
            f"no Speech Commands folder (one holding testing_list.txt) at {base} or {downloaded}. {SPEECH_COMMANDS_HINT}"
        )
    from torchaudio.datasets import SPEECHCOMMANDS

    base.mkdir(parents=True, exist_ok=True)
    try:
        SPEECHCOMMANDS(base, url="speech_commands_v0.02", download=True)
    except (OSError, RuntimeError) as err:  # offline (URLError) or a bad archive (checksum)
        raise FileNotFoundError(f"could not download Speech Commands into {base} ({err}). {SPEECH_COMMANDS_HINT}") from err
    return downloaded


def _read_list(folder: Path, name: str) -> set[str]:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"Speech Commands split list {path} is missing. {SPEECH_COMMANDS_HINT}")
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _speech_commands_clips(folder: Path) -> dict[tuple[str, str], list[Path]]:
    """``{(word, split): sorted wav paths}`` following the official split lists."""
    val, test = _read_list(folder, "validation_list.txt"), _read_list(folder, "testing_list.txt")
    if val & test:
        raise ValueError(
            f"{len(val & test)} files are in both validation_list.txt and testing_list.txt of {folder}, e.g. {min(val & test)}"
        )
    word_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if not word_dirs:
        raise FileNotFoundError(f"Speech Commands folder {folder} has no word folders. {SPEECH_COMMANDS_HINT}")
    clips: dict[tuple[str, str], list[Path]] = {}
    seen: set[str] = set()
    for word_dir in word_dirs:
        for path in list_files(word_dir, ".wav", f"Speech Commands word {word_dir.name!r}", SPEECH_COMMANDS_HINT):
            rel = f"{word_dir.name}/{path.name}"
            seen.add(rel)
            split = "test" if rel in test else "val" if rel in val else "train"
            clips.setdefault((word_dir.name, split), []).append(path)
    missing = sorted((val | test) - seen)
    if missing:
        raise ValueError(
            f"{len(missing)} files named in the split lists of {folder} do not exist, e.g. {missing[:3]}; re-extract the dataset"
        )
    return clips


def _check_keywords(keywords: Sequence[str], words: list[str]) -> tuple[str, ...]:
    keywords = (keywords,) if isinstance(keywords, str) else tuple(keywords)
    if not keywords or len(set(keywords)) != len(keywords):
        raise ValueError(f"keywords must be distinct word names, got {list(keywords)}")
    for word in keywords:
        if word not in words:
            raise ValueError(f"unknown Speech Commands word {word!r}{did_you_mean(word, words)} Words: {', '.join(words)}")
    return keywords


def silence_clips(noise_files: Sequence[Path], split: str, count: int, rng: np.random.Generator) -> list[AudioClip]:
    """``count`` one-second clips at random places of the ``split`` region of the noise files.

    The file is drawn uniformly among those whose region holds a whole clip, then the
    offset uniformly inside that region (``NOISE_REGIONS``).
    """
    lo, hi = NOISE_REGIONS[split]
    spans = []  # (path, first offset, last offset, clip frames)
    for path in noise_files:
        frames, sample_rate = wav_info(path)
        clip = int(SILENCE_SECONDS * sample_rate)
        first, last = int(lo * frames), int(hi * frames) - clip
        if last >= first:
            spans.append((str(path), first, last, clip))
    if count and not spans:
        raise ValueError(f"no background-noise file is long enough to cut {SILENCE_SECONDS:g} s silence clips for the {split} split "
                         f"(its region is {hi - lo:.0%} of each file); add longer files to {BACKGROUND_NOISE_FOLDER}/")
    choices = rng.integers(len(spans), size=count) if count else []
    return [AudioClip(spans[c][0], int(rng.integers(spans[c][1], spans[c][2] + 1)), spans[c][3]) for c in choices]


# --------------------------------------------------------------------------- FSDD -> Speech Commands layout

FSDD_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_fsdd_as_speechcommands(
    fsdd_root: str | os.PathLike | None,
    out_root: str | os.PathLike,
    *,
    sample_rate: int = 16000,
    val_fraction: float = 0.1,
    seed: int = 0,
    speakers: Sequence[str] | None = None,
) -> Path:
    """Lay FSDD out as a Speech Commands folder, resampled to ``sample_rate``.

    Writes ``out_root/<digit word>/<speaker>_nohash_<index>.wav`` (16-bit PCM) and the
    ``validation_list.txt``/``testing_list.txt`` of ``load_fsdd(fsdd_root, val_fraction=...,
    seed=..., speakers=...)``, so ``load_speech_commands(out_root)`` reproduces that split.
    Resampling is ``torchaudio.functional.resample`` (see ``resample_many``). Returns ``out_root``.
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    fsdd = load_fsdd(fsdd_root, val_fraction=val_fraction, seed=seed, speakers=speakers)
    out_root = Path(out_root).expanduser()
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    recordings: list[FsddRecording] = []
    for split, data in (("train", fsdd.train), ("val", fsdd.val), ("test", fsdd.test)):
        for path in data.items if data is not None else []:
            recording = FsddRecording.from_path(path)
            recordings.append(recording)
            lists[split].append(f"{FSDD_DIGIT_WORDS[recording.digit]}/{recording.speaker}_nohash_{recording.index}.wav")
    relpaths = lists["train"] + lists["val"] + lists["test"]
    for start in range(0, len(recordings), _RESAMPLE_CHUNK):
        chunk = [read_wav(r.path) for r in recordings[start : start + _RESAMPLE_CHUNK]]
        for rel, wave in zip(relpaths[start:], resample_many(chunk, int(sample_rate))):
            write_wav(out_root / rel, wave, int(sample_rate))
    write_text(out_root / "validation_list.txt", "".join(f"{rel}\n" for rel in lists["val"]))
    write_text(out_root / "testing_list.txt", "".join(f"{rel}\n" for rel in lists["test"]))
    return out_root


_RESAMPLE_CHUNK = 64


def resample_many(clips: Sequence[tuple[np.ndarray, int]], sample_rate: int) -> list[np.ndarray]:
    """Resample ``(waveform [T], rate)`` clips to ``sample_rate`` with ``torchaudio.functional.resample``.

    Clips of one rate go through a single call on a zero-padded batch, then each is cut
    to its own output length ``ceil(T * sample_rate / rate)``: the filter pads with zeros
    anyway, so this equals resampling each clip alone, and one call per batch instead of
    one per clip is much faster on a busy CPU.
    """
    out: list[np.ndarray | None] = [None] * len(clips)
    for rate in sorted({rate for _, rate in clips}):
        members = [i for i, (_, r) in enumerate(clips) if r == rate]
        batch = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(clips[i][0]) for i in members], batch_first=True)
        resampled = torchaudio.functional.resample(batch, rate, sample_rate).numpy()
        for row, i in enumerate(members):
            out[i] = resampled[row, : -(-len(clips[i][0]) * sample_rate // rate)]
    return out

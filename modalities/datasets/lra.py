"""Long Range Arena (Tay et al. 2020) data: ListOps, Text (IMDB), Retrieval (AAN), Pathfinder, Path-X.

============== ============================================ ========= =========================
loader         source                                       modality  classes
============== ============================================ ========= =========================
``listops``    LRA's ``basic_*.tsv``, or generated          text      "0" .. "9"
``imdb``       the ``aclImdb`` folder (LRA: byte-level)     text      neg, pos
``aan``        LRA's ``new_aan_pairs.*.tsv`` (two-tower)    text_pair unlinked, linked
``pathfinder`` LRA's ``pathfinder32`` folder, or generated  image     disconnected, connected
``pathx``      LRA's ``pathfinder128`` folder, or generated image     disconnected, connected
============== ============================================ ========= =========================

The official files come in ``lra_release.gz``
(https://storage.googleapis.com/long-range-arena/lra_release.gz): ``listops-1000/``,
``tsv_data/`` (AAN) and ``pathfinder32/``, ``pathfinder128/``. ListOps and Pathfinder are
generated when no ``root`` is given (see ``listops.py`` and ``pathfinder.py``).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from torchvision.datasets.utils import download_url

from maelre.suggest import did_you_mean
from modalities.base import DatasetSplits
from modalities.datasets import register_dataset
from modalities.datasets.archives import extract_cached, find_archive
from modalities.datasets.io import LazySplit, carve_validation, list_files, read_text, require_dir, resolve_root
from modalities.datasets.listops import LISTOPS_CLASSES, generate_listops, read_listops_tsv
from modalities.datasets.pathfinder import (
    DEFAULT_DIFFICULTY,
    DIFFICULTIES,
    PATHFINDER_CLASSES,
    PathfinderConfig,
    generate_pathfinder,
    read_pathfinder_folder,
)

LRA_RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_CLASSES = ["neg", "pos"]
IMDB_ARCHIVE = "aclImdb_v1.tar.xz"
IMDB_PER_CLASS = 12500
"""Reviews per class in each of train and test of the official data (the content check of an archive)."""
IMDB_HINT = (
    "IMDB is the archive aclImdb_v1.tar.xz (or .tar.gz) or the 'aclImdb' folder (train/pos, train/neg, test/pos, "
    f"test/neg of *.txt reviews) extracted from {IMDB_URL}. Pass root= the archive, the folder that contains it or "
    "aclImdb, or download=True."
)
AAN_FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
AAN_CLASSES = ["unlinked", "linked"]
AAN_HINT = (
    f"AAN retrieval is LRA's tsv_data/{{{','.join(AAN_FILES.values())}}} (no header; columns label, id1, id2, "
    f"text1, text2) from {LRA_RELEASE_URL}. Pass root= the tsv_data folder or its parent."
)
LISTOPS_SPLIT_FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
PATHFINDER_SPLIT = (0.8, 0.1, 0.1)
"""Train/val/test shares of an official Pathfinder folder, as LRA's TFDS splits take them."""


# ----------------------------------------------------------------------------- ListOps


@register_dataset("listops")
def load_listops(
    root: str | os.PathLike | None = None,
    *,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 500,
    seed: int = 0,
    min_len: int = 500,
    max_len: int = 2000,
    max_depth: int = 10,
    max_args: int = 10,
) -> DatasetSplits:
    """LRA ListOps: nested MAX/MIN/MED/SM expressions over digits, label = the value (10 classes).

    Args:
        root: folder with LRA's ``basic_train.tsv``, ``basic_val.tsv``, ``basic_test.tsv``
            (``lra_release/listops-1000``); ``None`` generates the data instead.
        n_train, n_val, n_test: split sizes when generating (LRA: 96,000 / 2,000 / 2,000;
            the defaults take about 5 s on one CPU core).
        seed, min_len, max_len, max_depth, max_args: generator settings, see
            :func:`~modalities.datasets.listops.generate_listops`. All examples are unique
            across the three splits, as in LRA.

    Returns:
        ``DatasetSplits`` with modality ``"text"``: items are LRA-serialised expressions
        (``str``). Their LRA length counts whitespace tokens without parentheses
        (:func:`~modalities.datasets.listops.listops_token_ids`); a byte tokenizer sees a
        sequence about 6x longer.
    """
    if root is not None:
        hint = f"Expected LRA's {', '.join(LISTOPS_SPLIT_FILES.values())} (folder listops-1000 of {LRA_RELEASE_URL})."
        folder = require_dir(Path(root).expanduser(), "ListOps", hint)
        splits = {name: read_listops_tsv(folder / file) for name, file in LISTOPS_SPLIT_FILES.items()}
        meta = {"source": "lra_release", "root": str(folder)}
    else:
        for name, n in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if n < 1:
                raise ValueError(f"{name} must be >= 1, got {n}")
        samples = generate_listops(n_train + n_val + n_test, seed, min_len, max_len, max_depth, max_args)
        splits = {"train": samples[:n_train], "val": samples[n_train : n_train + n_val], "test": samples[n_train + n_val :]}
        meta = {"source": "generated", "seed": seed, "min_len": min_len, "max_len": max_len,
                "max_depth": max_depth, "max_args": max_args}
    return DatasetSplits(train=splits["train"], val=splits["val"], test=splits["test"], classes=list(LISTOPS_CLASSES),
                         modality="text", meta=meta)


# ----------------------------------------------------------------------------- Pathfinder


def _load_pathfinder(
    name: str, size: int, root: str | os.PathLike | None, n_train: int, n_val: int, n_test: int,
    seed: int, difficulty: str, n_jobs: int, settings: dict,
) -> DatasetSplits:
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown Pathfinder difficulty {difficulty!r}{did_you_mean(difficulty, DIFFICULTIES)} "
                         f"Valid: {', '.join(DIFFICULTIES)}")
    if root is not None:
        if settings:
            raise ValueError(f"generator settings {sorted(settings)} apply only without root "
                             f"(with root the images are read from {root})")
        images = read_pathfinder_folder(Path(root).expanduser(), size=size, difficulty=difficulty)
        order = np.random.default_rng(seed).permutation(len(images))
        n_train_files = int(round(PATHFINDER_SPLIT[0] * len(images)))
        n_val_files = int(round(PATHFINDER_SPLIT[1] * len(images)))
        parts = np.split(order, [n_train_files, n_train_files + n_val_files])
        train, val, test = (images.subset(np.sort(p)) for p in parts)
        meta = {"source": "lra_release", "root": str(root), "difficulty": difficulty, "split_seed": seed}
    else:
        config = PathfinderConfig.for_size(size, **{"contour_length": DIFFICULTIES[difficulty], **settings})
        sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
        for key, n in sizes.items():
            if n < 2:
                raise ValueError(f"{key} must be >= 2 (one image of each class), got {n}")
        # One seed stream per split, so each split is exactly balanced and changing one size leaves the others alone.
        train, val, test = (generate_pathfinder(n, seed=(seed, i), config=config, n_jobs=n_jobs)
                            for i, n in enumerate(sizes.values()))
        meta = {"source": "generated", "seed": seed, "config": dataclasses.asdict(config)}
    return DatasetSplits(train=train, val=val, test=test, classes=list(PATHFINDER_CLASSES), modality="image",
                         meta={"task": name, **meta})


@register_dataset("pathfinder")
def load_pathfinder(
    root: str | os.PathLike | None = None,
    *,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 500,
    seed: int = 0,
    difficulty: str = DEFAULT_DIFFICULTY,
    n_jobs: int = 1,
    **settings,
) -> DatasetSplits:
    """LRA Pathfinder: 32x32 images, are the two markers joined by one contour? (2 classes).

    Args:
        root: LRA's ``pathfinder32`` folder (holding ``<difficulty>/imgs`` and
            ``<difficulty>/metadata``); ``None`` generates the images instead.
        n_train, n_val, n_test: split sizes when generating; each split is exactly
            balanced (100-200 images/s on one CPU core).
        seed: generator seed, or with ``root`` the seed of the 80/10/10 split.
        difficulty: LRA's level: ``curv_baseline``, ``curv_contour_length_9`` or
            ``curv_contour_length_14`` (the default, LRA's leaderboard task). With ``root``
            the folder read; when generating, the target contour length (6, 9 or 14 segments).
        n_jobs: processes drawing images in parallel (the output does not depend on it;
            LRA's 200,000 images take ~20 min on one core).
        **settings: :class:`~modalities.datasets.pathfinder.PathfinderConfig` fields for
            the generator (``num_distractors``, ``max_turn_deg``, ...).

    Returns:
        ``DatasetSplits`` with modality ``"image"``: items ``uint8 [32, 32]``, classes
        ``["disconnected", "connected"]``.
    """
    return _load_pathfinder("pathfinder", 32, root, n_train, n_val, n_test, seed, difficulty, n_jobs, settings)


@register_dataset("pathx")
def load_pathx(
    root: str | os.PathLike | None = None,
    *,
    n_train: int = 2000,
    n_val: int = 200,
    n_test: int = 500,
    seed: int = 0,
    difficulty: str = DEFAULT_DIFFICULTY,
    n_jobs: int = 1,
    **settings,
) -> DatasetSplits:
    """LRA Path-X: Pathfinder at 128x128 (16,384 pixels); arguments as :func:`load_pathfinder`.

    ``root`` is LRA's ``pathfinder128`` folder. Items are ``uint8 [128, 128]``.
    """
    return _load_pathfinder("pathx", 128, root, n_train, n_val, n_test, seed, difficulty, n_jobs, settings)


# ----------------------------------------------------------------------------- IMDB


def download_imdb(root: str | os.PathLike, url: str = IMDB_URL, md5: str | None = IMDB_MD5) -> Path:
    """Download and extract ``aclImdb`` into ``root`` unless it is there; returns ``root/aclImdb``.

    The archive is fetched and extracted into a temporary folder inside ``root`` and the
    result moved into place with ``os.replace``, so an interrupted download leaves nothing
    that looks complete.

    Raises:
        FileNotFoundError: the download failed (offline, wrong URL).
        ValueError: the archive fails the MD5 check or holds no ``aclImdb`` folder.
    """
    root = Path(root).expanduser()
    target = root / "aclImdb"
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".aclImdb."))
    try:
        try:
            download_url(url, str(staging), filename="archive.tar.gz", md5=md5)
        except OSError as err:  # URLError and friends
            raise FileNotFoundError(f"could not download IMDB from {url} into {root} ({err}). {IMDB_HINT}") from err
        except RuntimeError as err:  # torchvision: "File not found or corrupted."
            raise ValueError(f"the IMDB archive from {url} failed its MD5 check ({err}); download it again") from err
        try:
            with tarfile.open(staging / "archive.tar.gz") as tar:
                tar.extractall(staging, filter="data")  # refuses absolute paths, links out of the folder, devices
        except tarfile.TarError as err:
            raise ValueError(f"the file from {url} is not a readable tar archive ({err}). {IMDB_HINT}") from err
        if not (staging / "aclImdb").is_dir():
            raise ValueError(f"the archive from {url} has no aclImdb folder. {IMDB_HINT}")
        os.replace(staging / "aclImdb", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _imdb_folder(root: Path) -> Path:
    """``root/aclImdb`` if present, else ``root`` itself when it has ``train/`` and ``test/``."""
    if (root / "aclImdb").is_dir():
        return root / "aclImdb"
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root
    raise FileNotFoundError(f"no aclImdb folder at {root / 'aclImdb'} (nor train/ and test/ in {root}). {IMDB_HINT}")


def read_imdb_split(folder: str | os.PathLike) -> LazySplit:
    """Reviews of one ``aclImdb`` split folder (``train`` or ``test``): ``neg/*.txt`` (label 0), then ``pos/*.txt`` (1)."""
    folder = Path(folder)
    texts: list[str] = []
    labels: list[int] = []
    for label, polarity in enumerate(IMDB_CLASSES):
        for path in list_files(folder / polarity, ".txt", f"IMDB {folder.name}/{polarity}", IMDB_HINT):
            texts.append(read_text(path, "IMDB review"))
            labels.append(label)
    return LazySplit(texts, labels)


@register_dataset("imdb")
def load_imdb(
    root: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.0,
    seed: int = 0,
    download: bool = False,
) -> DatasetSplits:
    """IMDB movie-review sentiment (Maas et al. 2011), LRA's Text task: 25,000 train / 25,000 test.

    LRA feeds the reviews byte by byte (text adapter ``tokenizer="byte"``, length 4K).

    Args:
        root: the archive ``aclImdb_v1.tar.xz`` (or ``.tar.gz``), a folder holding it or
            ``aclImdb``, or ``aclImdb`` itself; ``None``: ``../shared/data/imdb`` or
            ``$MAELRE_DATA/imdb``. An archive is extracted once into the cache
            (``$MAELRE_DATA/cache`` or ``~/.cache/maelre``) and must pass a content check
            (12,500 reviews per class in train and in test); its MD5 is not required.
        val_fraction: share of train moved to ``val``, stratified and seeded. LRA has
            no validation split (0, the default, gives ``val=None``).
        seed: seed of the validation carve.
        download: fetch and extract the archive into ``root`` if absent (:func:`download_imdb`).

    Returns:
        ``DatasetSplits`` with modality ``"text"``: raw review strings, classes ``["neg", "pos"]``.
    """
    archive = next((a for a in (find_archive(root, "imdb", name) for name in (IMDB_ARCHIVE, "aclImdb_v1.tar.gz")) if a), None)
    if archive is not None:
        folder = extract_cached(archive, "aclImdb")
    else:
        root = resolve_root(root, "imdb", IMDB_HINT)
        if download:
            download_imdb(root)
        folder = _imdb_folder(root)
    full_train, test = read_imdb_split(folder / "train"), read_imdb_split(folder / "test")
    if archive is not None:
        for name, split in (("train", full_train), ("test", test)):
            counts = np.bincount(split.labels, minlength=2).tolist()
            if counts != [IMDB_PER_CLASS] * 2:
                raise ValueError(f"IMDB {name} split of {archive} fails the content check: expected {IMDB_PER_CLASS} reviews "
                                 f"per class (neg, pos), got {counts}; the archive is incomplete or not aclImdb v1")
    train, val = carve_validation(full_train, val_fraction, seed)
    return DatasetSplits(
        train=train, val=val, test=test, classes=list(IMDB_CLASSES), modality="text",
        meta={"source": "aclImdb", "root": str(folder), "val_fraction": val_fraction, "seed": seed},
    )


# ----------------------------------------------------------------------------- AAN


def read_aan_tsv(path: str | os.PathLike) -> list[tuple[tuple[str, str], int]]:
    """Read one of LRA's AAN retrieval files into ``((text1, text2), label)`` pairs.

    The layout is LRA's (``matching/input_pipeline.py``): no header, five tab-separated
    columns ``label, id1, id2, text1, text2``, no quoting; ``label`` is written as a float
    (``1.0``/``0.0``). Bytes that are not UTF-8 are replaced with U+FFFD.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: empty file, a row without 5 fields, or a label other than 0/1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no AAN file at {path}. {AAN_HINT}")
    pairs: list[tuple[tuple[str, str], int]] = []
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for line_no, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 5:
                raise ValueError(f"{path}:{line_no}: expected 5 tab-separated fields "
                                 f"(label, id1, id2, text1, text2), got {len(fields)}")
            try:
                label = float(fields[0])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: label {fields[0]!r} is not a number") from None
            if label not in (0.0, 1.0):
                raise ValueError(f"{path}:{line_no}: label {fields[0]!r} is not 0 or 1")
            pairs.append(((fields[3], fields[4]), int(label)))
    if not pairs:
        raise ValueError(f"{path} is empty; expected one 'label<TAB>id1<TAB>id2<TAB>text1<TAB>text2' row per pair")
    return pairs


def _aan_folder(root: Path) -> Path:
    for folder in (root, root / "tsv_data"):
        if (folder / AAN_FILES["train"]).is_file():
            return folder
    require_dir(root, "AAN", AAN_HINT)
    raise FileNotFoundError(f"no {AAN_FILES['train']} in {root} or {root / 'tsv_data'}. {AAN_HINT}")


@register_dataset("aan")
def load_aan(root: str | os.PathLike | None = None) -> DatasetSplits:
    """ACL Anthology Network citation pairs, LRA's Retrieval task: do two papers cite one another? (2 classes).

    Two-tower: each item is ``(text1, text2)``, both encoded by the same encoder (LRA:
    bytes, 4K per document).

    Args:
        root: folder with LRA's ``new_aan_pairs.{train,eval,test}.tsv`` (``lra_release/tsv_data``)
            or its parent; ``None``: ``../shared/data/aan`` or ``$MAELRE_DATA/aan``.

    Returns:
        ``DatasetSplits`` with modality ``"text_pair"``, ``val`` from the ``eval`` file.
    """
    folder = _aan_folder(resolve_root(root, "aan", AAN_HINT))
    splits = {name: read_aan_tsv(folder / file) for name, file in AAN_FILES.items()}
    return DatasetSplits(
        train=splits["train"], val=splits["val"], test=splits["test"], classes=list(AAN_CLASSES), modality="text_pair",
        meta={"source": "lra_release", "root": str(folder)},
    )

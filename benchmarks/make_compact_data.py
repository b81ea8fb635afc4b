"""Write the compact leaderboard data into ``.carry/data/`` (git-ignored), small enough to carry to a GPU machine.

    python benchmarks/make_compact_data.py                 # every file
    python benchmarks/make_compact_data.py --only scifar10 # grayscale sCIFAR-10 only

* ``scifar10_gray.npz``: CIFAR-10 in LRA's grayscale, uint8 [60000, 32, 32], labels and a
  fixed split (45,000 train / 5,000 val, 500 per class, seed 0 / 10,000 test).
* ``imdb_bytes.npz``: the 50,000 IMDB reviews as UTF-8 bytes cut to LRA's 4,000, with
  lengths, labels and the train / test split.

Sources: the archives in ``../shared/data`` (or ``$MAELRE_DATA``), or ``--cifar`` / ``--imdb``.
Prints each file's size and the time taken. Rerunning overwrites the files atomically.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modalities.datasets import compact  # noqa: E402


def make_scifar10(out: Path, cifar_root: str | None, seed: int) -> Path:
    from sklearn.model_selection import train_test_split

    from modalities.datasets.archives import file_digest, find_archive
    from modalities.datasets.images import (
        CIFAR10_ARCHIVE, check_cifar_content, cifar10_folder, lra_grayscale, read_cifar_folder,
    )

    folder = cifar10_folder(cifar_root)
    train, train_labels, test, test_labels, classes = read_cifar_folder(folder)
    check_cifar_content(train_labels, "train", str(folder))
    check_cifar_content(test_labels, "test", str(folder))
    _, val_idx = train_test_split(np.arange(len(train)), test_size=compact.SCIFAR10_VAL_PER_CLASS * 10,
                                  random_state=seed, stratify=train_labels)
    split = np.concatenate([np.zeros(len(train), np.uint8), np.full(len(test), 2, np.uint8)])
    split[val_idx] = 1
    images = lra_grayscale(np.concatenate([train, test]))
    archive = find_archive(cifar_root, "cifar10", CIFAR10_ARCHIVE)
    source = {"folder": str(folder), "val_seed": seed, "val_per_class": compact.SCIFAR10_VAL_PER_CLASS}
    if archive is not None:
        source |= {"archive": archive.name, "archive_sha256": file_digest(archive)}
    return compact.write_scifar10(out / compact.SCIFAR10_FILE, images, np.concatenate([train_labels, test_labels]),
                                  split, classes, source)


def make_imdb(out: Path, imdb_root: str | None) -> Path:
    from modalities.datasets import load_dataset
    from modalities.datasets.archives import file_digest, find_archive
    from modalities.datasets.lra import IMDB_ARCHIVE

    data = load_dataset("imdb", root=imdb_root)
    texts = [compact.lra_text_bytes(x) for split in (data.train, data.test) for x, _ in split]
    labels = np.concatenate([data.train.labels, data.test.labels])
    split = np.repeat(np.array([0, 2], np.uint8), [len(data.train), len(data.test)])
    archive = find_archive(imdb_root, "imdb", IMDB_ARCHIVE)
    source = {"folder": data.meta["root"]} | ({"archive": archive.name, "archive_sha256": file_digest(archive)} if archive else {})
    return compact.write_imdb(out / compact.IMDB_FILE, texts, labels, split, data.classes, source)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=compact.COMPACT_DIR, help="output folder (default: .carry/data)")
    parser.add_argument("--cifar", default=None, help="CIFAR-10 archive or folder (default: ../shared/data/cifar10)")
    parser.add_argument("--imdb", default=None, help="IMDB archive or folder (default: ../shared/data/imdb)")
    parser.add_argument("--only", choices=("scifar10", "imdb"), default=None, help="write one file only")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sCIFAR validation carve")
    args = parser.parse_args(argv)
    makers = {"scifar10": lambda: make_scifar10(args.out, args.cifar, args.seed), "imdb": lambda: make_imdb(args.out, args.imdb)}
    for name, make in makers.items():
        if args.only not in (None, name):
            continue
        start = time.perf_counter()
        path = make()
        print(f"{name}: {path} {path.stat().st_size / 2**20:.2f} MiB in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

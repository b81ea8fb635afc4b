"""The outermost-operator shortcut's predictions on a ListOps folder, as a predictions file for ``maelre compare``.

    python benchmarks/listops_shortcut.py /tmp/listops OUT.json
    maelre compare RUN OUT.json     # does the test set tell the run from the shortcut?

The shortcut (``modalities.datasets.listops.outermost_operator_predictions``) answers each expression
with its outermost operator's most frequent label in the training split (36.5% on our generated
test split). A run that only matches it has learned no nesting; McNemar's test on the items where
the two disagree says whether a run's margin over it is more than the test set's noise.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout without ``pip install -e .``

from maelre.compare import write_predictions  # noqa: E402
from modalities.datasets.listops import outermost_operator_predictions  # noqa: E402
from modalities.datasets.listops_files import read_listops_tsv  # noqa: E402
from modalities.datasets.lra import LISTOPS_SPLIT_FILES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a ListOps folder in LRA's layout (basic_train.tsv, basic_test.tsv)")
    parser.add_argument("out", type=Path, help="the predictions file to write")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    args = parser.parse_args(argv)
    paths = {split: args.root / LISTOPS_SPLIT_FILES[split] for split in ("train", args.split)}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        parser.error(f"{', '.join(missing)} not found: make the folder with 'python benchmarks/lra_learn.py listops {args.root}'")
    train, scored = read_listops_tsv(paths["train"]), read_listops_tsv(paths[args.split])
    predictions = outermost_operator_predictions(train, scored)
    labels = [label for _, label in scored]
    write_predictions(args.out, labels, predictions, [str(c) for c in range(10)], args.split)
    accuracy = sum(p == y for p, y in zip(predictions, labels)) / len(labels)
    print(f"outermost-operator shortcut: {100 * accuracy:.2f}% on {len(labels)} {args.split} expressions -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

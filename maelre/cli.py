"""The ``maelre`` command line: ``fit | pretrain | validate | test | predict | check | info | bench | lra``.

Exit status: 0 on success, 2 for user errors (bad recipe, missing file, ...), printed as
one line without a traceback; ``--debug`` shows the traceback instead. 143 (128 + SIGTERM)
when a SIGTERM ended training (``fit``/``pretrain`` save a checkpoint at the step end first;
``--resume`` continues).
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from maelre.suggest import did_you_mean

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
TEXT_SUFFIXES = (".txt",)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    return table


def _fmt(x: float) -> str:
    return f"{x:.4f}"


# ---------------------------------------------------------------- commands
def _check_at_least(minimum: int, **options: int | None) -> None:
    """``ValueError`` unless every given option (``top_k=3`` is ``--top-k 3``) is >= ``minimum``; ``None`` (not given) passes."""
    given = {f"--{name.replace('_', '-')}": value for name, value in options.items() if value is not None}
    if any(value < minimum for value in given.values()):
        raise ValueError(f"{' and '.join(given)} must be >= {minimum}, got {' '.join(f'{k} {v}' for k, v in given.items())}")


def cmd_fit(args: argparse.Namespace) -> int:
    from maelre.engine.runner import run_recipe
    from maelre.recipe import load_recipe

    overrides = [*args.set, *([f"model.init_from={json.dumps(args.init_from)}"] if args.init_from else [])]
    recipe = load_recipe(args.recipe, overrides)
    results = run_recipe(recipe, run_dir=args.run_dir, resume=args.resume, progress=not args.no_progress)
    if results is None:  # a DDP process of rank > 0: rank 0 tests and reports
        return 0
    m = results["metrics"]
    rows = [
        ("test accuracy", _fmt(m["test/acc"]) if results["tested"] else "not tested (trainer.test_partial: false)"),
        ("test macro-F1", _fmt(m["test/f1"]) if results["tested"] else "-"),
        ("best val accuracy", _fmt(m["val/best_acc"]) if m["val/best_acc"] is not None else "-"),
        ("parameters", f"{results['parameters']:,}"),
        ("train samples/s", f"{results['throughput']['samples_per_second']:.1f}"),
        ("wall time", f"{results['total_seconds']:.1f} s"),
        ("run directory", results["run_dir"]),
    ]
    _console().print(_table(f"{recipe.name}: {results['backbone']} on {results['dataset']}", ("", "value"), rows))
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from maelre.engine.pretrain import pretrain_recipe
    from maelre.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    results = pretrain_recipe(recipe, run_dir=args.run_dir, resume=args.resume, progress=not args.no_progress)
    best = results["metrics"]["val/best_masked_acc"]
    rows = [
        ("mask ratio", f"{results['mask_ratio']:.2f}"),
        ("best val masked-token accuracy", _fmt(best) if best is not None else "-"),
        ("final train loss", _fmt(results["metrics"]["train/final_loss"]) if results["metrics"]["train/final_loss"] is not None else "-"),
        ("steps", results["global_step"]),
        ("run directory", results["run_dir"]),
    ]
    _console().print(_table(f"{recipe.name}: {results['backbone']} pretrained on {results['dataset']}", ("", "value"), rows))
    _console().print(f"fine-tune with: maelre fit {args.recipe} --init-from {results['run_dir']}")
    return 0


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    rows = [("accuracy", _fmt(metrics["acc"])), ("macro-F1", _fmt(metrics["f1"])), ("loss", _fmt(metrics["loss"])), ("samples", metrics["n"])]
    _console().print(_table(title, ("metric", "value"), rows))


def _cmd_eval(args: argparse.Namespace, split: str) -> int:
    from maelre.engine.runner import evaluate_saved

    _check_at_least(1, batch_size=args.batch_size)
    loaded, metrics = evaluate_saved(args.target, split, args.set, args.batch_size)
    _console().print(f"checkpoint: {loaded.path}")
    _print_metrics(f"{split} metrics", metrics)
    if args.predictions:
        from maelre.compare import write_predictions

        path = write_predictions(args.predictions, metrics["labels"], metrics["predictions"], list(loaded.classes), split)
        _console().print(f"predictions: {path} (maelre compare)")
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items() if k not in ("confusion", "labels", "predictions")}))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from maelre.compare import compare, describe, load_predictions

    result = compare(load_predictions(args.a), load_predictions(args.b))
    for line in describe(result, args.alpha):
        _console().print(line)
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    return _cmd_eval(args, "val")


def cmd_test(args: argparse.Namespace) -> int:
    return _cmd_eval(args, "test")


def read_inputs(paths: Sequence[str], npy: str | None, modality: str, sample_rate: int | None) -> tuple[list[str], list[Any]]:
    """Raw model inputs and their display names from files (audio/text/image) or one ``.npy`` array.

    ``.npy``: one sample per entry of the first axis (``allow_pickle=False``); for audio
    each entry is a waveform at ``sample_rate``.
    """
    names: list[str] = []
    inputs: list[Any] = []
    if npy is not None:
        if not Path(npy).is_file():
            raise FileNotFoundError(f"--npy file {npy} not found")
        array = _load_npy(npy)
        if array.ndim < 2:
            raise ValueError(f"--npy array must have a sample axis first ([n, ...]), got shape {array.shape}")
        for i, row in enumerate(array):
            names.append(f"{Path(npy).name}[{i}]")
            inputs.append((row.astype(np.float32), sample_rate) if modality == "audio" else row)
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"input file {path} not found")
        suffix = path.suffix.lower()
        if modality == "audio" and suffix in AUDIO_SUFFIXES:
            from modalities.datasets.io import read_wav

            inputs.append(read_wav(path, mono=False))
        elif modality == "text" and suffix in TEXT_SUFFIXES:
            from modalities.datasets.io import read_text

            inputs.append(read_text(path, "input file"))
        elif modality == "image" and suffix in IMAGE_SUFFIXES:
            inputs.append(_read_image(path))
        elif suffix == ".npy":
            inputs.append(_load_npy(path))
        else:
            accepted = {"audio": AUDIO_SUFFIXES, "text": TEXT_SUFFIXES, "image": IMAGE_SUFFIXES}.get(modality, ())
            raise ValueError(f"cannot read {path} for a {modality} model; accepted: {', '.join((*accepted, '.npy'))} files or --npy ARRAY")
        names.append(str(path))
    if not inputs:
        raise ValueError("nothing to predict: give input files or --npy ARRAY")
    return names, inputs


def _read_image(path: Path) -> np.ndarray:
    """An image file as an array; a damaged or unrecognised file is a ``ValueError`` naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (OSError, ValueError) as err:  # PIL: UnidentifiedImageError (an OSError), "Truncated File Read", ...
        raise ValueError(f"cannot read image file {path} ({' '.join(str(err).split())}); the file is damaged or not an image: "
                         "re-export or delete it") from err


def _load_npy(path: str | Path) -> np.ndarray:
    """``np.load`` without pickle; a damaged file or an object array is a ``ValueError`` naming the file."""
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"cannot read {path} as a numeric .npy array ({' '.join(str(err).split())}); "
                         "save it with numpy.save(path, array) from a numeric (not object) array") from err


def cmd_predict(args: argparse.Namespace) -> int:
    from maelre.engine.checkpoint import load_model, write_text_atomic
    from maelre.engine.inference import predict_proba

    _check_at_least(1, top_k=args.top_k, batch_size=args.batch_size)
    loaded = load_model(args.checkpoint)
    adapter = loaded.model.adapter
    rate = args.sample_rate or getattr(adapter.config, "sample_rate", None)
    names, inputs = read_inputs(args.files, args.npy, adapter.modality, rate)
    if loaded.spec.two_tower:
        if len(inputs) % 2:
            raise ValueError(f"a two-tower model classifies pairs: give an even number of inputs (got {len(inputs)}), paired in order")
        names = [f"{a} | {b}" for a, b in zip(names[::2], names[1::2])]
        inputs = list(zip(inputs[::2], inputs[1::2]))
    proba = predict_proba(loaded.model, inputs, batch_size=args.batch_size)
    classes = loaded.classes
    top = np.argsort(-proba, axis=1)[:, : args.top_k]
    rows = [(name, classes[t[0]], _fmt(p[t[0]]), ", ".join(f"{classes[j]}:{p[j]:.3f}" for j in t)) for name, p, t in zip(names, proba, top)]
    console = _console()
    console.print(f"checkpoint: {loaded.path}")
    console.print(_table("predictions", ("input", "class", "probability", f"top-{args.top_k}"), rows))
    if args.out:
        out = Path(args.out)
        if out.suffix == ".csv":
            lines = [",".join(["input", "class", *classes])]
            lines += [",".join([json.dumps(n), classes[int(p.argmax())], *(f"{v:.6f}" for v in p)]) for n, p in zip(names, proba)]
            write_text_atomic(out, "\n".join(lines) + "\n")
        else:
            payload = [{"input": n, "class": classes[int(p.argmax())], "probabilities": dict(zip(classes, map(float, p)))} for n, p in zip(names, proba)]
            write_text_atomic(out, json.dumps(payload, indent=2) + "\n")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import yaml
    from rich.syntax import Syntax

    from maelre.backbones.base import dense_attention_flops
    from maelre.engine.fit import build_model
    from maelre.recipe import load_recipe
    from modalities import create_adapter

    _check_at_least(1, length=args.length)
    _check_at_least(2, num_classes=args.num_classes)
    recipe = load_recipe(args.recipe, args.set)
    console = _console()
    console.print(Syntax(yaml.safe_dump(recipe.to_dict(), sort_keys=False), "yaml", theme="ansi_dark", background_color="default"))
    adapter = create_adapter(recipe.adapter_name(), **recipe.adapter_kwargs())
    model = build_model(adapter, recipe.model.backbone, recipe.backbone_kwargs(), num_classes=args.num_classes, **recipe.model.head_kwargs())
    backbone = model.backbone
    n = args.length or -(-adapter.config.max_len // adapter.config.pad_to_multiple) * adapter.config.pad_to_multiple
    plan = backbone.plan(n)
    rows = [(b.index, b.n_in, b.n_out, b.attention, f"{b.attn_flops / 1e6:.2f}") for b in plan]
    console.print(_table(f"{recipe.model.backbone} plan at N={n} (adapter max_len, padded)", ("block", "N in", "N out", "attention", "attn MFLOPs"), rows))
    total = sum(b.attn_flops for b in plan)
    full = dense_attention_flops(n, n, backbone.config.dim) * backbone.config.depth
    summary = [
        ("parameters", f"{sum(p.numel() for p in model.parameters()):,}"),
        ("backbone parameters", f"{backbone.num_parameters():,}"),
        ("adapter parameters", f"{sum(p.numel() for p in model.adapter.parameters()):,}"),
        ("attention MFLOPs / sequence", f"{total / 1e6:.2f} ({100 * total / full:.1f}% of full attention)"),
        ("backbone config", json.dumps(backbone.config.to_dict())),
    ]
    console.print(_table("model", ("", "value"), summary))
    console.print(
        f"[green]recipe {args.recipe} is valid[/green]. The dataset is not loaded: parameter counts assume {args.num_classes} classes "
        "and leave out adapter weights sized by the data during fit (e.g. a time-series projection with channels: null)."
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import dataclasses
    import inspect

    from maelre.backbones.base import BackboneConfig
    from maelre.registry import config_fields, list_backbones
    from modalities import list_adapters
    from modalities.base import adapter_config_class
    from modalities.datasets import get_dataset_loader, list_datasets

    console = _console()
    shared = {f.name for f in dataclasses.fields(BackboneConfig)}
    rows = [(name, ", ".join(k for k in config_fields(name) if k not in shared) or "-") for name in list_backbones()]
    console.print(_table("backbones (model.backbone; own keys go under model.backbone_config.<name>)", ("name", "own config keys"), rows))
    rows = []
    for name in list_adapters():
        fields = [f.name for f in dataclasses.fields(adapter_config_class(name)) if f.name != "dim"]
        rows.append((name, ", ".join(fields)))
    console.print(_table("adapters (data.adapter.name)", ("name", "settings"), rows))
    rows = []
    for name in list_datasets():
        doc = inspect.getdoc(get_dataset_loader(name)) or ""
        rows.append((name, doc.splitlines()[0] if doc else ""))
    console.print(_table("datasets (data.dataset.name)", ("name", "description"), rows))
    recipes_dir = Path(args.recipes_dir)
    if recipes_dir.is_dir():
        from maelre.yamlio import read_yaml_file

        rows = []
        for path in sorted(recipes_dir.glob("*.yaml")):
            raw = read_yaml_file(path) or {}
            if not isinstance(raw, dict):
                raise ValueError(f"{path} holds a YAML {type(raw).__name__}, not a recipe mapping; fix it or move it out of {recipes_dir}")
            rows.append((str(path), raw.get("description", "")))
        console.print(_table("recipes", ("file", "description"), rows))
    return 0


BENCHMARKS = ("efficiency", "profile", "paired")


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {args.suite!r}{did_you_mean(args.suite, BENCHMARKS)}; available: {', '.join(BENCHMARKS)}")
    try:
        module = importlib.import_module(f"maelre.bench.{args.suite}")
    except ModuleNotFoundError as err:
        raise ValueError(f"the {args.suite} benchmark is not available ({err})") from err
    result = module.main(list(args.bench_args))
    return int(result or 0)


def cmd_lra(args: argparse.Namespace) -> int:
    from maelre.bench import leaderboard

    return int(leaderboard.main(list(args.passthrough)) or 0)


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="maelre", description="Train, evaluate and use long-sequence classifiers.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add_set(p: argparse.ArgumentParser) -> None:
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key (YAML value), e.g. --set trainer.max_epochs=3; repeatable")

    for name, func, help_text, default_dir in (
        ("fit", cmd_fit, "train (and test) from a recipe", "output.run_dir/version_N"),
        ("pretrain", cmd_pretrain, "masked-token self-pretraining on a recipe's training inputs (then: fit --init-from RUN)",
         "output.run_dir/pretrain/version_N"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("recipe", help="recipe YAML file")
        add_set(p)
        p.add_argument("--resume", action="store_true", help="continue the interrupted run from its newest checkpoint")
        p.add_argument("--run-dir", help=f"exact run directory (default: {default_dir})")
        p.add_argument("--no-progress", action="store_true", help="no progress bar or model summary")
        if name == "fit":
            p.add_argument("--init-from", metavar="RUN", help="start from the adapter and backbone weights of a 'maelre pretrain' run (sets model.init_from)")
        p.set_defaults(func=func)

    for name, func, what in (("validate", cmd_validate, "validation"), ("test", cmd_test, "test")):
        p = sub.add_parser(name, help=f"evaluate a saved model on its recipe's {what} split")
        p.add_argument("target", help="checkpoint or run directory, or the recipe file of a finished run")
        add_set(p)
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--json", action="store_true", help="also print the metrics as one JSON line")
        p.add_argument("--predictions", metavar="FILE", help="write the labels and predicted classes per sample to FILE (for maelre compare)")
        p.set_defaults(func=func)

    p = sub.add_parser("compare", help="two runs on the same test set, item by item: accuracies, 95%% intervals, McNemar's exact test")
    p.add_argument("a", help="run directory or test_predictions.json of run A")
    p.add_argument("b", help="run directory or test_predictions.json of run B")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the verdict (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("predict", help="classify audio/text/image files or a .npy array with a saved model")
    p.add_argument("checkpoint", help="checkpoint or run directory")
    p.add_argument("files", nargs="*", help="input files (.wav/.flac, .txt, .png/.jpg, .npy)")
    p.add_argument("--npy", help="array file with one sample per row")
    p.add_argument("--sample-rate", type=int, default=None, help="sample rate of --npy waveforms (default: the adapter's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--out", help="write predictions to this .json or .csv file")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("check", help="validate a recipe and show the resolved config, parameter count and per-block plan")
    p.add_argument("recipe")
    add_set(p)
    p.add_argument("--length", type=int, default=None, help="sequence length N for the plan (default: adapter max_len, padded)")
    p.add_argument("--num-classes", type=int, default=10, help="classes assumed for the parameter count (default 10)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("info", help="list backbones, adapters, datasets and recipes")
    p.add_argument("--recipes-dir", default="recipes")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("bench", help="benchmarks: 'maelre bench efficiency --help', 'maelre bench profile --help', 'maelre bench paired --help'")
    p.add_argument("suite", help="benchmark name (efficiency: cost versus N; profile: where one step's time and memory go; "
                   "paired: MAELRE against its twin and full attention, timed in alternating rounds)")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="arguments of the benchmark")
    p.set_defaults(func=cmd_bench)

    # Its options belong to maelre.bench.leaderboard, which parses them itself (see main).
    p = sub.add_parser("lra", help="accuracy leaderboard: every backbone on LRA tasks and FSDD, same budget ('maelre lra --help')", add_help=False)
    p.set_defaults(func=cmd_lra)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    parser = build_parser()
    args, passthrough = parser.parse_known_args(argv)
    if args.command != "lra" and passthrough:
        parser.error(f"unrecognized arguments: {' '.join(passthrough)}")
    args.passthrough = passthrough
    try:
        with warnings.catch_warnings():
            from maelre.recipe import RecipeWarning

            warnings.simplefilter("always", RecipeWarning)
            warnings.showwarning = _show_warning
            return args.func(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"maelre {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except SystemExit as err:
        if not _stopped_by_sigterm(err):
            raise
        print(f"maelre {args.command}: stopped by SIGTERM; --resume continues from the newest checkpoint", file=sys.stderr)
        return 128 + 15


def _stopped_by_sigterm(err: SystemExit) -> bool:
    """Whether ``err`` is Lightning's ``SIGTERMException``: it ends training on a SIGTERM with exit status 0."""
    exceptions = sys.modules.get("lightning.pytorch.utilities.exceptions")  # not loaded: not raised
    return exceptions is not None and isinstance(err, exceptions.SIGTERMException)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

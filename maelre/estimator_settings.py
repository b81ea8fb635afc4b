"""The estimator's data-derived defaults: what each ``"auto"`` parameter resolves to (``auto_settings``) and
the adapter settings read off the training items.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

#: data-derived defaults aim at about this many tokens per sample (patches of series and images)
TARGET_TOKENS = 128
#: what every ``"auto"`` parameter means outside time series (the estimator's former fixed defaults)
GENERIC_DEFAULTS: dict[str, Any] = dict(
    dim=64, depth=4, heads=4, max_epochs=20, batch_size=32, lr=1e-3, early_stopping=False, validation_fraction=0.1, n_iter_no_change=5
)
#: time-series rules (``auto_settings``): optimizer steps the epoch budget aims at, its clip range,
#: and the training-set size from which the model is wider and training stops early on a split.
#: 400 steps since round 5 (600 before): with the batch-normalized stem the models fit their
#: training data sooner, and the cheaper schedule pays for the stem's token-level modules
TS_TARGET_STEPS = 400
TS_EPOCH_RANGE = (20, 200)
TS_LARGE = 1000
#: time-series batch size: n // TS_BATCH_DIVISOR training series, clipped to TS_BATCH_RANGE
TS_BATCH_DIVISOR = 10
TS_BATCH_RANGE = (8, 32)
#: the time-series adapter's data-derived defaults besides tokenization. Each series is
#: z-normalized on its own (global statistics flatten every series far below the training set's
#: largest scale to a constant), its scale entering as ``scale_channels``. The stem (round 5,
#: docs/sklearn.md): one InceptionTime-style module over the steps, two more at token resolution
#: on each patch's max-pooled features (they see ``patch_len`` times further, at a
#: ``patch_len``-th of the cost of a step-level module), each batch-normalized over the real
#: steps; branches of 9 taps at dilations 1, 2, 4 (receptive fields 9, 17, 33 steps or tokens).
TS_ADAPTER_DEFAULTS: dict[str, Any] = {
    "normalize": "instance", "scale_channels": True, "stem": "conv", "stem_layers": 1, "stem_token_layers": 2,
    "stem_norm": "batch", "augment": (), "stem_kernels": (9, 9, 9), "stem_dilations": (1, 2, 4),
}
#: training series of different lengths are batched by length within chunks of this many
#: random batches: less padding, while each batch still mixes lengths (and so classes)
TS_BUCKET_BATCHES = 4
#: MAELRE backbone settings under the time-series defaults (``backbone_params`` win): no value
#: convolution (the library default since the sCIFAR-10 merge ablation); on 3-fold CV of the
#: ArrowHead and OSULeaf training splits it lowered accuracy (docs/sklearn.md)
TS_MAELRE_DEFAULTS: dict[str, Any] = {"value_conv": None}


def auto_settings(params: dict, modality: str, labels: np.ndarray) -> dict:
    """Resolve the estimator's ``"auto"`` parameters for a training set (labels ``[n]`` encoded 0..K-1).

    Outside time series every ``"auto"`` is ``GENERIC_DEFAULTS``. For time series, with ``n``
    training series (rules documented in ``docs/sklearn.md``):

    * ``dim`` 32, ``heads`` 2 when ``n < TS_LARGE``, else 64 and 4; ``depth`` 2;
    * ``batch_size`` = ``n // 10`` clipped to [8, 32]; ``lr`` 2e-3;
    * ``max_epochs``: enough epochs for ``TS_TARGET_STEPS`` optimizer steps on the training
      part, clipped to ``TS_EPOCH_RANGE``;
    * ``early_stopping="auto"`` with ``max_epochs="auto"``: only from ``TS_LARGE`` series on,
      hold out ``validation_fraction`` (0.2), stop after ``n_iter_no_change`` (a quarter of
      the epoch budget, at least 10) epochs without a lower validation loss (``stop_on``) and
      keep the best weights. Below ``TS_LARGE`` the whole budget trains on all series: a
      split of fewer than 100 series chose too few epochs (see ``docs/sklearn.md``). Skipped
      when some class has fewer than 2 series or the held-out part would have fewer series
      than there are classes.

    Returns:
        every parameter above resolved, plus ``stop_on`` (the monitored metric).
    """
    counts = np.bincount(labels)
    n = len(labels)
    resolved = {key: params[key] for key in GENERIC_DEFAULTS}
    if modality != "timeseries":
        resolved = {key: GENERIC_DEFAULTS[key] if value == "auto" else value for key, value in resolved.items()}
        return {**resolved, "stop_on": "val/acc"}
    small = n < TS_LARGE
    rules = {
        "dim": 32 if small else 64, "depth": 2, "heads": 2 if small else 4,
        "batch_size": int(np.clip(n // TS_BATCH_DIVISOR, *TS_BATCH_RANGE)), "lr": 2e-3, "validation_fraction": 0.2,
    }
    for key, value in rules.items():
        if resolved[key] == "auto":
            resolved[key] = value
    can_split = counts.min() >= 2 and math.ceil(resolved["validation_fraction"] * n) >= len(counts)
    auto_epochs = resolved["max_epochs"] == "auto"
    auto_stop = auto_epochs and resolved["early_stopping"] == "auto" and bool(can_split) and not small
    if resolved["early_stopping"] == "auto":
        resolved["early_stopping"] = auto_stop
    if auto_epochs:
        train_n = n - math.ceil(resolved["validation_fraction"] * n) if auto_stop else n
        steps_per_epoch = math.ceil(train_n / resolved["batch_size"])
        resolved["max_epochs"] = int(np.clip(math.ceil(TS_TARGET_STEPS / steps_per_epoch), *TS_EPOCH_RANGE))
    if resolved["n_iter_no_change"] == "auto":
        resolved["n_iter_no_change"] = max(10, resolved["max_epochs"] // 4)
    return {**resolved, "stop_on": "val/loss" if auto_stop else "val/acc"}


def _data_defaults(adapter: str, items: list, params: dict) -> dict:
    """Adapter settings read off the training items, given the user's ``adapter_params``.

    Time series: one token per step up to ``TARGET_TOKENS`` steps, else patches of
    ``ceil(T / TARGET_TOKENS)`` steps; ``max_len`` = the longest training series in tokens
    (for the user's ``token``/``patch_len`` when given); ``TS_ADAPTER_DEFAULTS`` (per-series
    normalization with scale channels unless ``normalize`` is given, conv stem with dilated
    branches, unless the user gives ``stem_kernels`` alone, no augmentation). Audio: the
    data's sample rate.
    Images: ``img_size``, ``in_chans`` and the smallest patch of at least 2x2 pixels that
    gives at most ``TARGET_TOKENS`` patches.
    """
    if adapter == "timeseries":
        longest = max(x.shape[-1] for x in items)
        stem = dict(TS_ADAPTER_DEFAULTS)
        if "stem_kernels" in params and "stem_dilations" not in params:
            stem.pop("stem_dilations")  # the default dilations go with the default kernels only
        scaling = {key: stem.pop(key) for key in ("normalize", "scale_channels")}
        if params.get("normalize", "instance") != "instance":
            scaling = {}  # scale channels go with instance normalization only
        default_token = "point" if longest <= TARGET_TOKENS else "patch"
        token = params.get("token", default_token)
        if token == "point":
            return {**scaling, **stem, "token": "point", "max_len": longest}
        patch = params.get("patch_len", math.ceil(longest / TARGET_TOKENS))
        stride = params.get("patch_stride") or patch
        extra = stem if stride == patch else {}  # the stem and augmentation need non-overlapping patches
        return {**scaling, **extra, "token": "patch", "patch_len": patch, "max_len": max(1, math.ceil(max(longest - patch, 0) / stride) + 1)}
    if adapter == "audio":
        rates = {int(rate) for _, rate in items}
        return {"sample_rate": rates.pop()} if len(rates) == 1 else {}
    if adapter == "image":
        first = np.asarray(items[0])
        h, w = first.shape[:2]
        channels = 1 if first.ndim == 2 or first.shape[-1] == 1 else 3
        common = math.gcd(h, w)
        sizes = [p for p in range(2, common + 1) if common % p == 0] or [1]
        patch = next((p for p in sizes if (h // p) * (w // p) <= TARGET_TOKENS), sizes[-1])
        return {"img_size": (h, w), "in_chans": channels, "patch_size": patch}
    return {}

"""Time-series adapter: ``[C, T]`` (or ``[T]``) float arrays, equal or variable length, with NaN.

Pipeline of ``encode``: validate -> normalize (per channel) -> apply ``nan_policy`` ->
(``scale_channels``) the series' scale as a per-sample ``"scale"`` entry ->
point tokens (one per time step, ``[C] -> Linear``) or patch tokens (``patch_len``
steps every ``patch_stride``, ``[C * patch_len] -> Linear``) -> truncate to ``max_len``
tokens (head kept) or raise. With ``stem="conv"`` the tokens are made by a multi-scale
convolutional stem over the steps instead of the linear projection (``ConvStem`` in
``modalities.timeseries_layers``); ``augment`` perturbs the steps in training mode.

``nan_policy``:
  * ``"raise"``: any NaN is a ``ValueError``.
  * ``"zero"``: NaN becomes 0 after normalization (the channel mean under ``"global"``).
  * ``"interpolate"``: linear interpolation along time per channel, edges take the
    nearest observed value; a channel with no observation in the series becomes 0.
  * ``"mask"``: a time step is real only if at least one channel is observed there;
    steps where every channel is NaN become padding (mask False), trailing ones are
    dropped (the NaN padding of unequal-length panels); remaining NaN become 0. A patch is
    real if any of its steps is.
A series that is entirely NaN is an error under every policy.

``to_series_list`` turns sktime/numpy/pandas panels into the list of ``[C, T]`` arrays
``fit`` and ``encode`` take.
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from modalities.base import register_adapter
from modalities.common import SequenceAdapter, SequenceAdapterConfig, check_choice, check_positive, kept_length
from modalities.timeseries_layers import STEM_NORMS, TS_AUGMENTATIONS, ConvStem, augment_steps

NAN_POLICIES = ("raise", "zero", "interpolate", "mask")
TS_NORMALIZATIONS = ("global", "instance", "none")
TS_TOKENS = ("point", "patch")
TS_STEMS = ("linear", "conv")
TS_STEM_POOLS = ("input", "bottleneck")
_STD_FLOOR = 1e-8


@dataclass
class TimeSeriesAdapterConfig(SequenceAdapterConfig):
    """Time-series adapter settings (plus ``dim, max_len, truncation, pad_to_multiple, pos_embed``).

    Attributes:
        channels: number of channels C; ``None`` = learned by ``fit`` (the projection is
            built then, so call ``fit`` or ``load_preprocessing_state`` before training).
        normalize: ``"global"`` (per-channel mean/std fitted on training series, NaN
            ignored), ``"instance"`` (per series and channel) or ``"none"``.
        scale_channels: with ``normalize="instance"``, ``encode`` adds a ``"scale"`` entry of two
            numbers per channel (the series' log standard deviation and ``asinh`` of its mean,
            each standardized over the training series) and ``embed`` projects them to a shift
            added to every token, so instance normalization hides no amplitude information.
        nan_policy: ``"raise" | "zero" | "interpolate" | "mask"`` (see module docstring).
        token: ``"point"`` (one token per time step) or ``"patch"``.
        patch_len: steps per patch.
        patch_stride: steps between patch starts (``None`` = ``patch_len``, non-overlapping).
        stem: ``"linear"`` (each token's values -> ``Linear``) or ``"conv"`` (``ConvStem``:
            multi-scale convolutions over the steps, then a projection per token); ``"conv"``
            and ``augment`` need non-overlapping patches.
        stem_channels: output channels of each ``"conv"`` branch.
        stem_kernels: kernel sizes of the ``"conv"`` branches (one branch each).
        stem_dilations: dilation of each ``"conv"`` branch (``None``: 1 for every kernel).
        stem_layers: stacked multi-scale modules of the ``"conv"`` stem (residual from the second).
        stem_pool: what the max-pool branch of the stacked modules pools: ``"input"`` (the
            module's input, as InceptionTime) or ``"bottleneck"`` (the bottleneck's output, cheaper).
        stem_norm: what normalizes each stem module: ``"layer"`` (``LayerNorm`` over the
            channels of each step) or ``"batch"`` (``MaskedBatchNorm``: batch statistics of each
            channel over the real steps, running statistics at evaluation, as InceptionTime).
        stem_token_layers: further stem modules at token resolution, on each patch's max-pooled
            features (``ConvStem``'s ``token_layers``).
        augment: training-time augmentations, any of ``"jitter"``, ``"scaling"``,
            ``"slice"``, ``"warp"`` (``augment_steps``); off in eval mode.
    """

    channels: int | None = None
    normalize: str = "global"
    scale_channels: bool = False
    nan_policy: str = "raise"
    token: str = "point"
    patch_len: int = 16
    patch_stride: int | None = None
    stem: str = "linear"
    stem_channels: int = 16
    stem_kernels: tuple[int, ...] = (9, 19, 39)
    stem_dilations: tuple[int, ...] | None = None
    stem_layers: int = 1
    stem_pool: str = "input"
    stem_norm: str = "layer"
    stem_token_layers: int = 0
    augment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("timeseries", "normalize", self.normalize, TS_NORMALIZATIONS)
        check_choice("timeseries", "nan_policy", self.nan_policy, NAN_POLICIES)
        check_choice("timeseries", "token", self.token, TS_TOKENS)
        check_choice("timeseries", "stem", self.stem, TS_STEMS)
        if self.scale_channels and self.normalize != "instance":
            raise ValueError(f"timeseries: scale_channels needs normalize='instance', got normalize={self.normalize!r}")
        if self.patch_stride is None:
            self.patch_stride = self.patch_len
        check_positive("timeseries", patch_len=self.patch_len, patch_stride=self.patch_stride, stem_channels=self.stem_channels, stem_layers=self.stem_layers)
        if isinstance(self.stem_kernels, int) or not self.stem_kernels:
            raise ValueError(f"timeseries: stem_kernels must be a non-empty list of kernel sizes, got {self.stem_kernels!r}")
        self.stem_kernels = tuple(self.stem_kernels)
        check_positive("timeseries", **{f"stem_kernels[{i}]": k for i, k in enumerate(self.stem_kernels)})
        if self.stem_dilations is not None:
            if isinstance(self.stem_dilations, int) or len(self.stem_dilations) != len(self.stem_kernels):
                raise ValueError(
                    f"timeseries: stem_dilations must list one dilation per kernel ({len(self.stem_kernels)}), got {self.stem_dilations!r}"
                )
            self.stem_dilations = tuple(self.stem_dilations)
            check_positive("timeseries", **{f"stem_dilations[{i}]": d for i, d in enumerate(self.stem_dilations)})
        check_choice("timeseries", "stem_pool", self.stem_pool, TS_STEM_POOLS)
        check_choice("timeseries", "stem_norm", self.stem_norm, STEM_NORMS)
        if isinstance(self.stem_token_layers, bool) or not isinstance(self.stem_token_layers, int) or self.stem_token_layers < 0:
            raise ValueError(f"timeseries: stem_token_layers must be an integer >= 0, got {self.stem_token_layers!r}")
        if isinstance(self.augment, str):
            raise ValueError(f"timeseries: augment must be a list of names, e.g. [{self.augment!r}], got the string {self.augment!r}")
        self.augment = tuple(self.augment)
        for name in self.augment:
            check_choice("timeseries", "augment", name, TS_AUGMENTATIONS)
        if self.token == "patch" and self.patch_stride != self.patch_len and (self.stem == "conv" or self.augment):
            raise ValueError(
                f"timeseries: stem='conv' and augment need non-overlapping patches, got patch_len={self.patch_len}, "
                f"patch_stride={self.patch_stride}; set patch_stride to patch_len (or null)"
            )
        if self.channels is not None:
            check_positive("timeseries", channels=self.channels)


def _as_channels_first(x: Any, owner: str = "timeseries") -> np.ndarray:
    """``[T]`` or ``[C, T]`` real numbers -> float64 ``[C, T]``."""
    if isinstance(x, Tensor):
        x = x.numpy(force=True)
    arr = np.asarray(x)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{owner}: a series must be a real-valued array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None]
    if arr.ndim != 2:
        raise ValueError(f"{owner}: a series must have shape [T] or [C, T], got {arr.shape}; convert panels with to_series_list()")
    if arr.shape[1] == 0:
        raise ValueError(f"{owner}: series has no time steps (shape {arr.shape})")
    if np.isinf(arr).any():
        raise ValueError(f"{owner}: series contains inf values; replace them (e.g. with NaN and a nan_policy)")
    return arr.astype(np.float64, copy=False)


def to_series_list(X: Any) -> list[np.ndarray]:
    """Convert a panel of series to a list of float ``[C, T]`` arrays.

    Accepts: numpy ``[n, C, T]`` (numpy3D) or ``[n, T]`` (univariate), a list/tuple of
    ``[T]`` / ``[C, T]`` arrays or tensors, and any sktime Panel mtype (``nested_univ``
    or ``pd-multiindex`` DataFrame, ``df-list``, ...), equal or unequal length.
    """
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 3:
            return [np.asarray(s, dtype=np.float64) for s in X]
        if X.ndim == 2:
            return [np.asarray(s, dtype=np.float64)[None] for s in X]
        raise ValueError(f"to_series_list: a numpy panel must be [n, C, T] or [n, T], got shape {X.shape}")
    if isinstance(X, (list, tuple)) and not any(_is_pandas(s) for s in X):
        return [_as_channels_first(s, "to_series_list") for s in X]
    from sktime.datatypes import check_is_scitype, convert_to

    valid, _, _ = check_is_scitype(X, scitype="Panel", return_metadata=[])
    if not valid:
        raise ValueError(
            f"to_series_list: {type(X).__name__} is not a recognised panel; pass numpy [n, C, T], "
            "a list of [C, T] arrays, or an sktime Panel (nested_univ / pd-multiindex DataFrame)"
        )
    return [frame.to_numpy(dtype=np.float64).T for frame in convert_to(X, to_type="df-list")]


def _is_pandas(x: Any) -> bool:
    return type(x).__module__.startswith("pandas")


def _interpolate(x: np.ndarray) -> np.ndarray:
    """Fill NaN per channel by linear interpolation over time (edges: nearest value; empty channel: 0)."""
    out = x.copy()
    steps = np.arange(x.shape[1])
    for row in out:
        seen = ~np.isnan(row)
        if not seen.any():
            row[:] = 0.0
        elif not seen.all():
            row[~seen] = np.interp(steps[~seen], steps[seen], row[seen])
    return out


@register_adapter("timeseries")
class TimeSeriesAdapter(SequenceAdapter):
    """``[C, T]`` series -> point or patch tokens ``[B, N, dim]``.

    ``encode`` -> ``{"values": FloatTensor[N, F], "mask": BoolTensor[N]}`` with ``F = C``
    (points) or ``C * patch_len`` (patches, channel-major), plus ``"steps": BoolTensor[N, P]``
    (which of a token's ``P`` steps are observed) when the stem or augmentation needs the
    step layout, and ``"scale": FloatTensor[2C]`` (one per sample, not per token) with
    ``scale_channels``; ``forward`` -> ``Linear(F, dim)`` or ``ConvStem`` + positions.
    """

    modality = "timeseries"
    config_class = TimeSeriesAdapterConfig

    def __init__(self, config: TimeSeriesAdapterConfig) -> None:
        super().__init__(config)
        self.mean: np.ndarray | None = None  # [C] float64, set by fit (normalize="global")
        self.std: np.ndarray | None = None
        self.scale_mean: np.ndarray | None = None  # [2C] float64, set by fit (scale_channels)
        self.scale_std: np.ndarray | None = None
        self.proj: nn.Linear | ConvStem | None = None
        self.scale_proj: nn.Linear | None = None  # scale_channels -> a shift added to every token
        if config.channels is not None:
            self._build_projection(config.channels)
        self.build_positions()

    @property
    def channels(self) -> int | None:
        return self.config.channels

    @property
    def steps_per_token(self) -> int:
        return 1 if self.config.token == "point" else self.config.patch_len

    def _build_projection(self, channels: int) -> None:
        if self.proj is not None and self.config.channels == channels:
            return
        if self.config.channels is not None and self.config.channels != channels:
            raise ValueError(f"timeseries: the adapter is set up for {self.config.channels} channels, got {channels}")
        self.config = dataclasses.replace(self.config, channels=channels)
        device = next(self.parameters(), torch.empty(0)).device
        c = self.config
        self.scale_proj = nn.Linear(2 * channels, c.dim, device=device) if c.scale_channels else None
        if c.stem == "conv":
            self.proj = ConvStem(
                channels, self.steps_per_token, c.dim, c.stem_channels, c.stem_kernels, c.stem_layers, c.stem_dilations, c.stem_pool,
                c.stem_norm, c.stem_token_layers,
            ).to(device)
        else:
            self.proj = nn.Linear(channels * self.steps_per_token, c.dim, device=device)

    @property
    def _uses_steps(self) -> bool:
        """Whether ``embed`` works on the step layout (and ``encode`` emits ``"steps"``)."""
        return self.config.stem == "conv" or bool(self.config.augment)

    # -- preprocessing (CPU) ------------------------------------------------------------
    def fit(self, inputs: Sequence[Any]) -> "TimeSeriesAdapter":
        """Learn the channel count and (``normalize="global"``) per-channel mean/std, ignoring NaN."""
        series = to_series_list(inputs)
        if not series:
            raise ValueError("timeseries: fit() needs at least one training series")
        counts = {s.shape[0] for s in series}
        if len(counts) != 1:
            raise ValueError(f"timeseries: training series have different channel counts {sorted(counts)}; every series needs the same C")
        channels = counts.pop()
        self._build_projection(channels)
        if self.config.scale_channels:
            raw = np.stack([self._raw_scale(s) for s in series])  # [n, 2C]
            self.scale_mean = np.nanmean(raw, axis=0)
            spread = np.nanstd(raw, axis=0)
            self.scale_std = np.where(spread > _STD_FLOOR, spread, 1.0)
        if self.config.normalize == "global":
            values = np.concatenate(series, axis=1)
            seen = (~np.isnan(values)).sum(axis=1)
            if (seen == 0).any():
                raise ValueError(f"timeseries: channels {np.flatnonzero(seen == 0).tolist()} are NaN in every training series; drop them")
            self.mean = np.nanmean(values, axis=1)
            std = np.nanstd(values, axis=1)
            self.std = np.where(std > _STD_FLOOR, std, 1.0)  # constant channels are only centred
        return self

    def _raw_scale(self, x: np.ndarray) -> np.ndarray:
        """``[C, T]`` -> ``[2C]``: per channel log std, then ``asinh(mean)``; NaN for an all-NaN channel."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(x, axis=1)
            std = np.nanstd(x, axis=1)
        return np.concatenate([np.log(np.maximum(std, _STD_FLOOR)), np.arcsinh(mean)])

    def _scale(self, x: np.ndarray) -> Tensor:
        """``scale_channels``: the standardized ``_raw_scale`` of ``x [C, T]`` -> ``[2C]`` float32 (NaN -> 0)."""
        if self.scale_mean is None:
            raise ValueError("timeseries: scale_channels needs statistics; call fit(train_series) or load_preprocessing_state(state) first")
        z = np.nan_to_num((self._raw_scale(x) - self.scale_mean) / self.scale_std)
        return torch.from_numpy(z.astype(np.float32))

    def _normalized(self, x: np.ndarray) -> np.ndarray:
        mode = self.config.normalize
        if mode == "global":
            if self.mean is None:
                raise ValueError("timeseries: normalize='global' needs statistics; call fit(train_series) or load_preprocessing_state(state) first")
            return (x - self.mean[:, None]) / self.std[:, None]
        if mode == "instance":
            with warnings.catch_warnings():  # all-NaN channels stay NaN; nan_policy handles them
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(x, axis=1, keepdims=True)
                std = np.nanstd(x, axis=1, keepdims=True)
            return (x - mean) / np.where(std > _STD_FLOOR, std, 1.0)
        return x

    def _clean(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply ``nan_policy``: -> (values without NaN ``[C, T']``, step mask ``[T']``)."""
        nan = np.isnan(x)
        if nan.all():
            raise ValueError("timeseries: series is entirely NaN; drop it from the data")
        policy = self.config.nan_policy
        steps = np.ones(x.shape[1], dtype=bool)
        if nan.any():
            if policy == "raise":
                raise ValueError(
                    f"timeseries: series has {int(nan.sum())} NaN values of {nan.size}; "
                    "set nan_policy to 'zero', 'interpolate' or 'mask'"
                )
            if policy == "interpolate":
                x = _interpolate(x)
            else:
                if policy == "mask":
                    steps = ~nan.all(axis=0)
                    last = int(np.flatnonzero(steps)[-1]) + 1
                    x, steps = x[:, :last], steps[:last]
                x = np.where(np.isnan(x), 0.0, x)
        return x, steps

    def _tokens(self, x: np.ndarray, steps: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """Values ``[C, T]`` + step mask ``[T]`` -> tokens ``[N, F]``, token mask ``[N]``, step mask ``[N, P]`` (truncated)."""
        c = self.config
        t = x.shape[1]
        if c.token == "point":
            keep = kept_length(t, c.max_len, c.truncation, owner="timeseries")
            mask = torch.from_numpy(steps[:keep].copy())
            return torch.from_numpy(np.ascontiguousarray(x[:, :keep].T, dtype=np.float32)), mask, mask[:, None]
        n = -(-max(t - c.patch_len, 0) // c.patch_stride) + 1
        keep = kept_length(n, c.max_len, c.truncation, owner="timeseries", unit="patches")
        span = (keep - 1) * c.patch_stride + c.patch_len
        values = torch.zeros(x.shape[0], span, dtype=torch.float32)
        mask = torch.zeros(span, dtype=torch.bool)
        used = min(t, span)
        values[:, :used] = torch.from_numpy(x[:, :used])
        mask[:used] = torch.from_numpy(steps[:used])
        patches = values.unfold(1, c.patch_len, c.patch_stride)  # [C, N, patch_len]
        step_mask = mask.unfold(0, c.patch_len, c.patch_stride)  # [N, patch_len]
        return patches.transpose(0, 1).flatten(1), step_mask.any(-1), step_mask

    def encode(self, x: Any) -> dict[str, Tensor]:
        arr = _as_channels_first(x)
        if self.channels is None:
            raise ValueError("timeseries: channel count unknown; call fit(train_series) or set channels")
        if arr.shape[0] != self.channels:
            hint = " (a [T, C] array? pass it transposed)" if arr.shape[1] == self.channels else ""
            raise ValueError(f"timeseries: series has {arr.shape[0]} channels but the adapter was fitted on {self.channels}{hint}")
        tokens, mask, step_mask = self._tokens(*self._clean(self._normalized(arr)))
        if not bool(mask.any()):
            raise ValueError(f"timeseries: no observed values within the first {self.config.max_len} tokens; raise max_len or use another nan_policy")
        encoded = {"values": tokens, "mask": mask}
        if self._uses_steps:
            encoded["steps"] = step_mask
        if self.config.scale_channels:
            encoded["scale"] = self._scale(arr)
        return encoded

    def collate(self, items: list[dict[str, Tensor]], buckets: Sequence[int] | None = None) -> dict[str, Tensor]:
        """``pad_batch`` over the per-token entries; the per-sample ``"scale"`` entries are stacked to ``[B, 2C]``."""
        if not items or "scale" not in items[0]:
            return super().collate(items, buckets)
        scale = torch.stack([item["scale"] for item in items])
        batch = super().collate([{key: value for key, value in item.items() if key != "scale"} for item in items], buckets)
        return {**batch, "scale": scale}

    def num_tokens(self, x: Any) -> int:
        """Sequence length of ``x`` in tokens, including steps masked by ``nan_policy="mask"``."""
        return len(self.encode(x)["mask"])

    # -- trainable embedding ------------------------------------------------------------
    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if self.proj is None:
            raise ValueError("timeseries: the projection is not built; call fit(train_series), load_preprocessing_state(state) or set channels")
        tokens = self._embed_values(batch["values"], batch)
        if self.scale_proj is not None:
            if "scale" not in batch:
                raise ValueError("timeseries: scale_channels needs the batch's 'scale' entry; collate the output of this adapter's encode()")
            tokens = tokens + self.scale_proj(batch["scale"]).unsqueeze(1)
        return tokens, batch["mask"]

    def _embed_values(self, values: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The series' own values ``[B, N, C * P]`` -> tokens ``[B, N, dim]`` (linear projection or conv stem, after augmentation)."""
        if not self._uses_steps:
            return self.proj(values)
        if "steps" not in batch:
            raise ValueError("timeseries: stem='conv' and augment need the batch's 'steps' entry; collate the output of this adapter's encode()")
        steps = batch["steps"]  # values [B, N, C * P] channel-major, steps [B, N, P]
        b, n, p = steps.shape
        x = values.reshape(b, n, -1, p).permute(0, 2, 1, 3).reshape(b, -1, n * p)  # [B, C, N * P]
        steps = steps.reshape(b, n * p)
        if self.training and self.config.augment:
            x = augment_steps(x, steps, self.config.augment)
        if isinstance(self.proj, ConvStem):
            return self.proj(x, steps)
        return self.proj(x.reshape(b, -1, n, p).permute(0, 2, 1, 3).reshape(b, n, -1))  # back to [B, N, C * P]

    # -- state ----------------------------------------------------------------------------
    def preprocessing_state(self) -> dict:
        if self.channels is None:
            raise ValueError("timeseries: nothing to save, the adapter is not fitted; call fit(train_series) first")
        state: dict = {"channels": self.channels}
        if self.config.normalize == "global":
            if self.mean is None:
                raise ValueError("timeseries: nothing to save, global statistics are not fitted; call fit(train_series) first")
            state.update(mean=self.mean.tolist(), std=self.std.tolist())
        if self.config.scale_channels:
            if self.scale_mean is None:
                raise ValueError("timeseries: nothing to save, scale statistics are not fitted; call fit(train_series) first")
            state.update(scale_mean=self.scale_mean.tolist(), scale_std=self.scale_std.tolist())
        return state

    def load_preprocessing_state(self, state: dict) -> None:
        channels = state.get("channels")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels <= 0:
            raise ValueError(f"timeseries: state needs a positive 'channels', got {channels!r}")
        if self.config.normalize == "global":
            for key in ("mean", "std"):
                if len(state.get(key) or []) != channels:
                    raise ValueError(f"timeseries: state {key!r} must list {channels} values (one per channel), got {state.get(key)!r}")
        if self.config.scale_channels:
            for key in ("scale_mean", "scale_std"):
                if len(state.get(key) or []) != 2 * channels:
                    raise ValueError(f"timeseries: state {key!r} must list {2 * channels} values (two per channel), got {state.get(key)!r}")
        self._build_projection(channels)
        if self.config.normalize == "global":
            self.mean, self.std = np.asarray(state["mean"], dtype=np.float64), np.asarray(state["std"], dtype=np.float64)
        if self.config.scale_channels:
            self.scale_mean = np.asarray(state["scale_mean"], dtype=np.float64)
            self.scale_std = np.asarray(state["scale_std"], dtype=np.float64)

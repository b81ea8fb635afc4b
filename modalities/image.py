"""Image adapters.

* ``"image"``: ViT-style patches through ``timm.layers.PatchEmbed`` + learned positions.
  Inputs must match ``img_size`` and ``in_chans`` exactly; uint8 is scaled to [0, 1]
  and normalized with ``mean``/``std``.
* ``"pixels"``: one token per pixel (sCIFAR-10 / LRA Image, Pathfinder, Path-X): the 8-bit
  intensity goes through ``nn.Embedding(256, dim)``; RGB is either converted to gray
  with the ITU-R 601 luma weights (``channels="gray"``) or kept (``channels="rgb"``,
  three embeddings summed or a Linear over the three values). ``N = H * W`` in raster
  order. With ``pixel_embed="linear"`` the values are instead standardised with the
  training set's mean and std (learned by ``fit``) and projected by a Linear layer.

Raw input: numpy ``[H, W]`` or ``[H, W, C]`` (HWC), uint8 / integers in 0..255 or floats in
[0, 1], or a PIL image (converted to the adapter's mode).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from modalities.base import register_adapter
from modalities.common import (
    EMBED_INIT_STD,
    SequenceAdapter,
    SequenceAdapterConfig,
    as_pair,
    check_choice,
    kept_length,
    pad_batch,
    round_up,
    token_embedding,
)

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
PIXEL_CHANNELS = ("gray", "rgb")
RGB_EMBEDS = ("sum", "linear")
PIXEL_EMBEDS = ("table", "linear")
STATS_SAMPLE = 2000  # training images read by ``PixelAdapter.fit`` for the value statistics


def image_array(x: Any, channels: int, owner: str) -> np.ndarray:
    """Validate a raw image -> uint8 ``[H, W, channels]``.

    PIL images are converted to ``"L"``/``"RGB"``; arrays must already have the right
    channel count (``[H, W]`` counts as one channel). Floats must lie in [0, 1].
    """
    if isinstance(x, Image.Image):
        x = np.asarray(x.convert("L" if channels == 1 else "RGB"))
    if isinstance(x, Tensor):
        x = x.numpy(force=True)
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{owner}: expected a numpy array [H, W] / [H, W, C] or a PIL image, got {type(x).__name__}")
    arr = x[..., None] if x.ndim == 2 else x
    if arr.ndim != 3:
        raise ValueError(f"{owner}: image must be [H, W] or [H, W, C], got shape {x.shape}")
    if arr.shape[-1] != channels:
        if arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
            raise ValueError(f"{owner}: image shape {x.shape} looks channels-first (CHW); pass HWC, e.g. x.transpose(1, 2, 0)")
        raise ValueError(f"{owner}: expected {channels} channel(s) (HWC), got shape {x.shape} with {arr.shape[-1]}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"{owner}: float images must hold finite values in [0, 1], got range [{arr.min()}, {arr.max()}]; pass uint8 or divide by 255")
        return np.rint(arr * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError(f"{owner}: integer images must lie in 0..255, got range [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8, copy=False)
    raise ValueError(f"{owner}: image dtype {arr.dtype} is not supported; use uint8 or float in [0, 1]")


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``[H, W, 3]`` -> uint8 ``[H, W]`` luma (rounded)."""
    return np.rint(rgb.astype(np.float32) @ np.asarray(LUMA_WEIGHTS, dtype=np.float32)).clip(0, 255).astype(np.uint8)


@dataclass
class ImageAdapterConfig(SequenceAdapterConfig):
    """Patch adapter settings (plus ``dim, max_len, truncation, pad_to_multiple, pos_embed``).

    Attributes:
        img_size: ``H`` or ``(H, W)`` every image must have.
        patch_size: ``p`` or ``(ph, pw)``; must divide ``img_size``.
        in_chans: 1 (grayscale) or 3 (RGB).
        mean, std: per-channel normalization of [0, 1] pixels (``None``: ImageNet
            statistics for RGB, 0.5 / 0.5 for grayscale).
    """

    img_size: int | tuple[int, int] = 32
    patch_size: int | tuple[int, int] = 4
    in_chans: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        self.img_size = as_pair("image", "img_size", self.img_size)
        self.patch_size = as_pair("image", "patch_size", self.patch_size)
        check_choice("image", "in_chans", self.in_chans, (1, 3))
        if any(s % p for s, p in zip(self.img_size, self.patch_size)):
            raise ValueError(f"image: patch_size {self.patch_size} must divide img_size {self.img_size}")
        rgb = self.in_chans == 3
        self.mean = tuple(self.mean) if self.mean is not None else (IMAGENET_DEFAULT_MEAN if rgb else (0.5,))
        self.std = tuple(self.std) if self.std is not None else (IMAGENET_DEFAULT_STD if rgb else (0.5,))
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans or min(self.std) <= 0:
            raise ValueError(f"image: mean/std need {self.in_chans} values (std > 0), got mean={self.mean}, std={self.std}")
        if self.num_patches > self.max_len:
            raise ValueError(f"image: {self.num_patches} patches exceed max_len={self.max_len}; raise max_len or patch_size")

    @property
    def num_patches(self) -> int:
        return (self.img_size[0] // self.patch_size[0]) * (self.img_size[1] // self.patch_size[1])


@register_adapter("image")
class ImagePatchAdapter(SequenceAdapter):
    """Image ``[H, W, C]`` -> ``PatchEmbed`` tokens ``[B, N, dim]``, ``N = (H / ph) * (W / pw)``.

    ``encode`` -> ``{"image": FloatTensor[C, H, W] (normalized), "mask": BoolTensor[N]}``;
    ``collate`` stacks images and pads the mask to ``pad_to_multiple`` (padded tokens are 0).
    """

    modality = "image"
    config_class = ImageAdapterConfig

    def __init__(self, config: ImageAdapterConfig) -> None:
        super().__init__(config)
        from timm.layers import PatchEmbed

        c = config
        self.patch_embed = PatchEmbed(img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.dim)
        # plain CPU tensors, not buffers: encode runs in data-loader workers whatever the model's device
        self.pixel_mean = torch.tensor(c.mean).view(-1, 1, 1)
        self.pixel_std = torch.tensor(c.std).view(-1, 1, 1)
        self.build_positions()

    def max_positions(self) -> int:
        return round_up(self.config.num_patches, self.config.pad_to_multiple)

    def token_grid(self, n: int) -> tuple[int, int] | None:
        grid = (self.config.img_size[0] // self.config.patch_size[0], self.config.img_size[1] // self.config.patch_size[1])
        return grid if grid[0] * grid[1] == n else None  # padded to a multiple: no longer a grid

    def encode(self, x: Any) -> dict[str, Tensor]:
        arr = image_array(x, self.config.in_chans, "image")
        if arr.shape[:2] != self.config.img_size:
            raise ValueError(f"image: expected images of size (H, W)={self.config.img_size}, got {arr.shape[:2]}; resize them first")
        image = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float().div_(255)
        image = (image - self.pixel_mean) / self.pixel_std
        return {"image": image, "mask": torch.ones(self.config.num_patches, dtype=torch.bool)}

    def bucket_lengths(self, count: int) -> None:
        """``None``: every image has ``num_patches`` tokens, so batches have one length already."""
        return None

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        batch = pad_batch([{"mask": item["mask"]} for item in items], self.config.pad_to_multiple, owner="image")
        batch["image"] = torch.stack([item["image"] for item in items])
        return batch

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        image, mask = batch["image"], batch["mask"]
        expected = (self.config.in_chans, *self.config.img_size)
        if image.dim() != 4 or tuple(image.shape[1:]) != expected:
            raise ValueError(f"image: batch['image'] must be [B, {', '.join(map(str, expected))}], got {tuple(image.shape)}")
        tokens = self.patch_embed(image)
        extra = mask.shape[1] - tokens.shape[1]
        return nn.functional.pad(tokens, (0, 0, 0, extra)), mask


@dataclass
class PixelAdapterConfig(SequenceAdapterConfig):
    """Pixel-sequence settings (plus ``dim, max_len, truncation, pad_to_multiple, pos_embed``).

    Attributes:
        img_size: if set, ``H`` or ``(H, W)`` every image must have; ``None`` accepts any
            size with ``H * W`` within ``max_len`` (or truncated in raster order).
        channels: ``"gray"`` (RGB converted with luma weights) or ``"rgb"``.
        rgb_embed: for ``"rgb"`` with ``pixel_embed="table"``: ``"sum"`` of three 256-level
            embeddings, or ``"linear"`` projection of the three [0, 1] values.
        pixel_embed: ``"table"`` (one learned vector per 8-bit level) or ``"linear"``
            (values standardised per channel with the training set's mean and std, then
            a Linear layer: nearby levels start with nearby embeddings).
        mask_zero: pixels whose value is 0 (in every channel) are padding: attention never
            reads them and pooling leaves them out. LRA's own encoder (``src_padding_mask =
            inputs > 0``) and the PyTorch LRA code of Nystromformer and Skyformer treat pixel
            ids so; on Pathfinder-32 about 89% of a picture is background 0.
    """

    max_len: int = 1024
    img_size: int | tuple[int, int] | None = None
    channels: str = "gray"
    rgb_embed: str = "sum"
    pixel_embed: str = "table"
    mask_zero: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("pixels", "channels", self.channels, PIXEL_CHANNELS)
        check_choice("pixels", "rgb_embed", self.rgb_embed, RGB_EMBEDS)
        check_choice("pixels", "pixel_embed", self.pixel_embed, PIXEL_EMBEDS)
        if self.pixel_embed == "linear" and self.rgb_embed != "sum":
            raise ValueError("pixels: rgb_embed applies to pixel_embed='table' only; with pixel_embed='linear' drop rgb_embed")
        if self.img_size is not None:
            self.img_size = as_pair("pixels", "img_size", self.img_size)


@register_adapter("pixels")
class PixelAdapter(SequenceAdapter):
    """Image -> one token per pixel: ``Embedding(256, dim)`` of the 8-bit value + positions.

    ``encode`` -> ``{"pixels": LongTensor[H*W] (gray) or [H*W, 3] (rgb), "mask": BoolTensor[H*W]}``.
    The 8-bit values are the adapter's token ids (``token_ids_key``, 256 levels per channel).
    """

    token_ids_key = "pixels"

    modality = "image"
    config_class = PixelAdapterConfig

    def __init__(self, config: PixelAdapterConfig) -> None:
        super().__init__(config)
        c = config
        n_channels = self.token_channels
        # standardisation statistics, learned by ``fit`` (plain attributes: preprocessing state, not weights)
        self.value_mean: list[float] | None = None
        self.value_std: list[float] | None = None
        if c.pixel_embed == "linear":
            self.embedding = nn.Linear(n_channels, c.dim)
            nn.init.trunc_normal_(self.embedding.weight, std=EMBED_INIT_STD)  # unit-variance input -> token scale of the positions
            nn.init.zeros_(self.embedding.bias)
        elif c.channels == "gray" or c.rgb_embed == "sum":
            n_tables = 1 if c.channels == "gray" else 3
            self.embedding = token_embedding(256 * n_tables, c.dim)
            self.register_buffer("table_offsets", torch.arange(n_tables) * 256, persistent=False)
        else:
            self.embedding = nn.Linear(3, c.dim)
        self.build_positions()

    @property
    def num_token_ids(self) -> int:
        """Levels of one pixel value (the token vocabulary per channel)."""
        return 256

    @property
    def token_channels(self) -> int:
        """Token ids per pixel: 1 (gray) or 3 (rgb)."""
        return 1 if self.config.channels == "gray" else 3

    def fit(self, inputs: Sequence[Any]) -> "PixelAdapter":
        """With ``pixel_embed="linear"``: per-channel mean and std of up to ``STATS_SAMPLE`` training images."""
        if self.config.pixel_embed != "linear":
            return self
        if len(inputs) == 0:
            raise ValueError("pixels: fit() needs training images to learn the value statistics of pixel_embed='linear'")
        step = max(1, len(inputs) // STATS_SAMPLE)
        values = torch.cat([self.encode(inputs[i])["pixels"].reshape(-1, self.token_channels)
                            for i in range(0, len(inputs), step)]).double()
        self.value_mean = values.mean(0).tolist()
        self.value_std = values.std(0).clamp_min(1.0).tolist()  # a constant channel must not divide by ~0
        return self

    def preprocessing_state(self) -> dict:
        return {} if self.value_mean is None else {"mean": self.value_mean, "std": self.value_std}

    def load_preprocessing_state(self, state: dict) -> None:
        if self.config.pixel_embed == "linear":
            if "mean" not in state or "std" not in state:
                raise ValueError("pixels: the saved preprocessing state has no value statistics, but pixel_embed='linear' needs them")
            self.value_mean, self.value_std = list(state["mean"]), list(state["std"])

    def encode(self, x: Any) -> dict[str, Tensor]:
        c = self.config
        rgb = image_array(x, 3, "pixels") if c.channels == "rgb" or _is_color(x) else image_array(x, 1, "pixels")
        if c.img_size is not None and rgb.shape[:2] != c.img_size:
            raise ValueError(f"pixels: expected images of size (H, W)={c.img_size}, got {rgb.shape[:2]}; resize them first")
        values = rgb if c.channels == "rgb" else (rgb_to_gray(rgb) if rgb.shape[-1] == 3 else rgb[..., 0])
        seq = torch.from_numpy(values.reshape(-1, *values.shape[2:]).astype(np.int64))
        keep = kept_length(seq.shape[0], c.max_len, c.truncation, owner="pixels", unit="pixels")
        seq = seq[:keep]
        if not c.mask_zero:
            return {"pixels": seq, "mask": torch.ones(keep, dtype=torch.bool)}
        mask = seq != 0 if seq.dim() == 1 else (seq != 0).any(-1)
        if not mask.any():
            raise ValueError("pixels: mask_zero=True leaves nothing of an image whose pixels are all 0; set mask_zero=False for such data")
        return {"pixels": seq, "mask": mask}

    def token_grid(self, n: int) -> tuple[int, int] | None:
        """The image grid when ``img_size`` is set and no pixel was truncated or padded, else ``None``."""
        size = self.config.img_size
        return size if size is not None and size[0] * size[1] == n else None

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        pixels = batch["pixels"]
        if self.config.pixel_embed == "linear":
            if self.value_mean is None or self.value_std is None:
                raise ValueError("pixels: pixel_embed='linear' standardises with statistics learned by fit(); call adapter.fit(train_images) first")
            values = pixels.float().reshape(*pixels.shape[:2], -1)  # [B, N, C]
            mean, std = (torch.tensor(v, device=values.device) for v in (self.value_mean, self.value_std))
            return self.embedding((values - mean) / std), batch["mask"]
        if isinstance(self.embedding, nn.Linear):
            return self.embedding(pixels.float() / 255), batch["mask"]
        if pixels.dim() == 2:
            return self.embedding(pixels), batch["mask"]
        return self.embedding(pixels + self.table_offsets).sum(-2), batch["mask"]


def _is_color(x: Any) -> bool:
    """True for inputs with 3 trailing channels (RGB arrays) or non-grayscale PIL images."""
    if isinstance(x, Image.Image):
        return x.mode not in ("L", "1", "I", "I;16", "F")
    shape = getattr(x, "shape", ())
    return len(shape) == 3 and shape[-1] == 3


__all__ = ["ImageAdapterConfig", "ImagePatchAdapter", "PixelAdapter", "PixelAdapterConfig", "image_array", "rgb_to_gray"]

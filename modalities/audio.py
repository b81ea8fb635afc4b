"""Audio adapter: ``(waveform, sample_rate)`` -> log-mel spectrogram -> frame or patch tokens.

The spectrogram is computed in ``encode`` (CPU, data-loader workers) and stored
normalized as ``features [frames, channels, n_mels]``; the accelerator only applies
SpecAugment (training only) and the trainable projection.

Frames: ``torchaudio.transforms.MelSpectrogram`` with ``center=True`` gives
``1 + T // hop_length`` frames for ``T`` samples (after resampling to ``sample_rate``).
``max_len`` counts tokens: frames in ``token="frame"`` mode, time x frequency patches
in ``token="patch"`` mode (patches are ordered time-major, so padding is at the end).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from modalities.base import register_adapter
from modalities.common import (
    EMBED_INIT_STD,
    SequenceAdapter,
    SequenceAdapterConfig,
    as_pair,
    check_choice,
    check_positive,
    kept_length,
    length_buckets,
    pad_batch,
    round_up,
)

NORMALIZATIONS = ("global", "utterance", "none")
AUDIO_TOKENS = ("frame", "patch")
_STD_FLOOR = 1e-5


@dataclass
class AudioAdapterConfig(SequenceAdapterConfig):
    """Audio adapter settings (plus ``dim, max_len, truncation, pad_to_multiple, pos_embed``).

    Attributes:
        sample_rate: rate the spectrogram is computed at.
        n_mels, n_fft, hop_length, win_length, f_min, f_max: ``MelSpectrogram`` settings.
        top_db: dynamic range kept by ``AmplitudeToDB`` (``None`` = unlimited).
        resample: resample inputs at another rate; if False such input is an error.
        mono: average channels to one; if False inputs must have exactly ``channels``.
        channels: channel count when ``mono=False``.
        normalize: ``"global"`` (per-mel-bin mean/std fitted on training audio),
            ``"utterance"`` (per clip and mel bin) or ``"none"``.
        fit_max_items: ``fit`` estimates global statistics from at most this many
            evenly spaced clips (``None`` = all).
        freq_mask, time_mask: SpecAugment widths (mel bins, frames); 0 disables.
        num_masks: how many frequency and time masks per example.
        token: ``"frame"`` (each frame -> Linear) or ``"patch"`` (Conv2d over
            ``patch_size = (mel bins, frames)`` patches, like AST).
        patch_size: ``(f, t)`` patch shape; ``n_mels`` must be divisible by ``f``.
    """

    max_len: int = 2048
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 400
    hop_length: int = 160
    win_length: int | None = None
    f_min: float = 0.0
    f_max: float | None = None
    top_db: float | None = 80.0
    resample: bool = True
    mono: bool = True
    channels: int = 1
    normalize: str = "global"
    fit_max_items: int | None = 2000
    freq_mask: int = 0
    time_mask: int = 0
    num_masks: int = 2
    token: str = "frame"
    patch_size: tuple[int, int] = (16, 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("audio", sample_rate=self.sample_rate, n_mels=self.n_mels, n_fft=self.n_fft, hop_length=self.hop_length, channels=self.channels)
        check_choice("audio", "normalize", self.normalize, NORMALIZATIONS)
        check_choice("audio", "token", self.token, AUDIO_TOKENS)
        self.patch_size = as_pair("audio", "patch_size", self.patch_size)
        if self.fit_max_items is not None:
            check_positive("audio", fit_max_items=self.fit_max_items)
        if self.mono and self.channels != 1:
            raise ValueError(f"audio: channels={self.channels} needs mono=False (mono=True mixes down to 1 channel)")
        if min(self.freq_mask, self.time_mask, self.num_masks) < 0:
            raise ValueError(f"audio: freq_mask, time_mask and num_masks must be >= 0, got {self.freq_mask}, {self.time_mask}, {self.num_masks}")
        if self.token == "patch":
            f, _ = self.patch_size
            if self.n_mels % f:
                raise ValueError(f"audio: n_mels={self.n_mels} is not divisible by the patch height {f}; pick patch_size[0] dividing n_mels")
            if self.max_len < self.n_mels // f:
                raise ValueError(f"audio: max_len={self.max_len} is below one time step of patches ({self.n_mels // f} tokens); raise max_len")


def _evenly_spaced(n: int, k: int | None) -> list[int]:
    """``k`` indices spread evenly over ``range(n)`` (all of them when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})


class LogMelSpectrogram:
    """``waveform [C, T] at config.sample_rate -> log-mel [frames, C, n_mels]`` (dB).

    A plain object (not an ``nn.Module``) so moving the adapter to an accelerator leaves
    feature extraction on the CPU of the data-loader workers.
    """

    def __init__(self, config: AudioAdapterConfig) -> None:
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            win_length=config.win_length,
            hop_length=config.hop_length,
            f_min=config.f_min,
            f_max=config.f_max,
            n_mels=config.n_mels,
        )
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=config.top_db)
        self.min_samples = config.n_fft // 2 + 1  # reflect padding of the centred STFT needs more than n_fft // 2

    def __call__(self, waveform: Tensor) -> Tensor:
        with torch.no_grad():
            return self.to_db(self.mel(waveform)).permute(2, 0, 1).contiguous()


@register_adapter("audio")
class AudioAdapter(SequenceAdapter):
    """``(waveform, sample_rate)`` -> log-mel -> tokens ``[B, N, dim]``.

    ``encode`` -> ``{"features": [frames, C, n_mels], "mask": [frames]}``. ``collate`` pads
    frames (to a multiple that keeps the token count a multiple of ``pad_to_multiple``);
    in patch mode it returns the per-token ``"mask"`` and the per-frame ``"frame_mask"``.
    ``forward`` -> ``(tokens, mask)``; SpecAugment (masked values become 0, the mean
    under normalization) runs only in training mode. Positions: ``pos_embed`` over time
    steps, plus in patch mode a learned frequency-band embedding.
    """

    modality = "audio"
    config_class = AudioAdapterConfig

    def __init__(self, config: AudioAdapterConfig) -> None:
        super().__init__(config)
        import torchaudio

        c = config
        self.featurizer = LogMelSpectrogram(c)
        self._resamplers: dict[int, nn.Module] = {}
        self.mean: Tensor | None = None  # [n_mels] global statistics (float32, CPU), set by fit
        self.std: Tensor | None = None
        self.spec_augment = nn.Sequential(
            *[torchaudio.transforms.FrequencyMasking(c.freq_mask, iid_masks=True) for _ in range(c.num_masks if c.freq_mask else 0)],
            *[torchaudio.transforms.TimeMasking(c.time_mask, iid_masks=True) for _ in range(c.num_masks if c.time_mask else 0)],
        )
        self.freq_embed: nn.Parameter | None = None  # learned per-band embedding (patch mode with positions)
        if c.token == "frame":
            self.proj = nn.Linear(c.channels * c.n_mels, c.dim)
        else:
            from timm.layers import PatchEmbed

            self.proj = PatchEmbed(
                img_size=None, patch_size=c.patch_size, in_chans=c.channels, embed_dim=c.dim, output_fmt="NHWC", strict_img_size=False
            )
            if c.pos_embed != "none":
                self.freq_embed = nn.Parameter(torch.empty(self.tokens_per_step, c.dim))
                nn.init.trunc_normal_(self.freq_embed, std=EMBED_INIT_STD)  # the positions' scale
        self.build_positions()

    # -- token geometry -------------------------------------------------------------
    @property
    def tokens_per_step(self) -> int:
        """Tokens per time step: 1 frame, or ``n_mels / f`` frequency bands per patch column."""
        return 1 if self.config.token == "frame" else self.config.n_mels // self.config.patch_size[0]

    @property
    def frames_per_step(self) -> int:
        return 1 if self.config.token == "frame" else self.config.patch_size[1]

    def _step_multiple(self) -> int:
        """Time steps per batch must be a multiple of this so tokens divide by ``pad_to_multiple``."""
        m = self.config.pad_to_multiple
        return m // math.gcd(m, self.tokens_per_step)

    def max_positions(self) -> int:
        return round_up(self.config.max_len // self.tokens_per_step, self._step_multiple())

    def num_frames(self, num_samples: int) -> int:
        """Spectrogram frames of ``num_samples`` samples at ``sample_rate`` (centred STFT)."""
        return 1 + num_samples // self.config.hop_length

    def num_tokens(self, x: tuple[np.ndarray, int]) -> int:
        frames = self.encode(x)["mask"].shape[0]
        return math.ceil(frames / self.frames_per_step) * self.tokens_per_step

    # -- preprocessing (CPU) ------------------------------------------------------------
    def _waveform(self, x: tuple[np.ndarray, int]) -> Tensor:
        """Validate ``(waveform, sample_rate)`` -> float32 ``[C, T]`` at ``config.sample_rate``."""
        c = self.config
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(f"audio: expected a (waveform, sample_rate) pair, got {type(x).__name__}")
        wave, rate = x
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
            raise ValueError(f"audio: sample_rate must be a positive integer, got {rate!r}")
        wave = wave.numpy(force=True) if isinstance(wave, Tensor) else wave
        if not isinstance(wave, np.ndarray) or not np.issubdtype(wave.dtype, np.floating):
            kind = wave.dtype if isinstance(wave, np.ndarray) else type(wave).__name__
            raise ValueError(f"audio: waveform must be a float array (samples in [-1, 1]), got {kind}; read files with soundfile.read(path, dtype='float32')")
        if wave.ndim not in (1, 2):
            raise ValueError(f"audio: waveform must have shape [T] or [C, T], got {wave.shape}")
        wave = wave[None] if wave.ndim == 1 else wave
        if wave.shape[1] == 0 or wave.shape[0] == 0:
            raise ValueError(f"audio: waveform is empty (shape {wave.shape}); drop zero-length clips")
        if wave.shape[0] > wave.shape[1]:
            raise ValueError(f"audio: waveform shape {wave.shape} looks like [T, C] (soundfile's layout); pass it transposed as [C, T]")
        bad = ~np.isfinite(wave)
        if bad.any():
            what = "is all NaN/inf" if bad.all() else f"has {int(bad.sum())} NaN/inf samples of {wave.size}"
            raise ValueError(f"audio: waveform {what}; the file is corrupt, drop or repair it")
        if c.mono:
            wave = wave.mean(axis=0, keepdims=True)
        elif wave.shape[0] != c.channels:
            raise ValueError(f"audio: waveform has {wave.shape[0]} channels but channels={c.channels}; set channels or mono=True")
        wave = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
        if rate != c.sample_rate:
            if not c.resample:
                raise ValueError(f"audio: waveform is at {rate} Hz but the adapter expects {c.sample_rate} Hz; set resample=True or resample the data")
            wave = self._resampler(int(rate))(wave)
        if wave.shape[1] < self.featurizer.min_samples:
            raise ValueError(
                f"audio: waveform has {wave.shape[1]} samples at {c.sample_rate} Hz, fewer than the "
                f"{self.featurizer.min_samples} one STFT frame needs (n_fft={c.n_fft}); pad or drop the clip"
            )
        return wave

    def _resampler(self, rate: int) -> nn.Module:
        if rate not in self._resamplers:
            import torchaudio

            self._resamplers[rate] = torchaudio.transforms.Resample(rate, self.config.sample_rate)
        return self._resamplers[rate]

    def log_mel(self, x: tuple[np.ndarray, int]) -> Tensor:
        """Un-normalized log-mel ``[frames, C, n_mels]`` (dB) of one ``(waveform, sample_rate)``."""
        return self.featurizer(self._waveform(x))

    def fit(self, inputs: Sequence[tuple[np.ndarray, int]]) -> "AudioAdapter":
        """Estimate per-mel-bin mean/std over training clips (``normalize="global"`` only)."""
        if self.config.normalize != "global":
            return self
        if len(inputs) == 0:
            raise ValueError("audio: fit() needs at least one training clip for global normalization")
        total = torch.zeros(self.config.n_mels, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        count = 0
        for i in _evenly_spaced(len(inputs), self.config.fit_max_items):
            spec = self.log_mel(inputs[i]).double().flatten(0, 1)
            total += spec.sum(0)
            total_sq += spec.square().sum(0)
            count += spec.shape[0]
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(0).sqrt().clamp_min(_STD_FLOOR)
        self.mean, self.std = mean.float(), std.float()
        return self

    def encode(self, x: tuple[np.ndarray, int]) -> dict[str, Tensor]:
        c = self.config
        spec = self.log_mel(x)
        if c.normalize == "global":
            if self.mean is None:
                raise ValueError("audio: normalize='global' needs statistics; call fit(train_audio) or load_preprocessing_state(state) first")
            spec = (spec - self.mean) / self.std
        elif c.normalize == "utterance":
            flat = spec.flatten(0, 1)
            spec = (spec - flat.mean(0)) / flat.std(0, correction=0).clamp_min(_STD_FLOOR)
        steps = math.ceil(spec.shape[0] / self.frames_per_step)
        keep = kept_length(steps * self.tokens_per_step, c.max_len, c.truncation, owner="audio")
        spec = spec[: keep // self.tokens_per_step * self.frames_per_step]
        return {"features": spec.contiguous(), "mask": torch.ones(spec.shape[0], dtype=torch.bool)}

    def bucket_lengths(self, count: int) -> tuple[int, ...]:
        """Frame counts (``collate`` pads frames): ``length_buckets`` over the longest padded batch's frames."""
        multiple = self.frames_per_step * self._step_multiple()
        return length_buckets(self.max_positions() * self.frames_per_step, multiple, count)

    def collate(self, items: list[dict[str, Tensor]], buckets: Sequence[int] | None = None) -> dict[str, Tensor]:
        batch = pad_batch(items, self.frames_per_step * self._step_multiple(), owner="audio", buckets=buckets)
        if self.config.token == "patch":
            frame_mask = batch["mask"]
            batch["frame_mask"] = frame_mask
            batch["mask"] = self._patch_mask(frame_mask)
        return batch

    def _patch_mask(self, frame_mask: Tensor) -> Tensor:
        """Per-frame ``[B, frames]`` -> per-token ``[B, steps * bands]`` (a patch is real if any frame is)."""
        b = frame_mask.shape[0]
        steps = frame_mask.view(b, -1, self.frames_per_step).any(-1)
        return steps.repeat_interleave(self.tokens_per_step, dim=1)

    # -- trainable embedding ------------------------------------------------------------
    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        spec = batch["features"]  # [B, frames, C, n_mels]
        if spec.dim() != 4 or spec.shape[2:] != (self.config.channels, self.config.n_mels):
            raise ValueError(f"audio: features must be [B, frames, {self.config.channels}, {self.config.n_mels}], got {tuple(spec.shape)}")
        image = spec.permute(0, 2, 3, 1)  # [B, C, n_mels, frames]: torchaudio's (..., freq, time)
        if self.training and len(self.spec_augment):
            image = self.spec_augment(image)
        if self.config.token == "frame":
            tokens = self.proj(image.flatten(1, 2).transpose(1, 2))
        else:
            tokens = self.proj(image).transpose(1, 2).flatten(1, 2)  # [B, F', T', D] -> time-major [B, T' F', D]
        return tokens, batch["mask"]

    def positions(self, n: int) -> Tensor | None:
        """Time position of each token's step, plus its frequency band's embedding in patch mode."""
        time = self.pos_embed.positions(n // self.tokens_per_step)
        if self.freq_embed is None:
            return time
        return (time[:, None, :] + self.freq_embed[None]).flatten(0, 1)

    # -- state ----------------------------------------------------------------------------
    def preprocessing_state(self) -> dict:
        if self.config.normalize != "global":
            return {}
        if self.mean is None:
            raise ValueError("audio: nothing to save, global statistics are not fitted; call fit(train_audio) first")
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_preprocessing_state(self, state: dict) -> None:
        if self.config.normalize != "global":
            return
        for key in ("mean", "std"):
            if len(state.get(key) or []) != self.config.n_mels:
                raise ValueError(f"audio: state {key!r} must list {self.config.n_mels} values (one per mel bin), got {state.get(key)!r}")
        self.mean, self.std = (torch.tensor(state[key], dtype=torch.float32) for key in ("mean", "std"))

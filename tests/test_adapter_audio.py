"""Audio adapter on real speech (FSDD, 8 kHz wavs resampled to 16 kHz)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from maelre.registry import create_backbone
from modalities import create_adapter

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


@pytest.fixture(scope="module")
def clips(shared_data):
    """12 real clips (2 per speaker, different digits) as (float32 waveform, 8000)."""
    folder = shared_data / "fsdd" / "recordings"
    out = []
    for i, speaker in enumerate(SPEAKERS):
        for digit, index in ((i, 7), ((i + 5) % 10, 30)):
            wave, rate = sf.read(folder / f"{digit}_{speaker}_{index}.wav", dtype="float32")
            out.append((wave, rate))
    assert all(rate == 8000 and wave.ndim == 1 for wave, rate in out)
    return out


def audio(**kw):
    return create_adapter("audio", **{"dim": 16, "n_mels": 32, "normalize": "none", **kw})


def reference_log_mel(wave16k: np.ndarray, n_mels: int = 32, top_db: float = 80.0) -> torch.Tensor:
    """Log-mel from ``torch.stft`` + mel filterbank, independent of ``MelSpectrogram``: [frames, n_mels]."""
    x = torch.from_numpy(wave16k)
    spec = torch.stft(x, n_fft=400, hop_length=160, window=torch.hann_window(400), center=True, pad_mode="reflect", return_complex=True)
    fb = torchaudio.functional.melscale_fbanks(201, 0.0, 8000.0, n_mels, 16000)
    mel = (spec.abs() ** 2).T @ fb
    db = 10 * torch.log10(mel.clamp_min(1e-10))
    return db.clamp_min(db.max() - top_db)


def test_frames_follow_the_centred_stft_formula_after_resampling(clips):
    a = audio()
    for wave, rate in clips:
        out = a.encode((wave, rate))
        samples_16k = math.ceil(len(wave) * 16000 / rate)
        assert out["features"].shape == (1 + samples_16k // 160, 1, 32)
        assert out["mask"].all() and a.num_frames(samples_16k) == out["features"].shape[0]
        assert a.num_tokens((wave, rate)) == out["features"].shape[0]


def test_log_mel_matches_an_independent_reference(clips):
    a = audio()
    wave, rate = clips[0]
    resampled = torchaudio.functional.resample(torch.from_numpy(wave), rate, 16000).numpy()
    ours = a.encode((wave, rate))["features"][:, 0]
    torch.testing.assert_close(ours, reference_log_mel(resampled), atol=5e-3, rtol=1e-4)
    # already-16 kHz input is not resampled again
    torch.testing.assert_close(a.encode((resampled, 16000))["features"], a.encode((wave, rate))["features"], atol=5e-3, rtol=1e-4)


def test_global_normalization_is_fitted_and_round_trips(clips):
    train, test = clips[:8], clips[8:]
    a = audio(normalize="global", fit_max_items=None)
    with pytest.raises(ValueError, match="call fit"):
        a.encode(train[0])
    a.fit(train)
    feats = torch.cat([a.encode(c)["features"][:, 0] for c in train])
    torch.testing.assert_close(feats.mean(0), torch.zeros(32), atol=1e-4, rtol=0)
    torch.testing.assert_close(feats.std(0, correction=0), torch.ones(32), atol=1e-3, rtol=0)
    state = json.loads(json.dumps(a.preprocessing_state()))
    b = audio(normalize="global")
    b.load_preprocessing_state(state)
    for c in test:
        assert torch.equal(a.encode(c)["features"], b.encode(c)["features"])
    with pytest.raises(ValueError, match="32 values"):
        b.load_preprocessing_state({"mean": [0.0] * 3, "std": [1.0] * 3})
    # fit_max_items subsamples evenly, so statistics come from a subset
    sub = audio(normalize="global", fit_max_items=2).fit(train)
    assert not torch.allclose(sub.mean, a.mean)


def test_utterance_normalization(clips):
    feats = audio(normalize="utterance").encode(clips[3])["features"][:, 0]
    torch.testing.assert_close(feats.mean(0), torch.zeros(32), atol=1e-4, rtol=0)


def test_spec_augment_only_in_training(clips):
    a = audio(freq_mask=8, time_mask=10, num_masks=2)
    plain = audio()
    plain.load_state_dict(a.state_dict())
    batch = a.collate([a.encode(c) for c in clips[:4]])
    a.eval()
    eval_out = a(batch)[0]
    torch.testing.assert_close(eval_out, a(batch)[0])
    torch.testing.assert_close(eval_out, plain(batch)[0])
    a.train()
    train_out = a(batch)[0]
    changed = (train_out - eval_out).abs().amax(-1) > 1e-6
    assert changed.any() and not changed.all()
    plain.train()  # no masks configured: training changes nothing
    torch.testing.assert_close(plain(batch)[0], eval_out)


def test_frame_tokens_match_linear_reference(clips):
    a = audio(pad_to_multiple=8)
    items = [a.encode(c) for c in clips[:3]]
    batch = a.collate(items)
    frames = [it["features"].shape[0] for it in items]
    assert batch["features"].shape[1] == -(-max(frames) // 8) * 8
    assert batch["mask"].sum(1).tolist() == frames
    tokens, mask = a(batch)
    n = tokens.shape[1]
    reference = batch["features"].flatten(2) @ a.proj.weight.T + a.proj.bias + a.pos_embed.table[:n]
    torch.testing.assert_close(tokens, reference * mask[..., None])
    assert tokens.shape == (3, n, 16) and tokens.dtype == torch.float32 and torch.equal(mask, batch["mask"])


def test_patch_tokens_match_reference_and_mask(clips):
    f, t = 8, 4
    a = audio(token="patch", patch_size=(f, t), pad_to_multiple=3)
    items = [a.encode(c) for c in clips[:3]]
    batch = a.collate(items)
    tokens, mask = a(batch)
    bands = 32 // f
    assert torch.equal(mask, batch["mask"]) and tokens.shape[1] % 3 == 0
    for row, item in enumerate(items):
        steps = -(-item["features"].shape[0] // t)
        assert int(mask[row].sum()) == steps * bands == a.num_tokens(clips[row])
        assert mask[row, : steps * bands].all() and not mask[row, steps * bands :].any()
    spec = batch["features"][:, :, 0].transpose(1, 2)  # [B, n_mels, frames]
    weight = a.proj.proj.weight.reshape(16, f * t)
    time_pos = a.pos_embed.table
    for step, band in ((0, 0), (2, 3), (5, 1)):
        patch = spec[:, band * f : (band + 1) * f, step * t : (step + 1) * t].reshape(3, -1)
        expected = patch @ weight.T + a.proj.proj.bias + time_pos[step] + a.freq_embed[band]
        torch.testing.assert_close(tokens[:, step * bands + band], expected)
    assert (tokens[~mask] == 0).all()


def test_truncation_counts_tokens(clips):
    wave, rate = clips[0]
    assert audio(max_len=20).encode((wave, rate))["features"].shape[0] == 20
    with pytest.raises(ValueError, match="longer than max_len=20"):
        audio(max_len=20, truncation=False).encode((wave, rate))
    patch = audio(token="patch", patch_size=(8, 4), max_len=10)  # 4 bands -> 2 time steps -> 8 tokens
    assert patch.encode((wave, rate))["features"].shape[0] == 8 and patch.num_tokens((wave, rate)) == 8


def test_channels_mono_mixdown_and_multichannel(clips):
    wave, rate = clips[1]
    stereo = np.stack([wave, 0.5 * wave])
    mono = audio().encode((stereo, rate))["features"]
    torch.testing.assert_close(mono, audio().encode((0.75 * wave, rate))["features"])
    multi = audio(mono=False, channels=2)
    out = multi.encode((stereo, rate))
    assert out["features"].shape[1:] == (2, 32)
    assert multi(multi.collate([out]))[0].shape[-1] == 16
    with pytest.raises(ValueError, match="1 channels but channels=2"):
        multi.encode((wave, rate))
    with pytest.raises(ValueError, match="needs mono=False"):
        audio(channels=2)


def test_rate_mismatch_without_resampling_names_both_rates(clips):
    with pytest.raises(ValueError, match="8000 Hz.*16000 Hz"):
        audio(resample=False).encode(clips[0])


def test_bad_waveforms(clips, tmp_path):
    a = audio()
    wave, rate = clips[0]
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 8000, subtype="FLOAT")
    corrupt = tmp_path / "nan.wav"
    sf.write(corrupt, np.full(800, np.nan, dtype=np.float32), 8000, subtype="FLOAT")
    with pytest.raises(ValueError, match="empty"):
        a.encode(sf.read(empty, dtype="float32"))
    with pytest.raises(ValueError, match="all NaN"):
        a.encode(sf.read(corrupt, dtype="float32"))
    partial = wave.copy()
    partial[10:20] = np.nan
    cases = [
        ((partial, rate), "10 NaN/inf samples"),
        (((wave * 32767).astype(np.int16), rate), "float array"),
        ((wave[None, None], rate), r"shape \[T\] or \[C, T\]"),
        ((np.stack([wave, wave], axis=1), rate), r"looks like \[T, C\]"),
        ((wave, 0), "positive integer"),
        ((wave, -8000), "positive integer"),
        ((wave, 8000.0), "positive integer"),
        ((wave[:50], rate), "fewer than the 201"),
        (wave, r"\(waveform, sample_rate\) pair"),
    ]
    for x, message in cases:
        with pytest.raises(ValueError, match=message):
            a.encode(x)


def test_config_errors():
    with pytest.raises(ValueError, match="not divisible by the patch height"):
        audio(token="patch", patch_size=(5, 4))
    with pytest.raises(ValueError, match="token must be one of"):
        audio(token="wave")
    with pytest.raises(ValueError, match="normalize must be one of"):
        audio(normalize="batch")


def test_gradients_reach_the_projection_and_backbone_accepts_tokens(clips):
    for a in (audio(), audio(token="patch", patch_size=(8, 4), pad_to_multiple=4)):
        tokens, mask = a(a.collate([a.encode(c) for c in clips[:3]]))
        pooled = create_backbone("transformer", dim=16, depth=1, heads=2)(tokens, mask)
        pooled.sum().backward()
        params = dict(a.named_parameters())
        proj = next(p for name, p in params.items() if name.endswith("weight"))
        assert proj.grad is not None and proj.grad.abs().sum() > 0
        assert a.pos_embed.table.grad.abs().sum() > 0

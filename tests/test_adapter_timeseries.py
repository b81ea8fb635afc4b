"""Time-series adapter on sktime's bundled UEA data (JapaneseVowels: variable length, 12
channels; BasicMotions: 6 x 100) plus hand-made NaN cases."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from maelre.registry import create_backbone
from modalities import create_adapter
from modalities.timeseries import to_series_list


@pytest.fixture(scope="module")
def vowels():
    from sktime.datasets import load_japanese_vowels

    X_train, _ = load_japanese_vowels(split="train", return_X_y=True)
    X_test, _ = load_japanese_vowels(split="test", return_X_y=True)
    return X_train, X_test


@pytest.fixture(scope="module")
def vowel_series(vowels):
    """JapaneseVowels train/test as lists of [12, T] arrays (converted once)."""
    return tuple(to_series_list(x) for x in vowels)


@pytest.fixture(scope="module")
def motions():
    from sktime.datasets import load_basic_motions

    X, _ = load_basic_motions(split="train", return_X_y=True, return_type="numpy3D")
    return X


def ts(**kw):
    return create_adapter("timeseries", **{"dim": 16, **kw})


# -- panel conversion ---------------------------------------------------------------------
def test_to_series_list_nested_univ_variable_length(vowels):
    X_train, _ = vowels
    series = to_series_list(X_train)
    assert len(series) == len(X_train)
    lengths = {s.shape[1] for s in series}
    assert len(lengths) > 1  # JapaneseVowels is unequal length
    for i in (0, 1, 100, 269):
        assert series[i].shape == (12, len(X_train.iloc[i, 0]))
        for c in (0, 5, 11):
            np.testing.assert_array_equal(series[i][c], X_train.iloc[i, c].to_numpy())


def test_to_series_list_other_formats(motions, vowels):
    from sktime.datatypes import convert_to

    from_numpy = to_series_list(motions)
    assert len(from_numpy) == 40 and all(s.shape == (6, 100) for s in from_numpy)
    np.testing.assert_array_equal(from_numpy[3], motions[3])
    multi = convert_to(vowels[0].iloc[:5], to_type="pd-multiindex")
    for a, b in zip(to_series_list(multi), to_series_list(vowels[0].iloc[:5])):
        np.testing.assert_array_equal(a, b)
    listed = to_series_list([np.arange(5.0), np.ones((2, 3)), torch.zeros(4)])
    assert [s.shape for s in listed] == [(1, 5), (2, 3), (1, 4)]
    assert [s.shape for s in to_series_list(np.zeros((3, 7)))] == [(1, 7)] * 3
    with pytest.raises(ValueError, match="not a recognised panel"):
        to_series_list(pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(ValueError, match=r"\[n, C, T\]"):
        to_series_list(np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="real-valued"):
        to_series_list([np.array(["a", "b"])])


# -- normalization ------------------------------------------------------------------------
def test_global_normalization_uses_train_statistics_only(vowels, vowel_series):
    train, test = vowel_series
    a = ts().fit(vowels[0])  # fit takes the sktime DataFrame directly
    values = np.concatenate(train, axis=1)
    np.testing.assert_allclose(a.mean, values.mean(axis=1))
    np.testing.assert_allclose(a.std, values.std(axis=1))
    test_mean = np.concatenate(test, axis=1).mean(axis=1)
    assert not np.allclose(a.mean, test_mean)
    out = a.encode(test[7])
    expected = (test[7] - a.mean[:, None]) / a.std[:, None]
    np.testing.assert_allclose(out["values"].numpy(), expected.T, rtol=1e-5, atol=1e-5)
    encoded = torch.cat([a.encode(s)["values"] for s in train])
    torch.testing.assert_close(encoded.mean(0), torch.zeros(12), atol=1e-4, rtol=0)


def test_state_json_round_trip(vowel_series):
    a = ts(token="patch", patch_len=4).fit(vowel_series[0])
    state = json.loads(json.dumps(a.preprocessing_state()))
    b = ts(token="patch", patch_len=4)
    with pytest.raises(ValueError, match="fit"):
        b.encode(np.ones((12, 5)))
    b.load_preprocessing_state(state)
    b.load_state_dict(a.state_dict())
    series = vowel_series[1][:5]
    batch_a = a.collate([a.encode(s) for s in series])
    batch_b = b.collate([b.encode(s) for s in series])
    assert all(torch.equal(batch_a[k], batch_b[k]) for k in batch_a)
    torch.testing.assert_close(a(batch_a)[0], b(batch_b)[0])
    with pytest.raises(ValueError, match="12 values"):
        ts().load_preprocessing_state({"channels": 12, "mean": [0.0], "std": [1.0]})


def test_instance_and_no_normalization(motions):
    a = ts(normalize="instance").fit(motions)
    values = a.encode(motions[0])["values"].numpy()
    np.testing.assert_allclose(values.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(values.std(0), 1, atol=1e-4)
    raw = ts(normalize="none").fit(motions)
    np.testing.assert_allclose(raw.encode(motions[0])["values"].numpy(), motions[0].T, rtol=1e-6)
    assert raw.preprocessing_state() == {"channels": 6}



def test_scale_channels_keep_amplitude_beside_instance_normalization(motions):
    a = ts(normalize="instance", scale_channels=True, max_len=100).fit(motions)
    x = motions[0]
    small, big = a.encode(x * 1e-4), a.encode(x * 1e2)
    assert small["values"].shape == (100, 6) and small["scale"].shape == (12,)  # one scale entry per sample, not per step
    np.testing.assert_allclose(small["values"].numpy(), big["values"].numpy(), atol=1e-4)  # the shape channels ignore scale
    assert (big["scale"][:6] > small["scale"][:6]).all()  # log std grows
    b = ts(normalize="instance", scale_channels=True, max_len=100)
    b.load_preprocessing_state(json.loads(json.dumps(a.preprocessing_state())))
    np.testing.assert_allclose(b.encode(x)["scale"].numpy(), a.encode(x)["scale"].numpy())
    batch = a.collate([a.encode(x), a.encode(x[:, :50] * 1e2)])
    assert batch["values"].shape == (2, 100, 6) and batch["scale"].shape == (2, 12)
    tokens, mask = a(batch)
    assert tokens.shape == (2, 100, 16) and mask.sum(1).tolist() == [100, 50]
    with pytest.raises(ValueError, match="'scale' entry"):
        a({key: value for key, value in batch.items() if key != "scale"})
    with pytest.raises(ValueError, match="needs normalize='instance'"):
        ts(scale_channels=True)


def test_constant_channel_is_only_centred():
    series = [np.stack([np.arange(6.0), np.full(6, 3.0)]) for _ in range(3)]
    a = ts().fit(series)
    assert a.std[1] == 1.0
    np.testing.assert_allclose(a.encode(series[0])["values"][:, 1].numpy(), 0.0)


# -- NaN policies -------------------------------------------------------------------------
@pytest.fixture()
def gappy():
    x = np.array(
        [
            [np.nan, 1.0, 2.0, np.nan, 4.0, 5.0, np.nan, np.nan],
            [0.0, np.nan, 2.0, np.nan, 4.0, 5.0, np.nan, np.nan],
        ]
    )
    return x  # step 3 is all NaN (interior), steps 6-7 all NaN (trailing)


def test_nan_raise(gappy):
    with pytest.raises(ValueError, match="8 NaN values of 16.*nan_policy"):
        ts(normalize="none", channels=2).encode(gappy)


def test_nan_zero(gappy):
    out = ts(normalize="none", channels=2, nan_policy="zero").encode(gappy)
    np.testing.assert_array_equal(out["values"].numpy(), np.nan_to_num(gappy).T)
    assert out["mask"].all() and out["mask"].shape == (8,)


def test_nan_interpolate(gappy):
    out = ts(normalize="none", channels=2, nan_policy="interpolate").encode(gappy)["values"].numpy().T
    np.testing.assert_allclose(out[0], [1, 1, 2, 3, 4, 5, 5, 5])  # edges: nearest value
    np.testing.assert_allclose(out[1], [0, 1, 2, 3, 4, 5, 5, 5])


def test_nan_mask(gappy):
    out = ts(normalize="none", channels=2, nan_policy="mask").encode(gappy)
    assert out["mask"].tolist() == [True, True, True, False, True, True]  # trailing NaN steps dropped
    np.testing.assert_array_equal(out["values"].numpy(), np.nan_to_num(gappy[:, :6]).T)
    patches = ts(normalize="none", channels=2, nan_policy="mask", token="patch", patch_len=2).encode(
        np.array([[np.nan, np.nan, 1.0, 2.0, np.nan]] * 2)
    )
    assert patches["mask"].tolist() == [False, True]  # first patch all NaN, trailing step dropped


@pytest.mark.parametrize("policy", ["raise", "zero", "interpolate", "mask"])
def test_all_nan_series_is_an_error(policy):
    with pytest.raises(ValueError, match="entirely NaN"):
        ts(normalize="instance", channels=3, nan_policy=policy).encode(np.full((3, 10), np.nan))


def test_all_nan_channel_under_instance_normalization():
    x = np.stack([np.arange(5.0), np.full(5, np.nan)])
    out = ts(normalize="instance", channels=2, nan_policy="interpolate").encode(x)["values"].numpy()
    np.testing.assert_allclose(out[:, 1], 0.0)
    assert np.isfinite(out).all()


def test_fit_ignores_nan():
    series = [np.array([[1.0, np.nan, 3.0]]), np.array([[np.nan, 5.0]])]
    a = ts().fit(series)
    np.testing.assert_allclose(a.mean, [3.0])
    np.testing.assert_allclose(a.std, [np.std([1.0, 3.0, 5.0])])
    with pytest.raises(ValueError, match=r"channels \[1\] are NaN in every"):
        ts().fit([np.array([[1.0, 2.0], [np.nan, np.nan]])])


# -- shapes, tokens, errors ---------------------------------------------------------------
def test_channel_checks(motions):
    a = ts().fit(motions)
    with pytest.raises(ValueError, match="3 channels but the adapter was fitted on 6"):
        a.encode(motions[0][:3])
    with pytest.raises(ValueError, match="transposed"):
        a.encode(motions[0].T)
    with pytest.raises(ValueError, match="different channel counts"):
        ts().fit([np.ones((2, 5)), np.ones((3, 5))])
    with pytest.raises(ValueError, match="set up for 4 channels, got 6"):
        ts(channels=4).fit(motions)
    with pytest.raises(ValueError, match="inf"):
        a.encode(np.full((6, 4), np.inf))
    with pytest.raises(ValueError, match="no time steps"):
        a.encode(np.ones((6, 0)))
    with pytest.raises(ValueError, match=r"\[T\] or \[C, T\]"):
        a.encode(motions[:2])
    univariate = ts().fit([s[0] for s in motions])
    assert univariate.channels == 1 and univariate.encode(motions[0][0])["values"].shape == (100, 1)


def test_projection_before_fit_is_a_clear_error():
    a = ts()
    with pytest.raises(ValueError, match="channel count unknown"):
        a.encode(np.ones((2, 4)))
    with pytest.raises(ValueError, match="projection is not built"):
        a({"values": torch.ones(1, 4, 2), "mask": torch.ones(1, 4, dtype=torch.bool)})


@pytest.mark.parametrize("patch_len,stride", [(16, None), (10, 5)])
def test_patch_tokens_match_reference(motions, patch_len, stride):
    a = ts(normalize="none", token="patch", patch_len=patch_len, patch_stride=stride).fit(motions)
    step = stride or patch_len
    x = motions[5][:, :93]  # 93 steps: the last patch is partial
    out = a.encode(x)
    n = -(-(93 - patch_len) // step) + 1
    assert out["values"].shape == (n, 6 * patch_len) and out["mask"].all()
    for i in range(n):
        ref = np.zeros((6, patch_len))
        chunk = x[:, i * step : i * step + patch_len]
        ref[:, : chunk.shape[1]] = chunk
        np.testing.assert_allclose(out["values"][i].numpy(), ref.reshape(-1), rtol=1e-6)


def test_truncation(motions):
    a = ts(max_len=30).fit(motions)
    assert a.encode(motions[0])["values"].shape == (30, 6)
    with pytest.raises(ValueError, match="100 tokens long, longer than max_len=30"):
        ts(max_len=30, truncation=False).fit(motions).encode(motions[0])
    patch = ts(max_len=3, token="patch", patch_len=8, normalize="none").fit(motions)
    out = patch.encode(motions[0])
    assert out["values"].shape == (3, 48)
    np.testing.assert_allclose(out["values"][2].numpy(), motions[0][:, 16:24].reshape(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="13 patches long"):
        ts(max_len=3, token="patch", patch_len=8, truncation=False).fit(motions).encode(motions[0])


@pytest.mark.parametrize("token", ["point", "patch"])
def test_forward_collate_gradients_and_backbone(vowel_series, token):
    a = ts(token=token, patch_len=4, pad_to_multiple=4, nan_policy="mask").fit(vowel_series[0])
    series = vowel_series[1][:4]
    items = [a.encode(s) for s in series]
    batch = a.collate(items)
    assert batch["values"].shape[1] % 4 == 0
    assert batch["mask"].sum(1).tolist() == [len(it["mask"]) for it in items]
    tokens, mask = a(batch)
    n = tokens.shape[1]
    assert tokens.shape == (4, n, 16) and tokens.dtype == torch.float32 and torch.equal(mask, batch["mask"])
    reference = (batch["values"] @ a.proj.weight.T + a.proj.bias + a.pos_embed.table[:n]) * mask[..., None]
    torch.testing.assert_close(tokens, reference)
    pooled = create_backbone("transformer", dim=16, depth=1, heads=2)(tokens, mask)
    pooled.sum().backward()
    assert a.proj.weight.grad.abs().sum() > 0 and a.pos_embed.table.grad.abs().sum() > 0


def test_config_errors():
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        ts(nan_policy="drop")
    with pytest.raises(ValueError, match="patch_len must be a positive"):
        ts(token="patch", patch_len=0)
    with pytest.raises(ValueError, match="channels must be a positive"):
        ts(channels=0)


# -- convolutional stem and augmentation ----------------------------------------------------
CHEAP_STEM = {"stem_kernels": (9, 9, 9), "stem_dilations": (1, 2, 4), "stem_pool": "bottleneck"}
#: the estimator's stem since round 5: batch norm, one step-level module, two at token resolution
TOKEN_STEM = {"stem_kernels": (9, 9, 9), "stem_dilations": (1, 2, 4), "stem_norm": "batch", "stem_token_layers": 2}


@pytest.mark.parametrize(
    ("token", "stem"),
    [
        ({"token": "point"}, {}), ({"token": "patch", "patch_len": 4}, {}), ({"token": "point"}, CHEAP_STEM),
        ({"token": "patch", "patch_len": 4}, CHEAP_STEM), ({"token": "point"}, TOKEN_STEM), ({"token": "patch", "patch_len": 4}, TOKEN_STEM),
    ],
)
def test_conv_stem_shapes_masks_and_gradients(token, stem):
    rng = np.random.default_rng(0)
    series = [rng.normal(size=(2, 37)), rng.normal(size=(2, 80))]
    a = ts(max_len=100, stem="conv", stem_layers=2, pad_to_multiple=8, **token, **stem).fit(series).eval()
    alone, alone_mask = a(a.collate([a.encode(series[0])]))
    both, both_mask = a(a.collate([a.encode(s) for s in series]))
    steps = 1 if token["token"] == "point" else 4
    assert alone.shape == (1, 40 if steps == 1 else 16, 16) and both.shape == (2, 80 if steps == 1 else 24, 16)
    assert int(both_mask[0].sum()) == -(-37 // steps) and int(both_mask[1].sum()) == -(-80 // steps)
    # a series' tokens do not depend on the padding its batch adds
    n = alone.shape[1]
    torch.testing.assert_close(alone[0], both[0, :n], atol=1e-5, rtol=1e-5)
    assert both[0, n:].abs().max() == 0
    a.train()
    out, _ = a(a.collate([a.encode(s) for s in series]))
    out.square().sum().backward()
    grads = [p.grad for p in a.proj.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_augmentation_only_in_training_and_seeded():
    from modalities.timeseries_layers import augment_steps

    x = torch.randn(3, 2, 12)
    steps = torch.ones(3, 12, dtype=torch.bool)
    steps[0, 7:] = False
    kinds = ("jitter", "scaling", "slice", "warp")
    torch.manual_seed(1)
    first = augment_steps(x, steps, kinds)
    torch.manual_seed(1)
    torch.testing.assert_close(first, augment_steps(x, steps, kinds))
    assert first.shape == x.shape and (first[0, :, 7:] == 0).all() and not torch.allclose(first, x)
    a = ts(augment=kinds, token="point").fit([np.arange(10.0)])
    batch = a.collate([a.encode(np.arange(10.0))])
    torch.testing.assert_close(a.eval()(batch)[0], a(batch)[0])  # eval: deterministic, no augmentation
    assert not torch.allclose(a.train()(batch)[0], a.eval()(batch)[0])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"stem": "cnn"}, "stem must be one of"),
        ({"augment": "jitter"}, "list of names"),
        ({"augment": ["mixup"]}, "augment must be one of"),
        ({"stem": "conv", "token": "patch", "patch_len": 4, "patch_stride": 2}, "non-overlapping"),
        ({"stem_kernels": []}, "non-empty"),
        ({"stem_kernels": [9, 9], "stem_dilations": [1]}, "one dilation per kernel"),
        ({"stem_dilations": [1, 0, 2]}, "stem_dilations\\[1\\] must be a positive"),
        ({"stem_pool": "avg"}, "stem_pool must be one of"),
        ({"stem_norm": "group"}, "stem_norm must be one of"),
        ({"stem_token_layers": -1}, "stem_token_layers must be an integer"),
    ],
)
def test_stem_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        ts(**kw)


def test_dilated_stem_branch_sees_the_dilated_neighbourhood():
    """A branch of kernel 3 and dilation 4 reads steps t-4, t, t+4 ("same" padding): an impulse
    at step 10 reaches exactly steps 6, 10 and 14 of its output."""
    from modalities.timeseries_layers import InceptionModule

    module = InceptionModule(1, 1, kernels=(3,), bottleneck=False, dilations=(4,))
    x = torch.zeros(1, 1, 21)
    x[0, 0, 10] = 1.0
    out = module.branches[0](torch.nn.functional.pad(x, (4, 4)))
    bias = module.branches[0].bias
    assert out.shape == (1, 1, 21)
    assert torch.nonzero((out - bias).abs()[0, 0] > 1e-7).flatten().tolist() == [6, 10, 14]
    full = module(x, torch.ones(1, 21, dtype=torch.bool))
    assert full.shape == (1, 2, 21)


def test_bottleneck_pool_reads_the_bottleneck():
    from modalities.timeseries_layers import InceptionModule

    cheap = InceptionModule(64, 16, (9, 9, 9), bottleneck=True, dilations=(1, 2, 4), pool="bottleneck")
    classic = InceptionModule(64, 16, (9, 9, 9), bottleneck=True)
    assert cheap.pool_branch.in_channels == 16 and classic.pool_branch.in_channels == 64
    first = InceptionModule(1, 16, (9, 9, 9), bottleneck=False, pool="bottleneck")  # no bottleneck: pools the input
    assert first.pool_branch.in_channels == 1


def test_masked_batch_norm_is_batch_norm_over_the_real_steps():
    """All steps real: ``BatchNorm1d`` exactly (outputs and running statistics, train and eval).
    With padding: the statistics of the real steps only, so padding changes nothing."""
    from modalities.timeseries_layers import MaskedBatchNorm

    torch.manual_seed(0)
    x = torch.randn(4, 6, 11)
    ours, reference = MaskedBatchNorm(6), torch.nn.BatchNorm1d(6)
    for _ in range(3):
        torch.testing.assert_close(ours(x, torch.ones(4, 1, 11)), reference(x))
    torch.testing.assert_close(ours.running_var, reference.running_var)
    ours.eval(), reference.eval()
    torch.testing.assert_close(ours(x, torch.ones(4, 1, 11)), reference(x))
    padded = torch.cat([x, torch.randn(4, 6, 5)], dim=-1)
    real = torch.ones(4, 1, 16)
    real[..., 11:] = 0
    a, b = MaskedBatchNorm(6).train(), MaskedBatchNorm(6).train()
    torch.testing.assert_close(a(padded * real, real)[..., :11], b(x, torch.ones(4, 1, 11)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.running_mean, b.running_mean)
    torch.testing.assert_close(a.running_var, b.running_var)


def test_token_layers_see_further_than_the_step_modules():
    """The token-resolution modules widen the receptive field by the patch length: an impulse at step 0
    (33 steps, so tokens 0-2 of 8 steps) moves tokens far beyond it."""
    from modalities.timeseries_layers import ConvStem

    torch.manual_seed(0)
    steps = torch.ones(1, 256, dtype=torch.bool)
    x = torch.zeros(1, 1, 256)
    impulse = x.clone()
    impulse[0, 0, 0] = 5.0
    reached = {}
    for token_layers in (0, 2):
        stem = ConvStem(1, 8, 16, 8, (9, 9, 9), 1, (1, 2, 4), norm="batch", token_layers=token_layers).eval()
        moved = (stem(impulse, steps) - stem(x, steps)).abs().amax(-1)[0] > 1e-6
        reached[token_layers] = int(torch.nonzero(moved).max())
    assert reached[0] == 2 and reached[2] >= 20

"""Image adapters: ``"image"`` (timm PatchEmbed) and ``"pixels"`` (one token per pixel)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from maelre.registry import create_backbone
from modalities import create_adapter
from modalities.image import rgb_to_gray


@pytest.fixture()
def rng():
    return np.random.default_rng(0)


def rgb_images(rng, n=3, size=(16, 16)):
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def patches(**kw):
    return create_adapter("image", **{"dim": 16, "img_size": 16, "patch_size": 4, **kw})


def pixels(**kw):
    return create_adapter("pixels", **{"dim": 16, **kw})


# -- "image": patches ---------------------------------------------------------------------
def test_encode_scales_and_normalizes(rng):
    a = patches(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5))
    x = rgb_images(rng, 1)[0]
    out = a.encode(x)
    expected = (x.astype(np.float32) / 255 - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.25, 0.5])
    np.testing.assert_allclose(out["image"].numpy(), expected.transpose(2, 0, 1), rtol=1e-5, atol=1e-6)
    assert out["mask"].shape == (16,) and out["mask"].all()
    torch.testing.assert_close(a.encode(x.astype(np.float64) / 255)["image"], out["image"])
    torch.testing.assert_close(a.encode(Image.fromarray(x))["image"], out["image"])


def test_default_statistics():
    from timm.data import IMAGENET_DEFAULT_MEAN

    assert patches().config.mean == IMAGENET_DEFAULT_MEAN
    assert patches(in_chans=1).config.mean == (0.5,)


def test_wrong_shapes_and_values_are_clear_errors(rng):
    a = patches()
    x = rgb_images(rng, 1)[0]
    cases = [
        (x.transpose(2, 0, 1), "channels-first"),
        (x[:8], r"\(H, W\)=\(16, 16\), got \(8, 16\)"),
        (x[..., 0], "expected 3 channel"),
        (np.concatenate([x, x[..., :1]], axis=-1), "expected 3 channel.*with 4"),
        (x.astype(np.float32), r"\[0, 1\].*divide by 255"),
        (x.astype(np.int32) - 1, "0..255"),
        (x > 128, "dtype bool"),
        ([[1, 2]], "numpy array"),
        (x[None], r"\[H, W\] or \[H, W, C\]"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            a.encode(bad)
    gray = patches(in_chans=1)
    assert gray.encode(x[..., 0])["image"].shape == (1, 16, 16)
    with pytest.raises(ValueError, match="expected 1 channel"):
        gray.encode(x)


def test_patch_tokens_match_a_plain_reference(rng):
    a = patches(pad_to_multiple=5)
    images = rgb_images(rng)
    batch = a.collate([a.encode(x) for x in images])
    assert batch["image"].shape == (3, 3, 16, 16) and batch["mask"].shape == (3, 20)
    assert batch["mask"][:, :16].all() and not batch["mask"][:, 16:].any()
    tokens, mask = a(batch)
    assert tokens.shape == (3, 20, 16) and tokens.dtype == torch.float32 and torch.equal(mask, batch["mask"])
    weight = a.patch_embed.proj.weight.reshape(16, -1)
    for row, col in ((0, 0), (1, 2), (3, 3)):
        patch = batch["image"][:, :, row * 4 : row * 4 + 4, col * 4 : col * 4 + 4].reshape(3, -1)
        index = row * 4 + col  # raster order
        expected = patch @ weight.T + a.patch_embed.proj.bias + a.pos_embed.table[index]
        torch.testing.assert_close(tokens[:, index], expected)
    assert (tokens[:, 16:] == 0).all()


def test_patch_config_errors():
    with pytest.raises(ValueError, match="must divide img_size"):
        patches(patch_size=5)
    with pytest.raises(ValueError, match="64 patches exceed max_len=32"):
        patches(img_size=32, max_len=32)
    with pytest.raises(ValueError, match="mean/std need 1 values"):
        patches(in_chans=1, mean=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError, match="in_chans must be one of"):
        patches(in_chans=4)
    assert patches(img_size=[16, 8], patch_size=[4, 2]).config.num_patches == 16  # YAML lists work


def test_image_gradients_and_backbone(rng):
    a = patches(pad_to_multiple=8)
    tokens, mask = a(a.collate([a.encode(x) for x in rgb_images(rng)]))
    create_backbone("transformer", dim=16, depth=1, heads=2)(tokens, mask).sum().backward()
    assert a.patch_embed.proj.weight.grad.abs().sum() > 0 and a.pos_embed.table.grad.abs().sum() > 0


# -- "pixels" -----------------------------------------------------------------------------
def test_gray_pixels_follow_luma_in_raster_order(rng):
    a = pixels()
    x = rgb_images(rng, 1, (8, 12))[0]
    out = a.encode(x)
    gray = np.asarray(Image.fromarray(x).convert("L"))  # PIL's ITU-R 601 luma as the reference
    assert out["pixels"].shape == (96,) and out["pixels"].dtype == torch.long
    assert 0 <= int(out["pixels"].min()) and int(out["pixels"].max()) <= 255
    assert np.abs(out["pixels"].numpy() - gray.reshape(-1).astype(int)).max() <= 1
    np.testing.assert_array_equal(out["pixels"].numpy().reshape(8, 12), rgb_to_gray(x))
    assert out["mask"].shape == (96,) and out["mask"].all()
    # grayscale arrays, [H, W, 1], floats and PIL images give the same tokens
    g = rgb_to_gray(x)
    for same in (g, g[..., None], g / 255.0, Image.fromarray(g), Image.fromarray(x)):
        assert torch.equal(a.encode(same)["pixels"], out["pixels"])


def test_full_intensity_range_is_embedded():
    a = pixels(pos_embed="none")
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    batch = a.collate([a.encode(ramp)])
    assert batch["pixels"][0].tolist() == list(range(256))
    torch.testing.assert_close(a(batch)[0][0], a.embedding.weight)


def test_pixel_forward_matches_reference_with_variable_sizes(rng):
    a = pixels(pad_to_multiple=16)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in ((8, 8), (4, 6), (5, 5))]
    batch = a.collate([a.encode(x) for x in images])
    assert batch["pixels"].shape == (3, 64) and batch["mask"].sum(1).tolist() == [64, 24, 25]
    tokens, mask = a(batch)
    expected = (a.embedding.weight[batch["pixels"]] + a.pos_embed.table[:64]) * mask[..., None]
    torch.testing.assert_close(tokens, expected)
    assert tokens.shape == (3, 64, 16) and torch.equal(mask, batch["mask"])
    create_backbone("transformer", dim=16, depth=1, heads=2)(tokens, mask).sum().backward()
    assert a.embedding.weight.grad.abs().sum() > 0 and a.pos_embed.table.grad.abs().sum() > 0


@pytest.mark.parametrize("backbone", ["transformer", "maelre", "ecp", "perceiver_ar"])
def test_mask_zero_makes_background_pixels_padding(rng, backbone):
    """mask_zero (LRA's and Skyformer's pixel ids: mask = inputs > 0): 0-valued pixels are padding wherever they
    are, so what they hold never reaches the pooled output of any backbone; off, every pixel is a token."""
    images = [np.where(rng.random((8, 8)) < 0.2, rng.integers(1, 256, (8, 8)), 0).astype(np.uint8) for _ in range(3)]
    a = pixels(mask_zero=True, img_size=8, max_len=64)
    batch = a.collate([a.encode(x) for x in images])
    assert torch.equal(batch["mask"], torch.from_numpy(np.stack(images).reshape(3, 64) != 0))
    assert pixels(img_size=8, max_len=64).encode(images[0])["mask"].all()
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    rgb[0, 0], rgb[0, 1] = 0, (0, 0, 7)
    mask = pixels(mask_zero=True, channels="rgb").encode(rgb)["mask"]
    assert not mask[0] and mask[1] and mask[2:].all()  # padding only where every channel is 0
    with pytest.raises(ValueError, match="all 0"):
        a.encode(np.zeros((8, 8), dtype=np.uint8))
    kw = {"maelre": {"switch_threshold": 16, "exact_blocks": 1}, "ecp": {"segment_size": 16}, "perceiver_ar": {"num_latents": 16}}
    model = create_backbone(backbone, dim=16, depth=2, heads=2, mlp_ratio=2.0, max_len=64, **kw.get(backbone, {})).eval()
    tokens, mask = a(batch)
    moved = tokens + torch.randn_like(tokens) * (~mask)[..., None]  # other values where the pixels are padding
    torch.testing.assert_close(model(moved, mask), model(tokens, mask))
    assert torch.isfinite(model(tokens, mask)).all()


def test_rgb_pixels_sum_and_linear(rng):
    x = rgb_images(rng, 1, (4, 4))[0]
    summed = pixels(channels="rgb", pos_embed="none")
    out = summed.encode(x)
    assert out["pixels"].shape == (16, 3)
    np.testing.assert_array_equal(out["pixels"].numpy(), x.reshape(16, 3))
    tokens = summed(summed.collate([out]))[0][0]
    w = summed.embedding.weight
    torch.testing.assert_close(tokens, w[out["pixels"][:, 0]] + w[256 + out["pixels"][:, 1]] + w[512 + out["pixels"][:, 2]])
    linear = pixels(channels="rgb", rgb_embed="linear", pos_embed="none")
    tokens = linear(linear.collate([linear.encode(x)]))[0][0]
    torch.testing.assert_close(tokens, torch.from_numpy(x.reshape(16, 3) / 255).float() @ linear.embedding.weight.T + linear.embedding.bias)
    tokens.sum().backward()
    assert linear.embedding.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="expected 3 channel"):
        summed.encode(x[..., 0])


def test_pixel_length_rules(rng):
    x = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    assert pixels(max_len=1024).encode(x)["pixels"].shape == (1024,)
    head = pixels(max_len=100).encode(x)["pixels"]
    np.testing.assert_array_equal(head.numpy(), x.reshape(-1)[:100])
    with pytest.raises(ValueError, match="1024 pixels long, longer than max_len=100"):
        pixels(max_len=100, truncation=False).encode(x)
    fixed = pixels(img_size=32)
    with pytest.raises(ValueError, match=r"\(32, 32\), got \(16, 32\)"):
        fixed.encode(x[:16])
    with pytest.raises(ValueError, match="channels must be one of"):
        pixels(channels="rgba")

import numpy as np
import pytest
import torch

from napari_seem.engine.image import logits_to_original, model_shape_for, prepare_image, to_rgb_255


def test_uint8_rgb_used_as_is():
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = to_rgb_255(img)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_dim_uint8_is_brightened_by_a_gain_that_keeps_zero():
    """An under-exposed 8-bit image (top below DIM_TOP) is multiplied so that its 99.8th
    percentile lands at BRIGHT_END, but its top never past 255; a normally exposed one, a bright
    field with few objects, an all-dark one and any other normalisation are left alone."""
    from napari_seem.engine.image import BRIGHT_END, DIM_TOP

    rng = np.random.default_rng(2)
    bright = rng.integers(5, 230, (60, 50)).astype(np.uint8)
    assert np.percentile(bright, 99.99) >= DIM_TOP
    np.testing.assert_array_equal(to_rgb_255(bright)[..., 0], bright)
    dim = (bright // 4).astype(np.uint8)
    end, top = np.percentile(dim, (99.8, 99.99))
    assert top < DIM_TOP and BRIGHT_END / end < 255 / top
    out = to_rgb_255(dim)[..., 0]
    np.testing.assert_allclose(out, np.clip(dim * (BRIGHT_END / end), 0, 255), rtol=1e-6)
    assert out.min() == pytest.approx(dim.min() * BRIGHT_END / end) and np.percentile(out, 99.8) == pytest.approx(BRIGHT_END)
    np.testing.assert_array_equal(to_rgb_255(dim, normalize="none")[..., 0], dim)
    # a dim field whose 99.8th percentile is background (few small objects): the top sets the gain
    sparse = np.full((200, 200), 4, np.uint8)
    sparse[:3, :3] = 60
    assert np.percentile(sparse, 99.8) == 4
    out = to_rgb_255(sparse)[..., 0]
    assert out.max() == pytest.approx(255) and out.min() == pytest.approx(4 * 255 / 60)
    # a bright field with few objects is not dim
    bright_sparse = sparse.copy()
    bright_sparse[:3, :3] = 220
    np.testing.assert_array_equal(to_rgb_255(bright_sparse)[..., 0], bright_sparse)
    dark = np.zeros((100, 100), np.uint8)  # top 0: nothing to scale
    dark[0, 0] = 3
    np.testing.assert_array_equal(to_rgb_255(dark)[..., 0], dark)


def test_gray_uint16_percentile_stretch():
    rng = np.random.default_rng(1)
    img = rng.integers(1000, 3000, (50, 40)).astype(np.uint16)
    out = to_rgb_255(img)
    assert out.shape == (50, 40, 3)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    lo, hi = np.percentile(img, (1, 99.8))
    expected = np.clip((img.astype(np.float32) - lo) * 255 / (hi - lo), 0, 255)
    np.testing.assert_allclose(out[..., 0], expected, rtol=1e-5, atol=1e-3)
    assert out.min() == 0 and out.max() == 255


def test_rgba_drops_alpha_and_channel_selection():
    img = np.zeros((8, 9, 4), dtype=np.uint8)
    img[..., 0] = 200
    img[..., 3] = 255
    assert to_rgb_255(img).shape == (8, 9, 3)
    assert to_rgb_255(img)[..., 0].max() == 200 and to_rgb_255(img)[..., 1:].max() == 0
    multi = np.random.default_rng(0).random((8, 9, 5)).astype(np.float32)
    out = to_rgb_255(multi, channel=2)
    assert out.shape == (8, 9, 3)
    with pytest.raises(ValueError, match="channel"):
        to_rgb_255(multi, channel=7)


@pytest.mark.parametrize(
    "img, msg",
    [
        (np.zeros((0, 5)), "empty"),
        (np.zeros((4, 4, 4, 4)), "expected a 2D image"),
        (np.zeros((4, 4, 5)), "expected a 2D image"),
        (np.array([[np.nan, 1.0], [2.0, 3.0]]), "NaN"),
        (np.array([[np.inf, 1.0], [2.0, 3.0]]), "NaN or infinite"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_bad_images_named(img, msg):
    with pytest.raises(ValueError, match=msg):
        to_rgb_255(img)


def test_constant_float_image_is_zero():
    assert to_rgb_255(np.full((5, 5), 7.5)).max() == 0


def test_model_shape_short_side_and_cap():
    assert model_shape_for((1024, 2048)) == (512, 1024)
    assert model_shape_for((100, 100)) == (512, 512)
    assert model_shape_for((4000, 4000)) == (512, 512)
    assert model_shape_for((100, 1000)) == (102, 1024)


def test_prepare_image_resizes_and_maps_back():
    img = np.random.default_rng(0).integers(0, 256, (64, 96), dtype=np.uint8)
    prep = prepare_image(img, short_side=128, max_side=256)
    assert prep.model_shape == (128, 192)
    assert tuple(prep.rgb.shape) == (3, 128, 192)
    assert prep.rgb.min() >= 0 and prep.rgb.max() <= 255
    logits = torch.randn(2, 128, 192)
    back = logits_to_original(logits, prep.original_shape)
    assert tuple(back.shape) == (2, 64, 96)


def test_prepare_image_scale_resizes_by_one_factor_whatever_the_size():
    img = np.random.default_rng(3).integers(0, 256, (100, 60), dtype=np.uint8)
    half = prepare_image(img, scale=0.5)
    assert half.model_shape == (50, 30) and tuple(half.rgb.shape) == (3, 50, 30)
    assert half.scale == (0.5, 0.5) and half.original_shape == (100, 60)
    # short_side and max_side are not used with a scale
    assert prepare_image(img, scale=1.5, short_side=512, max_side=64).model_shape == (150, 90)
    assert prepare_image(img, scale=0.001).model_shape == (1, 1)

import numpy as np
import pytest
import torch

from napari_seem.engine.image import logits_to_original, model_shape_for, prepare_image, to_rgb_255


def test_uint8_rgb_used_as_is():
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    out = to_rgb_255(img)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, img.astype(np.float32))


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
    img[..., 0] = 10
    img[..., 3] = 255
    assert to_rgb_255(img).shape == (8, 9, 3)
    assert to_rgb_255(img)[..., 0].max() == 10
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

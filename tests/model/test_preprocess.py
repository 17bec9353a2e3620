"""Image preprocessing: normalisation and padding to the size divisibility (``INPUT.PAD_MODE``)."""
import pytest
import torch

from napari_seem.engine.feature_cache import model_fingerprint
from napari_seem.model import build_seem, load_config
from napari_seem.weights import load_shipped_model


@pytest.fixture(scope="module")
def tiny_cfg(tiny_yaml) -> dict:
    return load_config(tiny_yaml)


def _with_pad_mode(cfg: dict, mode: str) -> dict:
    return {**cfg, "INPUT": {**cfg["INPUT"], "PAD_MODE": mode}}


def _image(height: int, width: int) -> torch.Tensor:
    return torch.arange(3 * height * width, dtype=torch.float32).reshape(3, height, width) % 251


def test_official_padding_is_zeros_after_normalisation(tiny_model):
    assert tiny_model.pad_mode == "zeros"
    x = tiny_model.preprocess(_image(100, 72))
    assert x.shape == (1, 3, 128, 96)
    expected = (_image(100, 72) - tiny_model.pixel_mean) / tiny_model.pixel_std
    torch.testing.assert_close(x[0, :, :100, :72], expected)
    assert (x[0, :, 100:] == 0).all() and (x[0, :, :, 72:] == 0).all()


def test_replicate_padding_copies_the_last_row_and_column(tiny_cfg):
    model = build_seem(_with_pad_mode(tiny_cfg, "replicate"))
    assert model.pad_mode == "replicate"
    x = model.preprocess(_image(100, 72))[0]
    assert x.shape == (3, 128, 96)
    expected = (_image(100, 72) - model.pixel_mean) / model.pixel_std
    torch.testing.assert_close(x[:, :100, :72], expected)
    torch.testing.assert_close(x[:, 100:, :72], expected[:, -1:, :].expand(3, 28, 72))
    torch.testing.assert_close(x[:, :100, 72:], expected[:, :, -1:].expand(3, 100, 24))
    assert (x[:, 100:, 72:] == expected[:, -1, -1][:, None, None]).all()
    # an image of a divisible size is not padded at all, whatever the mode
    torch.testing.assert_close(model.preprocess(_image(64, 96))[0], (_image(64, 96) - model.pixel_mean) / model.pixel_std)


def test_unknown_pad_mode_or_negative_minimum_is_refused(tiny_cfg):
    with pytest.raises(ValueError, match="INPUT.PAD_MODE"):
        build_seem(_with_pad_mode(tiny_cfg, "mirror"))
    with pytest.raises(ValueError, match="INPUT.MIN_PADDED_SIZE"):
        build_seem({**tiny_cfg, "INPUT": {**tiny_cfg["INPUT"], "MIN_PADDED_SIZE": -1}})


def test_a_small_image_is_padded_up_to_the_minimum_size(tiny_cfg):
    cfg = _with_pad_mode(tiny_cfg, "replicate")
    model = build_seem({**cfg, "INPUT": {**cfg["INPUT"], "MIN_PADDED_SIZE": 150}})
    assert model.padded_size(100, 72) == (160, 160)  # 150, then the next multiple of 32
    assert model.padded_size(300, 72) == (320, 160)
    x = model.preprocess(_image(100, 72))[0]
    assert x.shape == (3, 160, 160)
    expected = (_image(100, 72) - model.pixel_mean) / model.pixel_std
    torch.testing.assert_close(x[:, :100, :72], expected)
    torch.testing.assert_close(x[:, 159, :72], expected[:, -1, :])
    assert tiny_cfg["INPUT"].get("MIN_PADDED_SIZE") is None and build_seem(tiny_cfg).padded_size(100, 72) == (128, 96)


def test_the_shipped_model_pads_by_replication_and_its_cached_features_say_so():
    """The shipped model never saw padding in training (its images are multiples of 32 px, 192 to
    256 px in its last phases); its config asks for replication up to 256 px, and a feature cache
    on disk must not serve features padded another way."""
    model = load_shipped_model("seem_tiny_synthetic")
    assert (model.pad_mode, model.min_padded_size) == ("replicate", 256)
    shipped = model_fingerprint(model)
    model.min_padded_size = 0
    no_minimum = model_fingerprint(model)
    model.pad_mode = "zeros"
    assert len({shipped, no_minimum, model_fingerprint(model)}) == 3

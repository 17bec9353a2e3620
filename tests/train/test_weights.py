import pytest
import yaml

from napari_seem.model import build_seem, read_state_dict
from napari_seem.weights import load_shipped_model, shipped_model_names, shipped_model_path


def test_shipped_model_files():
    weights, config = shipped_model_path("seem_tiny_synthetic")
    assert weights.is_file() and config.is_file()
    assert weights.stat().st_size <= 20 * 1024 * 1024
    # issue 6: at most 20 MB in the package, the model and its outline refiners together
    from napari_seem.weights import SHIPPED_REFINERS

    refiners = [weights.parent / f for f in SHIPPED_REFINERS["seem_tiny_synthetic"]]
    assert all(f.is_file() for f in refiners)
    assert weights.stat().st_size + sum(f.stat().st_size for f in refiners) <= 20 * 1024 * 1024
    assert (weights.parent / "MODEL_CARD.md").is_file()
    assert "seem_tiny_synthetic" in shipped_model_names()
    assert yaml.safe_load(config.read_text())["MODEL"]["BACKBONE"]["NAME"] == "focal_dw"


def test_shipped_weights_have_the_official_names_and_shapes():
    weights, config = shipped_model_path("seem_tiny_synthetic")
    state = read_state_dict(weights)
    expected = {k: tuple(v.shape) for k, v in build_seem(config, device="meta").state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    model = load_shipped_model("seem_tiny_synthetic")
    assert not model.training
    assert next(model.parameters()).dtype.is_floating_point


def test_unknown_shipped_model():
    with pytest.raises(KeyError):
        shipped_model_path("no_such_model")

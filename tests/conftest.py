"""Shared test fixtures: the official SEEM reference data in ``../shared/seem_reference``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from golden import GOLDEN_DIR, SPEC_DIR, load_case, sub_state_dict  # noqa: F401  (re-exported)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Keep test runs from reading or writing the user's ~/.cache/napari-seem."""
    import os

    old = os.environ.get("NAPARI_SEEM_CACHE_DIR")
    os.environ["NAPARI_SEEM_CACHE_DIR"] = str(tmp_path_factory.mktemp("napari-seem-cache"))
    yield
    if old is None:
        os.environ.pop("NAPARI_SEEM_CACHE_DIR", None)
    else:
        os.environ["NAPARI_SEEM_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN_DIR.is_dir():
        pytest.fail(f"SEEM reference data not found at {GOLDEN_DIR}")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    return SPEC_DIR


@pytest.fixture(scope="session")
def tiny_state_dict(golden_dir) -> dict:
    """Official tiny SEEM v1 weights (280 entries, official names, no ``model.`` prefix)."""
    return torch.load(golden_dir / "tiny_v1_weights.pt", weights_only=True)


@pytest.fixture(scope="session")
def tiny_yaml(golden_dir) -> Path:
    return golden_dir / "tiny_v1.yaml"


@pytest.fixture(scope="session")
def tiny_model(tiny_yaml, tiny_state_dict):
    """The official-architecture tiny SEEM with the golden weights (shared; treat as read-only)."""
    from napari_seem.model import build_seem, load_into

    model = build_seem(tiny_yaml)
    load_into(model, tiny_state_dict, strict=True)
    return model


@pytest.fixture
def tiny_segmenter(tiny_model):
    """A fresh :class:`napari_seem.engine.Segmenter` on the tiny golden model (CPU, 64 px short side)."""
    from napari_seem.engine import Segmenter

    return Segmenter(tiny_model, device="cpu", short_side=64, max_side=128)

"""Fixtures of the napari plugin tests."""
from __future__ import annotations

from pathlib import Path

import pytest
from _fakes import FakeSegmenter

import napari_seem

MANIFEST = Path(napari_seem.__file__).parent / "napari.yaml"


def _register_manifest() -> None:
    """Make the plugin known to npe2 when the package is not installed (``PYTHONPATH=src``).

    Done once, before any viewer exists: each test viewer then picks it up like an installed
    plugin (registering later would hit listeners left by earlier viewers).
    """
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()
    pm.discover()
    if "napari-seem" not in pm._manifests:
        pm.register(PluginManifest.from_file(MANIFEST))


_register_manifest()


@pytest.fixture
def fake_segmenter() -> FakeSegmenter:
    return FakeSegmenter()

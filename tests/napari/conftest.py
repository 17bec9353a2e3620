"""Fixtures of the napari plugin tests."""
from __future__ import annotations

import pytest
from _fakes import FakeSegmenter


@pytest.fixture
def fake_segmenter() -> FakeSegmenter:
    return FakeSegmenter()

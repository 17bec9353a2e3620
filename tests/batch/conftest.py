"""Fixtures for the batch tests: synthetic inputs on disk and the tiny golden model's spec."""
from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from _batch_data import MAX_SIDE, MOVIE_SHAPE, SHORT_SIDE

from napari_seem.synthetic import make_image, make_sequence



@pytest.fixture(scope="session")
def model_args(golden_dir) -> list[str]:
    """CLI options selecting the tiny golden model at a small model-side resolution, on CPU."""
    return ["--model", str(golden_dir / "tiny_v1_weights.pt"), "--config", str(golden_dir / "tiny_v1.yaml"),
            "--device", "cpu", "--short-side", str(SHORT_SIDE), "--max-side", str(MAX_SIDE)]


@pytest.fixture(scope="session")
def model_spec(golden_dir):
    from napari_seem.batch import ModelSpec

    return ModelSpec(str(golden_dir / "tiny_v1_weights.pt"), config=str(golden_dir / "tiny_v1.yaml"), device="cpu",
                     short_side=SHORT_SIDE, max_side=MAX_SIDE)


@pytest.fixture(scope="session")
def batch_inputs(tmp_path_factory) -> Path:
    """``images/``: three 2D images (two TIFF, one PNG); ``movie.tif``: a 7-frame ImageJ time-lapse."""
    root = tmp_path_factory.mktemp("batch_inputs")
    images = root / "images"
    images.mkdir()
    tifffile.imwrite(images / "a.tif", make_image((96, 128), seed=1).image)
    tifffile.imwrite(images / "b.tif", make_image((96, 128), seed=2, bit_depth=16).image)
    iio.imwrite(images / "c.png", make_image((80, 100), seed=3).image)
    sequence = make_sequence(n_frames=MOVIE_SHAPE[0], shape=MOVIE_SHAPE[1:], seed=2)
    tifffile.imwrite(root / "movie.tif", sequence.image, imagej=True, metadata={"axes": "TYX"})
    seeds = np.where(np.isin(sequence.nuclei[0], np.unique(sequence.nuclei[0])[1:3]), sequence.nuclei[0], 0)
    tifffile.imwrite(root / "seeds.tif", seeds.astype(np.uint16))
    return root

"""Training an outline refiner on a model's own masks (``python -m napari_seem.train --refiner``)."""
import shutil

import numpy as np
import pytest
import torch

from napari_seem.engine import Segmenter
from napari_seem.engine.outline_refiner import CHANNELS, WINDOW, OutlineRefiner, load_refiner
from napari_seem.train.__main__ import main
from napari_seem.engine.connected import deepest_pixel
from napari_seem.train.refiner import _image_plan, _sequence_plan, refiner_samples, train_refiner
from napari_seem.weights import shipped_model_path


def test_windows_hold_the_engine_mask_the_clicks_and_the_true_object():
    threads = torch.get_num_threads()
    x, y = refiner_samples("seem_tiny_synthetic", None, 2, seed=3, workers=1, rounds=1)
    assert torch.get_num_threads() == threads  # restored
    # two worker processes give the same windows, in the same order
    x2, y2 = refiner_samples("seem_tiny_synthetic", None, 2, seed=3, workers=2, rounds=1)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.dtype == np.float16 and x.shape[1:] == (len(CHANNELS), WINDOW, WINDOW)
    assert y.dtype == bool and y.shape == (len(x), WINDOW, WINDOW)
    assert len(x) >= 4  # nuclei, clicked and corrected once
    mask = x[:, CHANNELS.index("mask")] > 0.5
    positive = x[:, CHANNELS.index("positive")] > 0.5
    for k in range(len(x)):
        assert y[k].any() and mask[k].any() and positive[k].any()
        iou = (mask[k] & y[k]).sum() / (mask[k] | y[k]).sum()
        assert iou > 0.3  # the engine's mask of that very nucleus
        assert (positive[k] & y[k]).any()  # the first click is on the object
    image = x[:, :3].astype(np.float32)
    assert 0 <= image.min() and image.max() <= 1.0


def test_time_lapse_windows_hold_a_propagated_mask_and_a_click_at_its_deepest_pixel():
    # as the propagation's redraw builds them: the propagated mask, one click at its deepest pixel
    x, y = refiner_samples("seem_tiny_synthetic", None, 0, seed=3, sequences=1, workers=1)
    x2, y2 = refiner_samples("seem_tiny_synthetic", None, 0, seed=3, sequences=1, workers=2)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.dtype == np.float16 and x.shape[1:] == (len(CHANNELS), WINDOW, WINDOW)
    assert y.shape == (len(x), WINDOW, WINDOW)
    assert len(x) >= 19  # at least one nucleus followed through the 19 frames after the first
    mask = x[:, CHANNELS.index("mask")] > 0.5
    positive = x[:, CHANNELS.index("positive")] > 0.5
    assert not x[:, CHANNELS.index("negative")].any()
    for k in range(len(x)):
        r, c = deepest_pixel(mask[k])
        assert positive[k, r, c] and y[k, r, c]  # the click, at the mask's deepest pixel, is on the object
        rows, cols = np.nonzero(positive[k])
        assert abs(rows.mean() - r) < 1 and abs(cols.mean() - c) < 1  # one click, there
    # windows from time-lapses of training seeds, apart from the images' seeds
    sequences = [s for _, s, _ in _sequence_plan(50, 9, (192, 224, 256))]
    assert min(sequences) >= 2 ** 20 and not set(sequences) & {s for _, s, _ in _image_plan(800, 9, (192, 224, 256))}


def test_refiner_training_is_deterministic_and_learns():
    rng = np.random.default_rng(0)
    # windows of a toy task: the true object is the engine's mask shrunk by one pixel
    rows, cols = np.ogrid[:WINDOW, :WINDOW]
    x = np.zeros((24, len(CHANNELS), WINDOW, WINDOW), np.float16)
    y = np.zeros((24, WINDOW, WINDOW), bool)
    for k in range(24):
        r, c, radius = *rng.integers(24, 40, size=2), rng.integers(6, 12)
        d2 = (rows - r) ** 2 + (cols - c) ** 2
        x[k, CHANNELS.index("mask")] = d2 <= radius ** 2
        x[k, :3] = (d2 <= (radius - 1) ** 2) * 0.8
        y[k] = d2 <= (radius - 1) ** 2

    def run(steps):
        return train_refiner(x, y, steps=steps, seed=1, batch=4, width=4, threads=1, log=lambda _: None)

    a, b = run(3), run(3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name
    before = OutlineRefiner(4)
    after = run(60)
    inputs, targets = torch.from_numpy(x).float(), torch.from_numpy(y).float()[:, None]
    with torch.no_grad():
        loss_before = torch.nn.functional.binary_cross_entropy_with_logits(before.eval()(inputs), targets)
        loss_after = torch.nn.functional.binary_cross_entropy_with_logits(after(inputs), targets)
    assert loss_after < 0.5 * loss_before


def test_cli_trains_a_refiner_that_from_pretrained_loads_beside_the_model(tmp_path):
    main(["--refiner", "--refiner-images", "1", "--refiner-sequences", "1", "--steps", "2", "--workers", "1",
          "--threads", "1", "--seed", "3", "--out", str(tmp_path)])
    refiner = load_refiner(tmp_path / "refiner.safetensors")
    assert refiner.classes == ("nucleus",)
    seg = Segmenter.from_pretrained("seem_tiny_synthetic", device="cpu", refiner=tmp_path / "refiner.safetensors")
    assert [r.classes for r in seg.refiners] == [("nucleus",)]
    seg = Segmenter.from_pretrained("seem_tiny_synthetic", device="cpu", refiner=None)
    assert seg.refiner is None and seg.refiners == ()
    # a refiner of cells, in its own window, beside the nuclei's
    main(["--refiner", "--refiner-classes", "cell", "--refiner-window", "96", "--refiner-images", "1",
          "--refiner-sequences", "0", "--steps", "2", "--workers", "1", "--threads", "1", "--seed", "3",
          "--out", str(tmp_path)])
    cells = load_refiner(tmp_path / "refiner_cell.safetensors")
    assert cells.classes == ("cell",) and cells.window == 96
    assert load_refiner(tmp_path / "refiner.safetensors").classes == ("nucleus",)  # not overwritten
    # a training run's folder: the refiners beside its weights come with them
    weights, config = shipped_model_path("seem_tiny_synthetic")
    shutil.copyfile(weights, tmp_path / "model.safetensors")
    seg = Segmenter.from_pretrained(tmp_path / "model.safetensors", config=config, device="cpu")
    assert [(r.classes, r.window) for r in seg.refiners] == [(("nucleus",), 64), (("cell",), 96)]
    assert seg.refiner_for("cell").window == 96 and seg.refiner_for("vesicle") is None
    (tmp_path / "refiner.safetensors").unlink()
    (tmp_path / "refiner_cell.safetensors").unlink()
    assert Segmenter.from_pretrained(tmp_path / "model.safetensors", config=config, device="cpu").refiner is None


def test_cli_refuses_a_refiner_it_cannot_train(tmp_path):
    with pytest.raises(SystemExit, match="synthetic images only"):
        main(["--refiner", "--data", str(tmp_path), "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="debris"):
        main(["--refiner", "--refiner-classes", "nucleus", "debris", "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit, match="refiner-window 100"):
        main(["--refiner", "--refiner-window", "100", "--out", str(tmp_path / "r")])
    assert not (tmp_path / "r" / "refiner.safetensors").exists()

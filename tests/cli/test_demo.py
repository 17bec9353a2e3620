"""The README's main job: ``napari-seem demo`` on the offline sample data."""
import pandas as pd
import tifffile

from golden import GOLDEN_DIR
from napari_seem.cli import main


def test_demo_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--model", str(GOLDEN_DIR / "tiny_v1_weights.pt"), "--config", str(GOLDEN_DIR / "tiny_v1.yaml"),
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "text 'nucleus'" in text and "IoU" in text
    assert "find similar, one nucleus of another image" in text
    for name in ("nuclei_from_text", "clicked_cell", "everything", "similar_to_example"):
        labels = tifffile.imread(out / f"{name}_labels.tif")
        table = pd.read_csv(out / f"{name}_objects.csv")
        assert labels.shape == (256, 256)
        assert set(table["id"]) >= set(int(i) for i in set(labels.ravel()) - {0})
    assert (out / "overview.png").stat().st_size > 0


def test_demo_bad_model_is_a_clear_error(tmp_path, capsys):
    code = main(["demo", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "missing.pt" in capsys.readouterr().err


def test_overview_stretches_a_dim_16_bit_image_past_its_bright_spots():
    import numpy as np

    from napari_seem.demo import display_gray

    image = np.full((100, 100), 1000, np.uint16)
    image[20:60, 20:60] = 4000  # an object
    image[0, :5] = 65000  # a few hot pixels
    gray = display_gray(image)
    assert gray.dtype == np.float32 and gray.min() == 0.0 and gray.max() == 1.0
    assert gray[40, 40] == 1.0 and gray[90, 90] == 0.0  # min/max scaling would leave the object at 0.05
    rgba = np.dstack([image, image, image, np.full_like(image, 65535)])
    np.testing.assert_allclose(display_gray(rgba), gray)  # colour channels averaged, alpha ignored
    flat = display_gray(np.full((8, 8), 7, np.uint8))
    assert np.isfinite(flat).all() and (flat == 0).all()


def test_demo_with_the_shipped_model_segments_the_sample(tmp_path, capsys):
    """The README's main job on the shipped model: real segmentations, measured against the
    sample's ground truth (5 nuclei: text 5/5 at IoU 0.86, the example nucleus 5/5 at 0.86)."""
    import re

    assert main(["demo", "--model", "seem_tiny_synthetic", "--device", "cpu", "--out", str(tmp_path / "d")]) == 0
    text = capsys.readouterr().out
    for line_start in ("text 'nucleus'", "find similar"):
        line = next(line for line in text.splitlines() if line.startswith(line_start))
        found, total, mean = re.search(r"(\d+)/(\d+) true nuclei found .* mean IoU ([0-9.]+)", line).groups()
        assert int(found) >= int(total) - 1 and float(mean) >= 0.7, line
    click = next(line for line in text.splitlines() if line.startswith("one click"))
    assert float(re.search(r"IoU ([0-9.]+)", click).group(1)) >= 0.65 and "class 'cell'" in click

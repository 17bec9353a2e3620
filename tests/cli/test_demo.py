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
    for name in ("nuclei_from_text", "clicked_cell", "everything"):
        labels = tifffile.imread(out / f"{name}_labels.tif")
        table = pd.read_csv(out / f"{name}_objects.csv")
        assert labels.shape == (256, 256)
        assert set(table["id"]) >= set(int(i) for i in set(labels.ravel()) - {0})
    assert (out / "overview.png").stat().st_size > 0


def test_demo_bad_model_is_a_clear_error(tmp_path, capsys):
    code = main(["demo", "--model", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "o")])
    assert code != 0
    assert "missing.pt" in capsys.readouterr().err

"""``napari-seem demo``: the main job on offline sample data, with a measured result.

Makes a synthetic fluorescence image (the package's own generator, so ground truth is known),
then with the default model: finds every nucleus from the text prompt "nucleus", segments one
cell from a single click, runs automatic mode, and finds the nuclei again from one example nucleus
drawn on another image (referring-image search). Writes label images (TIFF), the object tables
(CSV) and an overview PNG to ``--out``, and prints the IoU of each result against the ground
truth. ``--napari`` opens the same data in napari with the SEEM widget instead.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import numpy as np


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _matched_iou(pred_masks: np.ndarray, truth: np.ndarray) -> tuple[float, int, int]:
    """Mean IoU over ground-truth objects (each matched to its best prediction), #found, #truth."""
    ids = [i for i in np.unique(truth) if i]
    if not ids:
        return 0.0, 0, 0
    ious = []
    for i in ids:
        obj = truth == i
        best = max((_iou(m, obj) for m in pred_masks), default=0.0)
        ious.append(best)
    return float(np.mean(ious)), int(sum(v >= 0.5 for v in ious)), len(ids)


def display_gray(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """``[H, W]`` float 0..1 for display: the image's ``low``..``high`` percentiles stretched to
    the full range (a few bright spots do not leave the rest of a 16-bit field black); colour
    channels are averaged first."""
    gray = image.astype(np.float32)
    if gray.ndim == 3:
        gray = gray[..., :3].mean(-1)
    lo, hi = (float(v) for v in np.percentile(gray, [low, high]))
    if hi <= lo:
        lo, hi = float(gray.min()), float(gray.max())
    return np.clip((gray - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)


def _save_overview(path: Path, image: np.ndarray, panels: list[tuple[str, np.ndarray]]) -> None:
    from skimage.color import label2rgb
    from skimage.io import imsave
    from skimage.segmentation import find_boundaries

    gray = display_gray(image)
    tiles = [np.dstack([gray] * 3)]
    for _, labels in panels:
        rgb = label2rgb(labels, image=gray, bg_label=0, alpha=0.35)
        rgb[find_boundaries(labels)] = (1.0, 1.0, 0.0)
        tiles.append(rgb)
    sep = np.ones((gray.shape[0], 4, 3))
    row = np.concatenate([t if i == 0 else np.concatenate([sep, t], axis=1) for i, t in enumerate(tiles)], axis=1)
    imsave(path, (np.clip(row, 0, 1) * 255).astype(np.uint8), check_contrast=False)


@click.command("demo")
@click.option("--model", "model_name", default="auto", show_default=True,
              help="model name (seem_tiny_synthetic, seem_focalt_v1, ...), checkpoint file, or auto")
@click.option("--config", type=click.Path(exists=True, dir_okay=False), default=None,
              help="official SEEM YAML for a checkpoint file")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="demo_output", show_default=True)
@click.option("--seed", default=7, show_default=True, help="seed of the synthetic sample image")
@click.option("--napari", "open_napari", is_flag=True, help="open napari with the sample and the SEEM widget")
def demo(model_name: str, config: str | None, device: str, out_dir: str, seed: int, open_napari: bool) -> None:
    """Segment the offline sample data with the default model and report the quality."""
    if open_napari:
        _open_napari()
        return
    from skimage.io import imsave  # noqa: F401  (fail early if scikit-image is broken)

    from .engine import ObjectPrompt, Segmenter
    from .model.checkpoint import CheckpointError, CheckpointNotFoundError
    from .synthetic import make_image, object_centre

    sample = make_image((256, 256), seed=seed, bit_depth=16)
    click.echo(f"sample: synthetic 16-bit fluorescence image 256x256 (seed {seed}), "
               f"{len(np.unique(sample.nuclei)) - 1} nuclei, {len(np.unique(sample.cells)) - 1} cells")
    start = time.perf_counter()
    try:
        seg = Segmenter.from_pretrained(model_name, config=config, device=device)
    except (CheckpointError, CheckpointNotFoundError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    if "nucleus" not in seg.vocabulary:
        seg.set_vocabulary(["nucleus", "cell", "vesicle"])
    click.echo(f"model: {seg.model_name} on {seg.device} ({time.perf_counter() - start:.1f} s to load); "
               f"vocabulary: {', '.join(seg.vocabulary)}")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    seg.set_image(sample.image)
    t_encode = time.perf_counter() - t0

    t0 = time.perf_counter()
    nuclei = seg.predict(text="nucleus")
    t_text = time.perf_counter() - t0
    cell_id = next(o["id"] for o in sample.objects if o["class"] == "cell")
    # the centre of the cell's visible part (its cytoplasm): a click on its nucleus means the nucleus
    centre = object_centre(sample.instances, cell_id)
    t0 = time.perf_counter()
    clicked = seg.predict(ObjectPrompt(points=[centre]))
    t_click = time.perf_counter() - t0
    t0 = time.perf_counter()
    everything = seg.segment_everything()
    t_all = time.perf_counter() - t0
    # referring-image search: the largest nucleus of ANOTHER synthetic image as the example
    other = make_image((256, 256), seed=seed + 1, bit_depth=16)
    example = max(np.unique(other.nuclei)[1:], key=lambda k: int((other.nuclei == k).sum()))
    t0 = time.perf_counter()
    similar = seg.find_similar(other.image, other.nuclei == example, sample.image)
    t_similar = time.perf_counter() - t0

    nuc_iou, found, total = _matched_iou(nuclei.masks, sample.nuclei)
    sim_iou, sim_found, _ = _matched_iou(similar.masks, sample.nuclei)
    click_iou = _iou(clicked.masks[0], sample.cells == cell_id)
    results = {"nuclei_from_text": nuclei, "clicked_cell": clicked, "everything": everything,
               "similar_to_example": similar}
    import pandas as pd
    import tifffile

    for name, result in results.items():
        tifffile.imwrite(out / f"{name}_labels.tif", result.to_labels())
        pd.DataFrame(result.table()).to_csv(out / f"{name}_objects.csv", index=False)
    tifffile.imwrite(out / "sample_image.tif", sample.image)
    _save_overview(out / "overview.png", sample.image, [(k, v.to_labels()) for k, v in results.items()])

    click.echo(f"encode {t_encode:.2f} s | text 'nucleus' {t_text:.2f} s | click {t_click:.2f} s | "
               f"everything {t_all:.2f} s | find similar {t_similar:.2f} s")
    click.echo(f"text 'nucleus': {len(nuclei)} objects; {found}/{total} true nuclei found (IoU >= 0.5), "
               f"mean IoU {nuc_iou:.3f}")
    click.echo(f"one click on a cell's cytoplasm: IoU {click_iou:.3f} with the whole cell, "
               f"class '{clicked.class_names[0]}'")
    classes = ", ".join(f"{n}: {everything.class_names.count(n)}" for n in sorted(set(everything.class_names)))
    click.echo(f"segment everything: {len(everything)} objects ({classes or 'none'})")
    click.echo(f"find similar, one nucleus of another image (seed {seed + 1}) as the example: {len(similar)} objects; "
               f"{sim_found}/{total} true nuclei found (IoU >= 0.5), mean IoU {sim_iou:.3f}")
    click.echo(f"wrote {out}/: *_labels.tif, *_objects.csv, overview.png")


def _open_napari() -> None:
    try:
        import napari
    except ImportError as err:  # pragma: no cover - napari is a dependency
        raise click.ClickException(f"napari is not installed: {err}") from err
    viewer = napari.Viewer()
    viewer.open_sample("napari-seem", "cells")
    viewer.window.add_plugin_dock_widget("napari-seem", "SEEM")
    napari.run()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(demo())

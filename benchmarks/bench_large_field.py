"""Large fields: text search and automatic mode with the shipped model at the image's own size.

A synthetic fluorescence field of N x N pixels (cells at the density of the 256² training images,
so about 600 objects at 1024² and 2,400 at 2048²) is segmented with ``predict(text="nucleus")``
and ``segment_everything()``, on the whole field at once and tile by tile (``segment_tiled``, 256
px tiles: the shipped model's training size, 64 px overlap). Each size runs in its own
subprocess, so its peak memory is its own.

    python benchmarks/bench_large_field.py [--sizes 1024 2048] [--threads 2]

Prints one row per size and mode: seconds, objects, the process's peak RSS after that mode (the
encoding included; modes run in the order printed), the bytes the result holds (one label image),
the bytes the same objects would take as one full-size mask each (the storage before 2026-12-06),
and for text search the mean IoU over the true nuclei (Hungarian matching, missed nuclei count 0).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def _run(size: int, threads: int) -> list[dict]:
    import numpy as np
    import torch

    from napari_seem.engine import Segmenter
    from napari_seem.synthetic import make_image

    torch.set_num_threads(threads)
    scale = (size / 256) ** 2
    sample = make_image((size, size), seed=3, n_cells=(int(12 * scale), int(16 * scale)))
    seg = Segmenter.from_pretrained("seem_tiny_synthetic", device="cpu")
    start = time.perf_counter()
    seg.set_image(sample.image)
    rows = [{"size": size, "mode": "encode", "seconds": time.perf_counter() - start, "peak_gb": _peak_rss_gb()}]
    modes = (("text 'nucleus'", lambda: seg.predict(text="nucleus")),
             ("automatic", seg.segment_everything),
             ("text, tiles", lambda: seg.segment_tiled(sample.image, text="nucleus")),
             ("automatic, tiles", lambda: seg.segment_tiled(sample.image)))
    for mode, call in modes:
        start = time.perf_counter()
        result = call()
        labels = result.to_labels()
        seconds = time.perf_counter() - start
        held = result.positions().nbytes if result.compact else result.masks.nbytes
        row = {"size": size, "mode": mode, "seconds": seconds, "objects": len(result), "peak_gb": _peak_rss_gb(),
               "result_mb": held / 1e6, "as_masks_mb": len(result) * labels.size / 1e6}
        if mode.startswith("text"):
            row["nucleus_iou"] = _matched_iou(labels, sample.nuclei)
        rows.append(row)
        np.testing.assert_array_equal(np.unique(labels[labels > 0]), np.sort(result.object_ids[result.areas() > 0]))
    return rows


def _matched_iou(pred, truth) -> float:
    """Mean IoU over the true objects of label image ``truth`` (one-to-one Hungarian matching)."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    p_ids, p = np.unique(pred, return_inverse=True)
    t_ids, t = np.unique(truth, return_inverse=True)
    both = (pred.ravel() > 0) & (truth.ravel() > 0)
    inter = np.zeros((len(p_ids), len(t_ids)))
    np.add.at(inter, (p.ravel()[both], t.ravel()[both]), 1)
    inter = inter[p_ids > 0][:, t_ids > 0]
    p_area = np.bincount(p.ravel(), minlength=len(p_ids))[p_ids > 0]
    t_area = np.bincount(t.ravel(), minlength=len(t_ids))[t_ids > 0]
    iou = inter / (p_area[:, None] + t_area[None] - inter)
    rows, cols = linear_sum_assignment(-iou)
    return float(iou[rows, cols].sum() / len(t_area))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_run(args.worker, args.threads)))
        return
    print(f"{'size':>6} {'mode':<17} {'seconds':>8} {'objects':>8} {'peak RSS GB':>12} {'result MB':>10} "
          f"{'as masks MB':>12} {'nucleus IoU':>12}")
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--worker", str(size), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        for row in json.loads(out.strip().splitlines()[-1]):
            print(f"{row['size']:>6} {row['mode']:<17} {row['seconds']:>8.2f} {row.get('objects', ''):>8} "
                  f"{row['peak_gb']:>12.2f} {row.get('result_mb', float('nan')):>10.1f} "
                  f"{row.get('as_masks_mb', float('nan')):>12.0f} {row.get('nucleus_iou', float('nan')):>12.3f}")


if __name__ == "__main__":
    main()

"""What the outline refiners cost a click: the shipped model without refiners, with the refiner of
nuclei, and with both (nuclei and cells), side by side in one run.

    python benchmarks/bench_refiners.py [--images 5] [--threads 2] [--repeats 5]

Each object of at least 60 visible pixels on held-out synthetic images 9000, 9001, ... is clicked
at its centre, on an image already encoded (the click runs the decoder and the engine's rules, then
the refiner of the object's class). Prints the median time per click for nuclei and for cells.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def click_times(segmenters: dict, images, repeats: int) -> dict:
    """``{setup: {class: [seconds, ...]}}``: each object's clicks timed in turn on every setup
    (interleaved, so that a drift of the machine's speed hits them alike)."""
    from napari_seem.engine import ObjectPrompt
    from napari_seem.synthetic import object_centre
    from napari_seem.train.evaluate import _targets

    times = {name: {"nucleus": [], "cell": []} for name in segmenters}
    for sample in images:
        for segmenter in segmenters.values():
            segmenter.set_image(sample.image)
        for obj, _, _ in _targets(sample, 60):
            if obj["class"] not in ("nucleus", "cell"):
                continue
            prompt = ObjectPrompt(points=[object_centre(sample.instances, obj["id"])])
            for segmenter in segmenters.values():
                segmenter.predict(prompt)  # warm: the image's refiner input, the nuclei text search reads
            for _ in range(repeats):
                for name, segmenter in segmenters.items():
                    start = time.perf_counter()
                    segmenter.predict(prompt)
                    times[name][obj["class"]].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from napari_seem.synthetic import make_image
    from napari_seem.train.evaluate import make_segmenter
    from napari_seem.weights import load_shipped_model, load_shipped_refiner, load_shipped_refiners

    model = load_shipped_model()
    images = [make_image((256, 256), seed=9000 + i) for i in range(args.images)]
    setups = {"no refiner": None, "nuclei refiner": [load_shipped_refiner()], "both refiners": load_shipped_refiners()}
    rows = click_times({name: make_segmenter(model, refiner=r) for name, r in setups.items()}, images, args.repeats)
    base = rows["no refiner"]
    counts = {c: len(base[c]) // args.repeats for c in base}
    print(f"seem_tiny_synthetic, a click on an encoded 256² image, CPU, {args.threads} threads, median of "
          f"{args.repeats} clicks on each of {counts['nucleus']} nuclei and {counts['cell']} cells "
          f"(images 9000-{9000 + args.images - 1})")
    print(f"{'setup':16s} {'nucleus ms':>11s} {'ratio':>6s} {'cell ms':>9s} {'ratio':>6s}")
    for name, times in rows.items():
        cells = []
        for c in ("nucleus", "cell"):
            median = 1000 * float(np.median(times[c]))
            cells.append(f"{median:{11 if c == 'nucleus' else 9}.1f} {median / (1000 * float(np.median(base[c]))):6.2f}")
        print(f"{name:16s} {' '.join(cells)}")


if __name__ == "__main__":
    main()

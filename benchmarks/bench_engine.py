"""Engine benchmark: napari-seem's Segmenter vs Meta's segment-anything SamPredictor, one run.

Full-size architectures with random weights (timing does not depend on the weights):
SEEM Focal-T (``seem_focalt_v1``) and SAM ViT-B (``sam_model_registry["vit_b"](checkpoint=None)``).
Each model runs in its own subprocess so that its peak memory is its own.

    pip install segment-anything   # benchmark-only; its torchvision imports are stubbed below
    python benchmarks/bench_engine.py [--threads 2] [--repeats 3] [--frames 4] [--quick]

Prints one table: SEEM encode (1024²), per-click latency on cached features (and with memory),
per-box latency (the engine's box rule: five candidate clicks, and the box as SEEM's filled area),
text-prompt latency, referring-image search (both similarities), propagation frames/s on a 512² stack, peak RSS; SAM ViT-B ``set_image`` and
``predict()`` at 1024² and peak RSS; and the ratios the project targets. The peak RSS is the
process's high-water mark after the single-image workload (model weights, vocabulary, encoding
and every prompt type on the 1024² image), read before the 512² propagation part.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import types


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def run_seem(args) -> dict:
    import numpy as np
    import torch

    from napari_seem.engine import ObjectPrompt, Segmenter
    from napari_seem.model import build_seem

    torch.set_num_threads(args.threads)
    model = build_seem("seem_focalt_v1")
    size = 512 if args.quick else 1024
    seg = Segmenter(model, device="cpu", short_side=size, max_side=size, text_cache_dir=None)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size), dtype=np.uint8)
    out: dict = {"size": size}

    start = time.perf_counter()
    seg.set_vocabulary(["nucleus", "cell", "vesicle"])
    seg._class_embeddings()
    out["vocabulary_s"] = time.perf_counter() - start

    def encode():
        seg.cache.clear()
        seg.set_image(image)

    out["encode_s"] = _median_time(encode, args.repeats)
    click = ObjectPrompt(points=[(size // 2, size // 2)])
    first = seg.predict(click)
    out["click_s"] = _median_time(lambda: seg.predict(click), args.repeats)
    second = ObjectPrompt(points=[(size // 2, size // 2), (size // 2 + 40, size // 2)], point_labels=[1, 0])
    out["click_memory_s"] = _median_time(lambda: seg.predict(second, previous=first), args.repeats)
    box = ObjectPrompt(boxes=[(size // 2 - 40, size // 2 - 30, size // 2 + 40, size // 2 + 30)])
    out["box_s"] = _median_time(lambda: seg.predict(box), args.repeats)
    seg.fit_boxes = False
    out["box_area_s"] = _median_time(lambda: seg.predict(box), args.repeats)
    seg.fit_boxes = True
    out["text_grounding_s"] = _median_time(lambda: seg.predict(text="nucleus", all_instances=False), args.repeats)
    out["text_all_s"] = _median_time(lambda: seg.predict(text="nucleus"), args.repeats)
    out["everything_s"] = _median_time(lambda: seg.segment_everything(), args.repeats)
    example = first.masks[0] if first.masks[0].any() else np.ones((size, size), bool)
    for mode in ("class", "embedding"):  # the example on the current image (its features cached)
        out[f"similar_{mode}_s"] = _median_time(
            lambda: seg.find_similar(image, example, similarity=mode), args.repeats)
    out["peak_rss_gb"] = _peak_rss_gb()  # the whole single-image workload above, weights included
    seg = first = None  # free the 1024² features before the 512² part

    stack = rng.integers(0, 255, (args.frames + 1, 512, 512), dtype=np.uint8)
    seg512 = Segmenter(model, device="cpu", short_side=512, max_side=512, text_cache_dir=None)
    seg512.set_vocabulary(["nucleus", "cell", "vesicle"])
    seg512.set_image(stack[0])
    seeds = seg512.predict(ObjectPrompt(points=[(256, 256)]))
    start = time.perf_counter()
    n = sum(1 for _ in seg512.propagate(stack, 0, seeds, stop_iou=0.0, min_score=0.0)) - 1
    out["propagate_fps"] = n / (time.perf_counter() - start)
    return out


def _stub_torchvision() -> None:
    """SamPredictor imports torchvision helpers it does not use on the paths timed here."""
    def unavailable(*_a, **_k):
        raise RuntimeError("torchvision is stubbed in this benchmark")

    tv = types.ModuleType("torchvision")
    for name in ("ops", "ops.boxes", "transforms", "transforms.functional"):
        sys.modules[f"torchvision.{name}"] = types.ModuleType(f"torchvision.{name}")
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.ops.boxes"].batched_nms = unavailable
    sys.modules["torchvision.ops.boxes"].box_area = unavailable
    sys.modules["torchvision.transforms.functional"].resize = unavailable
    sys.modules["torchvision.transforms.functional"].to_pil_image = unavailable


def run_sam(args) -> dict:
    import numpy as np
    import torch

    _stub_torchvision()
    from segment_anything import SamPredictor, sam_model_registry

    torch.set_num_threads(args.threads)
    sam = sam_model_registry["vit_b"](checkpoint=None).eval()
    predictor = SamPredictor(sam)
    size = 512 if args.quick else 1024
    x = torch.randint(0, 255, (1, 3, 1024, 1024)).float()  # SAM always encodes 1024 x 1024

    def encode():
        with torch.inference_mode():
            predictor.set_torch_image(x, (size, size))

    out = {"encode_s": _median_time(encode, args.repeats)}  # same repeats as SEEM (first run included in both)
    point = np.array([[size / 2, size / 2]])
    with torch.inference_mode():
        predictor.predict(point_coords=point, point_labels=np.array([1]))
        out["click_s"] = _median_time(
            lambda: predictor.predict(point_coords=point, point_labels=np.array([1])), args.repeats)
        box = np.array([size / 2 - 30, size / 2 - 40, size / 2 + 30, size / 2 + 40])  # x0, y0, x1, y1
        out["box_s"] = _median_time(lambda: predictor.predict(box=box), args.repeats)
    out["peak_rss_gb"] = _peak_rss_gb()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames", type=int, default=4, help="frames propagated on the 512² stack")
    parser.add_argument("--quick", action="store_true", help="512² instead of 1024² (both models)")
    parser.add_argument("--only", choices=["seem", "sam"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps((run_seem if args.only == "seem" else run_sam)(args)))
        return
    results = {}
    for name in ("seem", "sam"):
        cmd = [sys.executable, __file__, "--only", name, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--frames", str(args.frames)] + (["--quick"] if args.quick else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name} failed:\n{proc.stderr[-3000:]}")
            results[name] = None
            continue
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    seem, sam = results["seem"], results["sam"]
    size = 512 if args.quick else 1024
    print(f"\nnapari-seem engine vs SAM ViT-B, {size}² image, CPU, {args.threads} threads, median of {args.repeats}")
    print(f"{'measurement':44s} {'SEEM Focal-T':>13s} {'SAM ViT-B':>10s} {'ratio':>7s}")
    rows = [
        ("encode (set_image), s", "encode_s", "encode_s"),
        ("click on cached features, s", "click_s", "click_s"),
        ("click + memory (2nd round), s", "click_memory_s", None),
        ("box on cached features (5 candidate clicks), s", "box_s", "box_s"),
        ("box as SEEM's filled area (fit_boxes=False), s", "box_area_s", None),
        ("text prompt, grounding (one region), s", "text_grounding_s", None),
        ("text prompt, all instances, s", "text_all_s", None),
        ("segment everything, s", "everything_s", None),
        ("find similar, class (default), s", "similar_class_s", None),
        ("find similar, embedding, s", "similar_embedding_s", None),
        ("vocabulary embeddings (3 classes, once), s", "vocabulary_s", None),
        ("propagation on 512² stack, frames/s", "propagate_fps", None),
        ("peak RSS, one-image workload, GB", "peak_rss_gb", "peak_rss_gb"),
    ]
    for label, skey, mkey in rows:
        s = seem.get(skey) if seem else None
        m = sam.get(mkey) if (sam and mkey) else None
        ratio = f"{s / m:7.2f}" if (s is not None and m) else ""
        fmt = lambda v: f"{v:10.3f}" if v is not None else f"{'-':>10s}"
        print(f"{label:44s} {fmt(s):>13s} {fmt(m)} {ratio}")
    if seem and sam:
        print("\ntargets: click <= 3x SAM predict, encode <= 0.4x SAM set_image, peak memory <= 2 GB")
        print(f"  click ratio {seem['click_s'] / sam['click_s']:.2f}, encode ratio {seem['encode_s'] / sam['encode_s']:.2f}, "
              f"SEEM peak {seem['peak_rss_gb']:.2f} GB")


if __name__ == "__main__":
    main()

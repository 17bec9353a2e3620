"""Throughput of batch segmentation: images per second for 1 vs 2 (or more) dask workers.

    PYTHONPATH=src python benchmarks/bench_batch.py                       # tiny + Focal-T, 1 and 2 workers
    PYTHONPATH=src python benchmarks/bench_batch.py --models tiny --images 32 --workers 1 2 4

Models: ``tiny`` = the golden tiny SEEM v1 (``shared/seem_reference/golden``), ``focalt`` = the
full-size Focal-T v1 architecture with random weights (timing does not depend on the weights).
Prompt: a text prompt with a 3-class vocabulary on synthetic 256 x 256 images (512 px model side,
the default). For every worker count, a LocalCluster of that many single-task worker processes is
started; the cores are shared out as torch threads (``cores // workers`` each, or ``--threads``); a warm-up run
loads the model in every worker, then a second run on the same cluster is timed (model loading
and worker start-up excluded: they are paid once per worker, not per image).
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import tifffile

from napari_seem.batch import ModelSpec, PromptSpec, segment_batch
from napari_seem.synthetic import make_image

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "seem_reference" / "golden"
VOCAB = ("nucleus", "cell", "vesicle")


def model_spec(name: str, scratch: Path, device: str) -> ModelSpec:
    if name == "tiny":
        return ModelSpec(str(GOLDEN / "tiny_v1_weights.pt"), config=str(GOLDEN / "tiny_v1.yaml"), device=device)
    if name == "focalt":
        import torch

        from napari_seem.model import build_seem

        path = scratch / "focalt_random.pt"
        if not path.exists():
            torch.manual_seed(0)
            torch.save(build_seem("seem_focalt_v1").state_dict(), path)
        return ModelSpec(str(path), config="seem_focalt_v1", device=device)
    raise SystemExit(f"unknown model {name!r}: use tiny or focalt")


def make_inputs(folder: Path, n: int, seed0: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        tifffile.imwrite(folder / f"img{i:03d}.tif", make_image((256, 256), seed=seed0 + i).image)
    return folder


def run(spec: ModelSpec, n_workers: int, images: Path, warmup: Path, scratch: Path, threads: int | None) -> dict:
    from distributed import Client, LocalCluster

    cores = os.cpu_count() or 1
    threads = threads or max(1, cores // n_workers)
    prompt = PromptSpec("text", text="nucleus", vocabulary=VOCAB)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None)
    tag = f"{Path(spec.name_or_path).stem}-{n_workers}x{threads}"
    from napari_seem.batch import RunOptions

    options = RunOptions(torch_threads=threads)
    with Client(cluster) as client:
        began = time.perf_counter()
        segment_batch([warmup], prompt, spec, scratch / f"warm-{tag}", client=client, options=options,
                      overwrite=True, progress=False)
        warm_s = time.perf_counter() - began
        summary = segment_batch([images], prompt, spec, scratch / f"out-{tag}", client=client, options=options,
                                overwrite=True, progress=False)
    cluster.close()
    if not summary.ok:
        raise SystemExit(f"benchmark run failed: {summary.failed}")
    return {"workers": n_workers, "threads_per_worker": threads, "images": summary.frames,
            "seconds": round(summary.elapsed_s, 2), "images_per_s": round(summary.frames_per_second, 3),
            "warmup_s": round(warm_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "focalt"])
    parser.add_argument("--images", type=int, default=None, help="images per run (default: 24 tiny, 6 focalt)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: cores // workers)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for name in args.models:
            n = args.images or (24 if name == "tiny" else 6)
            spec = model_spec(name, scratch, args.device)
            images = make_inputs(scratch / f"images-{n}", n, seed0=100)
            warmup = make_inputs(scratch / f"warmup-{max(args.workers)}", max(args.workers), seed0=0)
            for workers in args.workers:
                row = {"model": name, "device": args.device, "cores": os.cpu_count(), **run(spec, workers, images,
                                                                                             warmup, scratch, args.threads)}
                results.append(row)
                print(json.dumps(row), flush=True)
    print("\n| model | workers | threads/worker | images | s | images/s |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['workers']} | {r['threads_per_worker']} | {r['images']} | {r['seconds']} "
              f"| {r['images_per_s']} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

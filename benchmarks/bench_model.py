"""Speed of the SEEM model on CPU: image encoding and per-prompt decoding, reference vs fast path.

Builds the full-size ``seem_focalt_v1`` architecture with random weights (timings do not depend
on the weights) and prints, per image size, the median time of:

* encode (backbone + pixel decoder) with the pixel decoder's large 3x3 convolutions computed
  directly (reference column) and as Winograd ``F(4x4, 3x3)`` (fast column, what the model
  uses), and the decoder's per-image preparation (fast path only);
* one positive click, a second round (positive + negative click with the first round's mask as
  memory), text grounding and segment-everything (object queries with class logits), each
  decoded on cached image features by the reference path (raw features, every stage at full
  resolution) and by the fast path (``SeemDecoder.prepare_features``), with their ratio and the
  largest difference between the two outputs (about 1e-5; larger only when an attention-mask
  logit lies within rounding of 0 and falls on the other side in the two paths);

and the peak resident memory of the process.

Usage::

    PYTHONPATH=src python benchmarks/bench_model.py            # 512² and 1024², 3 repeats
    PYTHONPATH=src python benchmarks/bench_model.py --quick    # 512² only
    PYTHONPATH=src python benchmarks/bench_model.py --threads 1 --repeats 5 --sizes 768

On a machine whose cores are busy with other work, fewer threads than cores give steadier
numbers (OpenMP threads wait for each other on every small operation); ``--threads 1
--clock cpu`` measures the process CPU time, close to the wall time on an idle machine.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from typing import Callable

import torch

from napari_seem.model import build_seem, winograd
from napari_seem.model.decoder import DecoderOutput

PHRASE = "the large object in the middle"
VOCABULARY_SIZE = 134  # COCO panoptic classes + background


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median time (wall or process CPU time, see ``--clock``) of ``repeats`` calls and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = _clock()
        result = fn()
        times.append(_clock() - start)
    return statistics.median(times), result


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _click(size: int, y: float, x: float, radius: int = 3) -> torch.Tensor:
    """``[1, size, size]`` bool: a small square around ``(y, x)`` (fractions of the size)."""
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    cy, cx = int(y * size), int(x * size)
    mask[0, cy - radius : cy + radius + 1, cx - radius : cx + radius + 1] = True
    return mask


def _diff(a: DecoderOutput, b: DecoderOutput, field: str) -> float:
    return (getattr(a, field) - getattr(b, field)).abs().max().item()


def bench_size(model, size: int, repeats: int) -> list[tuple[str, float, float | None, str]]:
    """Rows ``(task, reference_s, fast_s, note)`` for one square image size."""
    decoder = model.predictor
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, size, size), generator=generator).float()
    rows = []

    with winograd.enabled(False):
        direct_s, direct = _median_time(lambda: model.encode_image(image), repeats)
    encode_s, features = _median_time(lambda: model.encode_image(image), repeats)
    diff = (features.mask_features - direct.mask_features).abs().max().item()
    rows.append(("encode (backbone + pixel decoder)", direct_s, encode_s,
                 f"direct vs Winograd 3x3 convs, mask features max|diff| {diff:.1e}"))
    del direct
    raw = (features.multi_scale_features, features.mask_features)
    prepare_s, prepared = _median_time(lambda: decoder.prepare_features(*raw), repeats)
    cache_mib = prepared.nbytes() / 2**20
    rows.append(("decoder prepare_features (once per image)", None, prepare_s, f"cache {cache_mib:.0f} MiB"))

    hp, wp = features.padded_size
    assert hp == wp == size, "benchmark sizes must be multiples of the size divisibility"
    first = {"pos_masks": _click(size, 0.5, 0.4)}
    ref_first = decoder(*raw, **first)
    second = {
        "pos_masks": first["pos_masks"] | _click(size, 0.55, 0.45),
        "neg_masks": _click(size, 0.3, 0.7),
        "prev_mask": ref_first.selected_masks,
    }
    text = model.lang_encoder.encode_text([PHRASE])
    grounding = {"grounding_tokens": text.real_tokens}
    vocabulary = torch.randn(VOCABULARY_SIZE, text.class_emb.shape[-1], generator=generator)
    vocabulary = vocabulary / vocabulary.norm(dim=-1, keepdim=True)
    everything = {"class_embeddings": vocabulary}

    text_s, _ = _median_time(lambda: model.lang_encoder.encode_text([PHRASE]), repeats)
    rows.append(("text encoder (one phrase)", text_s, None, ""))
    tasks = [
        ("click (1 positive)", first, "selected_masks"),
        ("click + memory (round 2)", second, "selected_masks"),
        ("text grounding", grounding, "grounding_masks"),
        ("segment everything", everything, "masks"),
    ]
    for name, kwargs, field in tasks:
        reference_s, reference = _median_time(lambda: decoder(*raw, **kwargs), repeats)
        fast_s, fast = _median_time(lambda: decoder(prepared, **kwargs), repeats)
        rows.append((f"decode: {name}", reference_s, fast_s, f"max|diff| {_diff(reference, fast, field):.1e}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per entry, median reported (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="square image sizes")
    parser.add_argument("--quick", action="store_true", help="512 only")
    parser.add_argument("--config", default="seem_focalt_v1", help="model preset or YAML (random weights)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall time (default) or process CPU time (steadier on a busy machine with --threads 1)")
    args = parser.parse_args()
    sizes = [512] if args.quick else args.sizes
    global _clock
    _clock = CLOCKS[args.clock]

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the random weights
    model = build_seem(args.config)
    print(f"{args.config}, random weights, torch {torch.__version__}, {args.threads} threads, "
          f"median {args.clock} time of {args.repeats}")
    with torch.inference_mode():
        for size in sizes:
            rows = bench_size(model, size, args.repeats)
            print(f"\n{size}x{size}")
            print(f"{'':42} {'reference':>10} {'fast':>10} {'speed-up':>9}  note")
            for name, reference_s, fast_s, note in rows:
                ref = f"{reference_s:9.3f}s" if reference_s is not None else ""
                fst = f"{fast_s:9.3f}s" if fast_s is not None else ""
                ratio = f"{reference_s / fast_s:8.1f}x" if reference_s is not None and fast_s is not None else ""
                print(f"{name:42} {ref:>10} {fst:>10} {ratio:>9}  {note}")
            print(f"peak RSS so far: {_peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main()

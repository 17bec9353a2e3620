"""``segment_batch``: plan the items, check the output folder, run the tasks on dask.distributed.

>>> from napari_seem.batch import segment_batch, PromptSpec
>>> summary = segment_batch(["plates/"], PromptSpec("text", text="nucleus"), "seem_focalt_v1", "out/")
>>> print(summary)

From the napari console (or any Python) pass an existing ``client=`` (``distributed.Client``);
otherwise a :class:`distributed.LocalCluster` sized to the machine is started and closed again.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .io import ImageSource, InputError, discover, probe
from .outputs import COMBINED_TABLE, MANIFEST, ItemPaths, read_table, remove_stale_tmp
from .spec import Job, ModelSpec, PromptSpec, RunOptions
from . import tasks

#: memory a CPU worker is budgeted when the LocalCluster is sized (a full-size model and its activations)
WORKER_MEMORY_BYTES = 4 << 30


class OutputExistsError(FileExistsError):
    """The output folder already holds results of this run's items (and neither overwrite nor resume)."""


@dataclass
class BatchSummary:
    """What a batch run did.

    Attributes:
        output_dir: where the outputs are.
        processed: names of the items segmented in this run.
        skipped: names of items already complete (``resume``).
        failed: item name -> error message.
        frames: frames segmented in this run.
        objects: objects (table rows) written in this run.
        elapsed_s: wall time of the run (cluster start excluded).
        n_workers: dask workers used.
        model_loads: worker address -> models that worker has built so far (1 = loaded once).
    """

    output_dir: Path
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    objects: int = 0
    elapsed_s: float = 0.0
    n_workers: int = 0
    model_loads: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"output_dir": str(self.output_dir), "processed": self.processed, "skipped": self.skipped,
                "failed": self.failed, "frames": self.frames, "objects": self.objects,
                "elapsed_s": round(self.elapsed_s, 3), "frames_per_second": round(self.frames_per_second, 3),
                "n_workers": self.n_workers}

    def __str__(self) -> str:
        lines = [
            f"{len(self.processed)} item(s) segmented, {len(self.skipped)} skipped (already done), "
            f"{len(self.failed)} failed",
            f"{self.frames} frame(s), {self.objects} object(s) in {self.elapsed_s:.1f} s "
            f"({self.frames_per_second:.2f} frames/s on {self.n_workers} worker(s))",
            f"outputs: {self.output_dir}",
        ]
        lines += [f"FAILED {name}: {message}" for name, message in self.failed.items()]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- planning
def _as_model(model: ModelSpec | str | Path) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else ModelSpec(str(model))


def _as_prompt(prompt: PromptSpec | str) -> PromptSpec:
    return prompt if isinstance(prompt, PromptSpec) else PromptSpec("text", text=prompt)


def plan_sources(inputs: Sequence[str | Path], output_dir: Path, prompt: PromptSpec, *, recursive: bool = False,
                 axes: str | None = None, channel: int | None = None) -> list[ImageSource]:
    """Probe every input and check that the prompt fits it (raises :class:`InputError`)."""
    sources = [probe(path, name, axes, channel) for path, name in discover(inputs, recursive=recursive,
                                                                           exclude=[output_dir])]
    if prompt.kind == "propagate":
        for source in sources:
            if not source.is_stack:
                raise InputError(f"{source.path}: propagation needs a stack or time-lapse, this is a 2D image "
                                 f"(axes {source.axes!r}; give --axes if a stack axis was not recognised)")
            if prompt.start_frame >= source.n_frames:
                raise InputError(f"{source.path}: start frame {prompt.start_frame} outside 0..{source.n_frames - 1}")
            if prompt.seed_labels is not None and prompt.seed_labels.shape != source.frame_shape:
                raise InputError(f"{source.path}: frames are {source.frame_shape}, the seed labels "
                                 f"{prompt.seed_labels.shape}")
    return sources


def _settings(job: Job) -> dict[str, Any]:
    """What must match for ``resume`` to continue an earlier run in the same folder."""
    options = job.options
    model = {k: v for k, v in job.model.describe().items() if k != "device"}  # resuming elsewhere is fine
    return {"model": model, "prompt": job.prompt.describe(),
            "normalize": list(options.normalize) if isinstance(options.normalize, tuple) else options.normalize,
            "channel": options.channel, "label_format": options.label_format,
            "tile": options.tile, "tile_overlap": options.tile_overlap if options.tile is not None else None}


def check_outputs(output_dir: Path, items: list[tuple[ImageSource, ItemPaths]], job: Job, *,
                  overwrite: bool, resume: bool) -> None:
    """Refuse to touch existing results unless asked (raises :class:`OutputExistsError`)."""
    if overwrite and resume:
        raise ValueError("choose either overwrite (redo everything) or resume (skip finished items), not both")
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputExistsError(f"output {output_dir} exists and is not a folder")
    manifest = output_dir / MANIFEST
    if resume and manifest.is_file():
        try:
            before = json.loads(manifest.read_text()).get("settings")
        except ValueError:
            before = None
        now = json.loads(json.dumps(_settings(job)))
        if before is not None and before != now:
            changed = sorted(k for k in now if before.get(k) != now[k])
            raise OutputExistsError(f"{output_dir} holds a run with other settings ({', '.join(changed)} differ); "
                                    "resume needs the same model, prompt and options (or use overwrite)")
    if overwrite or resume:
        return
    existing = [p for _, paths in items for p in paths.existing()]
    existing += [p for _, paths in items if paths.partial.exists() for p in [paths.partial]]
    if existing:
        shown = ", ".join(p.name for p in existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise OutputExistsError(f"{len(existing)} output(s) already exist in {output_dir} ({shown}); "
                                "use --overwrite to replace them or --resume to skip finished items")


def default_workers(device: str = "auto") -> tuple[int, int]:
    """``(n_workers, torch threads per worker)`` for a LocalCluster on this machine.

    GPU: one worker per GPU. CPU: one single-threaded worker per core, fewer when the memory
    does not hold :data:`WORKER_MEMORY_BYTES` per worker (then the cores are shared out as threads).
    """
    import torch

    from ..engine.device import resolve_device

    cores = os.cpu_count() or 1
    if resolve_device(device).type == "cuda":
        n = 1 if ":" in device else max(torch.cuda.device_count(), 1)
        return n, max(1, cores // n)
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:
        memory = WORKER_MEMORY_BYTES * cores
    n = max(1, min(cores, memory // WORKER_MEMORY_BYTES))
    return n, max(1, cores // n)


def _progress(total: int, enabled: bool):
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="frame", desc="segmenting", disable=not enabled)


# -------------------------------------------------------------------------------------- running
def segment_batch(
    inputs: Sequence[str | Path],
    prompt: PromptSpec | str,
    model: ModelSpec | str | Path,
    output_dir: str | Path,
    *,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    overwrite: bool = False,
    resume: bool = False,
    recursive: bool = False,
    axes: str | None = None,
    options: RunOptions | None = None,
    progress: bool = True,
) -> BatchSummary:
    """Segment every image / stack of ``inputs`` with ``prompt`` and write labels and tables.

    Args:
        inputs: files (TIFF, OME-TIFF, PNG, JPEG), ``.zarr`` folders, or folders of them.
        prompt: a :class:`PromptSpec`, or a phrase (text prompt).
        model: a :class:`ModelSpec`, or a preset name / checkpoint path.
        output_dir: where outputs go (created); see :mod:`napari_seem.batch.outputs`.
        client: a ``distributed.Client`` to run on (left open). Default: ``scheduler`` or a new
            LocalCluster (closed at the end).
        scheduler: address of a running dask scheduler (``tcp://host:8786``); workers must see the
            input and output paths.
        n_workers, threads_per_worker: LocalCluster size (default: :func:`default_workers`);
            ``threads_per_worker`` is torch's intra-op thread count (each worker runs one task at a time).
        overwrite: replace existing outputs of these items.
        resume: skip items whose outputs are complete (and split stacks' finished chunks).
        recursive: also look for images in sub-folders of folder inputs.
        axes: axis letters for every input (default: from metadata / shape; see :mod:`.io`).
        options: :class:`RunOptions` (normalisation, channel, label format, chunk size).
        progress: show a progress bar (tqdm) on stderr.

    Raises:
        InputError: bad inputs or a prompt that does not fit them. OutputExistsError: outputs exist.
        ValueError: inconsistent arguments.
    """
    options = options or RunOptions()
    model, prompt = _as_model(model), _as_prompt(prompt)
    output_dir = Path(output_dir).expanduser()
    if client is not None and scheduler is not None:
        raise ValueError("give either a client or a scheduler address, not both")
    model.check(device=client is None and scheduler is None)
    sources = plan_sources(inputs, output_dir, prompt, recursive=recursive, axes=axes, channel=options.channel)
    items = [(s, ItemPaths.of(output_dir, s.name, options.label_format)) for s in sources]
    local = client is None and scheduler is None
    if local:
        n_auto, threads_auto = default_workers(model.device)
        n_workers = n_workers or n_auto
        threads_per_worker = threads_per_worker or max(1, threads_auto * n_auto // n_workers)
    if n_workers is not None and n_workers < 1 or threads_per_worker is not None and threads_per_worker < 1:
        raise ValueError(f"workers and threads must be >= 1, got {n_workers} workers x {threads_per_worker} threads")
    torch_threads = options.torch_threads or threads_per_worker
    job = Job(model, prompt, RunOptions(**{**options.__dict__, "torch_threads": torch_threads}))
    check_outputs(output_dir, items, job, overwrite=overwrite, resume=resume)

    output_dir.mkdir(parents=True, exist_ok=True)
    summary = BatchSummary(output_dir=output_dir)
    todo = []
    for source, paths in items:
        remove_stale_tmp(output_dir, f"{source.name}_")
        if resume and paths.complete():
            summary.skipped.append(source.name)
            continue
        if overwrite:
            paths.remove()
        todo.append((source, paths))
    _write_manifest(output_dir, job, sources, summary, state="running")

    own_client = client is None
    if own_client:
        client = _start_client(scheduler, n_workers or 1, torch_threads or 1)
    try:
        summary.n_workers = len(client.scheduler_info(n_workers=-1)["workers"])
        began = time.perf_counter()
        _run(client, job, todo, summary, progress)
        summary.elapsed_s = time.perf_counter() - began
        summary.model_loads = dict(client.run(tasks.load_count))
    finally:
        if own_client:
            _close(client)
    _write_combined(output_dir, items)
    _write_manifest(output_dir, job, sources, summary, state="done" if summary.ok else "failed")
    return summary


def _start_client(scheduler: str | None, n_workers: int, threads: int):
    from distributed import Client, LocalCluster

    if scheduler is not None:
        return Client(scheduler)
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           env={"OMP_NUM_THREADS": str(threads)})
    return Client(cluster)


def _close(client) -> None:
    import logging

    cluster = client.cluster
    client.close()
    if cluster is not None:
        nanny_log = logging.getLogger("distributed.nanny")
        level = nanny_log.level
        nanny_log.setLevel(logging.ERROR)  # "worker still alive ... killing" is expected at shutdown
        try:
            cluster.close()
        finally:
            nanny_log.setLevel(level)


def _submit(client, job_future, source: ImageSource, paths: ItemPaths, options: RunOptions, run_id: str,
            prompt: PromptSpec) -> tuple[list[tuple[Any, int]], Any]:
    """Futures for one item: ``[(work future, frames)]`` and the future that finishes the item."""
    key = f"seem-{source.name}-{run_id}"
    if not prompt.per_frame:
        final = client.submit(tasks.propagate_item, job_future, source, paths, key=f"{key}-propagate", pure=False)
        return [(final, source.n_frames)], final
    if source.n_frames <= options.chunk_frames:
        final = client.submit(tasks.segment_item, job_future, source, paths, key=f"{key}-item", pure=False)
        return [(final, source.n_frames)], final
    bounds = [(start, min(start + options.chunk_frames, source.n_frames))
              for start in range(0, source.n_frames, options.chunk_frames)]
    chunks = [client.submit(tasks.segment_chunk, job_future, source, paths, start, stop,
                            key=f"{key}-{start}-{stop}", pure=False) for start, stop in bounds]
    final = client.submit(tasks.assemble_item, source, paths, bounds, *chunks, key=f"{key}-assemble", pure=False)
    return [(c, stop - start) for c, (start, stop) in zip(chunks, bounds)], final


def _run(client, job: Job, todo: list[tuple[ImageSource, ItemPaths]], summary: BatchSummary, progress: bool) -> None:
    from distributed import as_completed

    if not todo:
        return
    run_id = uuid.uuid4().hex[:8]
    job_future = client.scatter(job, broadcast=True, hash=False)
    work: dict[Any, tuple[str, int]] = {}
    finals: dict[Any, str] = {}
    for source, paths in todo:
        units, final = _submit(client, job_future, source, paths, job.options, run_id, job.prompt)
        work.update({future: (source.name, frames) for future, frames in units})
        finals[final] = source.name
    bar = _progress(sum(frames for _, frames in work.values()), progress)
    try:
        for future in as_completed(list({**work, **finals})):
            name = work[future][0] if future in work else finals[future]
            if future.status == "error":
                exc = future.exception()
                summary.failed.setdefault(name, f"{type(exc).__name__}: {exc}")
                continue
            report = future.result()
            if future in work:
                summary.frames += report.frames
                if bar is not None:
                    bar.update(work[future][1])
            if future in finals:
                summary.objects += report.objects
                summary.processed.append(name)
    except KeyboardInterrupt:
        client.cancel(list({**work, **finals}))
        raise
    finally:
        if bar is not None:
            bar.close()


def _write_combined(output_dir: Path, items: list[tuple[ImageSource, ItemPaths]]) -> None:
    """``objects.csv``: every finished item's table with an ``image`` column (rebuilt each run)."""
    import pandas as pd

    tables = []
    for source, paths in items:
        if paths.complete():
            table = read_table(paths.table)
            table.insert(0, "image", source.name)
            tables.append(table)
    if tables:
        from .outputs import write_table

        write_table(pd.concat(tables, ignore_index=True), output_dir / COMBINED_TABLE)


def _write_manifest(output_dir: Path, job: Job, sources: list[ImageSource], summary: BatchSummary, state: str) -> None:
    from .outputs import commit, tmp_name

    path = output_dir / MANIFEST
    tmp = tmp_name(path)
    tmp.write_text(json.dumps({"state": state, "settings": _settings(job), "inputs": [s.describe() for s in sources],
                               "summary": summary.as_dict()}, indent=2))
    commit(tmp, path)

"""Batch upscaling with Ray Data: an actor pool in which each actor holds one onnxruntime session.

Pipeline: the job list (input path, output path) becomes a dataset with one row per block, and
``map_batches`` runs it through ``UpscaleActor`` with ``ActorPoolStrategy(size=workers)``. Each actor builds
one ``Upscaler`` from the graph path and ``RunOptions`` (``threads`` onnxruntime threads, and as many Ray
CPUs reserved), reads its inputs, and writes its outputs itself, atomically, through the same
``runtime.jobs.run_job`` as the single-process path: the files are byte-identical. Only a small status row
per image comes back to the driver, which streams them (for a progress bar).

Where it runs: an already initialised Ray is used as is. Otherwise ``address=None`` starts a local instance
(or joins the cluster in ``$RAY_ADDRESS`` when set, Ray's own rule), and an address (``ray://host:10001`` or
``host:6379``) joins that cluster; a Ray started here is shut down at the end. On a cluster the graph,
the inputs and the output folder must be at the same paths on every node (shared storage), and amsr must be
installed in the workers' environment.

Ray is optional (``pip install 'amsr[ray]'``): this module imports without it and raises
``BackendUnavailableError`` naming the package on first use.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from amsr.core.errors import BackendUnavailableError
from amsr.runtime.jobs import Job, JobResult
from amsr.runtime.upscaler import RunOptions

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module with ``ray.data``, or ``BackendUnavailableError`` naming the package to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (a plain `pip install ray` has no Ray Data dependencies)
    except ImportError as e:
        raise BackendUnavailableError(f"the Ray pipeline needs Ray Data: pip install 'ray[data]' "
                                      f"(or pip install 'amsr[ray]') ({e})") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[Any]:
    """Ray initialised for the block: reuse a running one, else ``ray.init(address, **init_kwargs)`` and shut
    it down afterwards. A local start gets no dashboard unless ``include_dashboard`` says otherwise."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    init_kwargs.setdefault("logging_level", logging.WARNING)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        init_kwargs.setdefault("include_dashboard", False)
    else:  # resources and the dashboard belong to the cluster, not to a client joining it
        init_kwargs = {k: v for k, v in init_kwargs.items() if k not in ("num_cpus", "num_gpus", "include_dashboard")}
    try:
        ray.init(address=address, **init_kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BackendUnavailableError(f"cannot start or reach Ray{f' at {address}' if address else ''}: {e}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


class UpscaleActor:
    """Ray Data callable class: one ``Upscaler`` per actor; a batch of ``src``/``dest`` rows in, status out."""

    def __init__(self, onnx_path: str, options: RunOptions) -> None:
        from amsr.runtime.upscaler import Upscaler

        self.upscaler = Upscaler.from_options(onnx_path, options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from amsr.runtime.jobs import run_job

        results = [run_job(self.upscaler, Job(Path(s), Path(d))) for s, d in zip(batch["src"], batch["dest"])]
        return {"src": np.array([str(r.src) for r in results], dtype=object),
                "dest": np.array([str(r.dest) for r in results], dtype=object),
                "error": np.array([r.error or "" for r in results], dtype=object)}


def upscale_files_ray(jobs: Sequence[Job], onnx_path: str | os.PathLike[str], options: RunOptions | None = None,
                      workers: int = 2, address: str | None = None, num_gpus_per_worker: float = 0,
                      **init_kwargs: Any) -> Iterator[JobResult]:
    """Run ``jobs`` on a pool of ``workers`` Ray actors; yields each ``JobResult`` as it completes.

    Args:
        jobs: what to do (``runtime.jobs.plan_jobs``).
        onnx_path: the exported graph (a path every node can read).
        options: per-actor ``RunOptions``; ``threads`` defaults to 1 here, and each actor reserves that many
            Ray CPUs.
        workers: actors in the pool (sessions held at once).
        address: Ray cluster address; ``None`` = ``$RAY_ADDRESS`` or a local instance.
        num_gpus_per_worker: GPUs each actor reserves (use with ``providers=("cuda",)``).
        init_kwargs: passed to ``ray.init`` when this call starts Ray (e.g. ``num_cpus=2``).

    Raises:
        BackendUnavailableError: Ray Data missing, or Ray cannot be started/reached.
    """
    if workers < 1:
        raise ValueError(f"workers must be ≥ 1, got {workers}")
    options = options or RunOptions()
    if options.threads is None:
        options = RunOptions(options.providers, 1, options.tile, options.overlap, options.per_tile_mask)
    jobs = list(jobs)
    if not jobs:
        return
    onnx_path = str(Path(onnx_path).resolve())
    with ray_session(address, **init_kwargs) as ray:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the caller shows its own progress
        ctx.verbose_stats_logs = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-execution INFO lines
        # ... and Ray Data warns once that its bars are off: that is the intent, not news for the user.
        logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
        rows = [{"src": str(j.src.resolve()), "dest": str(j.dest.resolve())} for j in jobs]
        original = {r["src"]: j for r, j in zip(rows, jobs)}
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # one image per block: balanced pool
        out = ds.map_batches(UpscaleActor, batch_size=1, fn_constructor_args=(onnx_path, options),
                             compute=ray.data.ActorPoolStrategy(size=workers),
                             num_cpus=options.threads, num_gpus=num_gpus_per_worker or None)
        for row in out.iter_rows():
            job = original[row["src"]]
            yield JobResult(job.src, job.dest, row["error"] or None)

"""File jobs for batch upscaling: which input goes to which output, and running one job.

Shared by ``amsr-upscale`` (one process, optionally several threads) and the Ray pipeline, so that both
decide skips and names the same way and write the same bytes.

Outputs are ``<out_dir>/<input stem>.png``. Two inputs with the same stem would write one file, so
``plan_jobs`` refuses them before any work starts; an output that would replace its own input is a failed job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from amsr.core.errors import AmsrError
from amsr.io.user_images import find_images, read_image, write_png
from amsr.runtime.upscaler import Upscaler

#: Exceptions that fail one file and let a batch go on: amsr's own (bad image, image too small), the
#: system's (unreadable input, full disk, no permission to write, an image too large for memory) and
#: onnxruntime's own failures of one run (``_is_onnxruntime_error``: e.g. an allocation failure on a huge image).
JOB_ERRORS = (AmsrError, OSError, MemoryError)


def _is_onnxruntime_error(e: BaseException) -> bool:
    # onnxruntime raises plain-Exception classes of its pybind module (Fail, RuntimeException, InvalidArgument,
    # ...); anything else escaping a job is a bug and keeps its traceback.
    return type(e).__module__.startswith("onnxruntime.")


@dataclass(frozen=True)
class Job:
    src: Path
    dest: Path


@dataclass(frozen=True)
class JobResult:
    """``error`` is ``None`` on success, else one line naming the input."""

    src: Path
    dest: Path
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Plan:
    """``todo``: jobs to run; ``existing``: outputs already present (skipped); ``failed``: inputs refused up front."""

    todo: list[Job] = field(default_factory=list)
    existing: list[Job] = field(default_factory=list)
    failed: list[JobResult] = field(default_factory=list)


def output_path(src: Path, out_dir: Path) -> Path:
    return out_dir / f"{src.stem}.png"


def plan_jobs(inputs: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
              overwrite: bool = False) -> Plan:
    """Expand ``inputs`` (files, and folders non-recursively: ``amsr.io.user_images.find_images``) into jobs.

    Raises:
        AmsrError: no input image at all, or two inputs that would write the same output (listed).
    """
    out_dir = Path(out_dir)
    images, missing = find_images(inputs)
    plan = Plan(failed=[JobResult(p, output_path(p, out_dir), f"{p}: no such file or folder") for p in missing])
    if not images and not missing:
        raise AmsrError("no input images found")
    by_dest: dict[Path, list[Path]] = {}
    for src in images:
        by_dest.setdefault(output_path(src, out_dir), []).append(src)
    clashes = {d: s for d, s in by_dest.items() if len(s) > 1}
    if clashes:
        d, s = next(iter(clashes.items()))
        more = f" (and {len(clashes) - 1} more clashes)" if len(clashes) > 1 else ""
        raise AmsrError(f"{', '.join(map(str, s))} would all be written to {d}{more}; "
                        "rename them or upscale them into different --out folders")
    for dest, (src,) in by_dest.items():
        job = Job(src, dest)
        if dest.exists() and dest.resolve() == src.resolve():
            plan.failed.append(JobResult(src, dest, f"{src}: the output would replace the input; choose another --out"))
        elif dest.exists() and not overwrite:
            plan.existing.append(job)
        else:
            plan.todo.append(job)
    return plan


def run_job(upscaler: Upscaler, job: Job, progress: Callable[[float], None] | None = None) -> JobResult:
    """Read, upscale and write (atomically) one file; a user-level failure is returned, not raised.
    ``progress``: as ``Upscaler.__call__``'s (per tile)."""
    try:
        image = read_image(job.src)
        write_png(job.dest, upscaler(image) if progress is None else upscaler(image, progress=progress))
    except Exception as e:
        if not isinstance(e, JOB_ERRORS) and not _is_onnxruntime_error(e):
            raise
        msg = str(e) if isinstance(e, AmsrError) else f"{type(e).__name__}: {e}"
        if str(job.src) not in msg:
            msg = f"{job.src}: {msg}"
        return JobResult(job.src, job.dest, msg.splitlines()[0] if msg else str(job.src))
    return JobResult(job.src, job.dest)

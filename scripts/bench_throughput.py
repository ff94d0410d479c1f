"""Images per second of file-to-file upscaling: one process vs Ray Data with N actors, dense vs AMSR graphs.

    python scripts/bench_throughput.py --data ../shared/data/Set14/x4/LR --model carn_m --scale 4 --workers 2

Each configuration reads every image, upscales it and writes the PNG (the amsr-upscale work), into a fresh
temporary folder. Graphs come from the export cache (``Upscaler.from_model``); export time is not measured.

Reported per configuration (JSON on stdout, and --json FILE):
- ``wall_s`` / ``images_per_s``: end to end, including session creation (and, for Ray, the actor pool
  start-up; the ``ray.init`` of the local instance is reported once as ``ray_init_s``);
- ``steady_images_per_s``: after start-up: one process, the loop without session creation; Ray, the images
  completed after the first one over the time since the first one completed;
- ``identical_to_single``: Ray's files are byte-identical to the one-process files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from amsr.core.files import save_bytes
from amsr.io.user_images import find_images
from amsr.runtime.jobs import Job, run_job
from amsr.runtime.upscaler import RunOptions, Upscaler, exported_model_path


def _single(jobs: list[Job], onnx: Path, options: RunOptions) -> dict[str, Any]:
    t0 = time.perf_counter()
    upscaler = Upscaler.from_options(onnx, options)
    t1 = time.perf_counter()
    failed = sum(not run_job(upscaler, j).ok for j in jobs)
    t2 = time.perf_counter()
    n = len(jobs)
    return {"mode": "single", "threads": options.threads, "images": n, "failed": failed,
            "session_s": round(t1 - t0, 3), "wall_s": round(t2 - t0, 3), "images_per_s": round(n / (t2 - t0), 3),
            "steady_images_per_s": round(n / (t2 - t1), 3)}


def _ray(jobs: list[Job], onnx: Path, options: RunOptions, workers: int) -> dict[str, Any]:
    from amsr.runtime.ray_pipeline import upscale_files_ray

    t0 = time.perf_counter()
    done: list[float] = []
    failed = 0
    for r in upscale_files_ray(jobs, onnx, options, workers=workers):
        done.append(time.perf_counter())
        failed += not r.ok
    n = len(jobs)
    steady = (n - 1) / (done[-1] - done[0]) if n > 1 and done[-1] > done[0] else None
    return {"mode": "ray", "workers": workers, "threads_per_worker": options.threads, "images": n, "failed": failed,
            "first_image_s": round(done[0] - t0, 3), "wall_s": round(done[-1] - t0, 3),
            "images_per_s": round(n / (done[-1] - t0), 3),
            "steady_images_per_s": round(steady, 3) if steady else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="folder of input images")
    p.add_argument("--model", default="carn_m")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--dilation", type=int, default=None, help="AMSR mask dilation (default: MaskConfig's)")
    p.add_argument("--weights", type=Path)
    p.add_argument("--limit", type=int, help="use the first N images only")
    p.add_argument("--workers", type=int, default=2, help="Ray actors (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="onnxruntime threads of the one-process run (default: all cores)")
    p.add_argument("--ray-threads", type=int, default=1, help="onnxruntime threads per Ray actor (default 1)")
    p.add_argument("--tile", type=int, default=0, help="tile side (0: whole images)")
    p.add_argument("--kinds", default="dense,accelerated")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)

    sources = find_images([args.data])[0][: args.limit]
    if not sources:
        p.error(f"no images in {args.data}")
    graphs = {kind: exported_model_path(args.model, args.scale, dilation=args.dilation,
                                        accelerated=kind == "accelerated", weights=args.weights)
              for kind in args.kinds.split(",")}
    tile = args.tile or None
    report: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
        "model": args.model, "scale": args.scale, "data": str(args.data), "images": len(sources), "tile": tile,
        "graphs": {k: str(v) for k, v in graphs.items()}, "runs": []}

    from amsr.runtime.ray_pipeline import ray_session

    t = time.perf_counter()
    with ray_session(None, num_cpus=os.cpu_count()), tempfile.TemporaryDirectory(prefix="amsr-bench-") as tmp:
        report["ray_init_s"] = round(time.perf_counter() - t, 3)
        for kind, onnx in graphs.items():
            out_single, out_ray = Path(tmp) / f"{kind}-single", Path(tmp) / f"{kind}-ray"
            single = _single([Job(s, out_single / f"{s.stem}.png") for s in sources], onnx,
                             RunOptions(threads=args.threads, tile=tile))
            ray_run = _ray([Job(s, out_ray / f"{s.stem}.png") for s in sources], onnx,
                           RunOptions(threads=args.ray_threads, tile=tile), args.workers)
            ray_run["identical_to_single"] = all(
                (out_ray / f"{s.stem}.png").read_bytes() == (out_single / f"{s.stem}.png").read_bytes()
                for s in sources)
            for run in (single, ray_run):
                report["runs"].append({"kind": kind, **run})
                print(f"{kind:12} {run['mode']:6} {run['images_per_s']:7.2f} img/s end to end, "
                      f"{run['steady_images_per_s']} img/s steady", file=sys.stderr)
    report["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        save_bytes(args.json, (text + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())

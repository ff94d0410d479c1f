"""The GPU speed study (results/README.md §5): ``amsr-bench --backend pytorch --device cuda`` on the zoo models, Set14 and
larger images, plus the single-layer kernel study (``bench_kernel_gpu.py``). Meant for a lent NVIDIA machine:
one process runs everything (no start-up per benchmark) and keeps going past a failing run.

    AMSR_WEIGHTS_DIR=... AMSR_DATA_DIR=... python scripts/bench_gpu.py --out results/bench/gpu [--big DIR]

``--big``: a folder of larger LR images (default ``$AMSR_DATA_DIR/big``, e.g. BSD200 photos used as LR).
``--pack FILE``: after each run, tar the results folder into FILE (so a time-limited session keeps what ran).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import time
import traceback
from pathlib import Path

from amsr.core import paths
from amsr.cli.bench import main as bench_main

THR = ["--window-threshold", "0.5", "--dilation", "1"]
DEFAULT = ["--operating-point", "default"]


def runs(data: Path, big: Path) -> list[tuple[str, list[str]]]:
    s14 = {2: data / "Set14" / "x2", 4: data / "Set14" / "x4"}
    out: list[tuple[str, list[str]]] = []
    for model, scale, strategies, mask, tag in [
        ("carn_m", 4, ("pixel", "tile"), DEFAULT, "default"),
        ("pan", 4, ("pixel", "tile"), DEFAULT, "default"),
        ("imdn", 4, ("pixel", "tile"), DEFAULT, "default"),
        ("carn_m", 4, ("pixel",), ["--dilation", "1"], "d1"),
        ("imdtn", 4, ("pixel",), DEFAULT, "default"),
        ("imdtn", 4, ("pixel",), THR, "thr0.5_d1"),
        ("ngswin", 2, ("pixel",), THR, "thr0.5_d1"),
        ("hit_srf", 4, ("pixel",), THR, "thr0.5_d1"),
    ]:
        for strategy in strategies:
            name = "windows" if model in ("imdtn", "ngswin", "hit_srf") else strategy
            for where, folder, limit in (("set14", s14[scale], None), ("big", big, 4)):
                args = ["--model", model, "--scale", str(scale), "--data", str(folder), "--strategy", strategy,
                        "--tile", "8", *mask]
                if limit:
                    args += ["--limit", str(limit)]
                out.append((f"{model}_x{scale}_{where}_{tag}_{name}", args))
    # Set14 first for every model, then the larger images
    return sorted(out, key=lambda r: "big" in r[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--big", type=Path, default=None)
    p.add_argument("--pack", type=Path, default=None)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--only", nargs="+", default=None, help="run only benchmarks whose name contains one of these")
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only to check this script")
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = paths.data_dir()
    big = args.big or data / "big"

    def pack() -> None:
        if args.pack:
            with tarfile.open(args.pack, "w:gz") as t:
                t.add(args.out, arcname=args.out.name)

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv"], capture_output=True, text=True, check=False)
        (args.out / "nvidia_smi.txt").write_text(smi.stdout + smi.stderr)
    except OSError as e:
        print(f"nvidia-smi: {e}", flush=True)
    todo = [("kernel", None)] + runs(data, big)
    for name, bench_args in todo:
        if args.only and not any(o in name for o in args.only):
            continue
        t0 = time.time()
        try:
            if bench_args is None:
                image = sorted(big.iterdir())[0]
                rc = subprocess.run([sys.executable, str(Path(__file__).with_name("bench_kernel_gpu.py")),
                                     "--image", str(image), "--json", str(args.out / "kernel.json"),
                                     "--device", args.device],
                                    check=False).returncode
            else:
                rc = bench_main([*bench_args, "--backend", "pytorch", "--device", args.device, "--warmup", str(args.warmup),
                                 "--repeats", str(args.repeats), "--json", str(args.out / f"{name}.json")])
        except Exception:  # keep going: one broken run must not lose the others
            traceback.print_exc()
            rc = -1
        print(f"== {name}: rc {rc} in {time.time() - t0:.1f} s", flush=True)
        pack()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

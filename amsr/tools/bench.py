"""Speed benchmark: dense vs accelerated on the same images in the same run (``amsr-bench``).

Protocol: every model/session is warmed up on every image, then ``repeats`` rounds; within a round each image
is run dense, mask-only and accelerated back to back (interleaved; the order reversed every other round), so
that the load of a shared machine hits all variants alike. Per image the median over rounds is kept; totals are sums of per-image medians and
``ratio = Σ amsr / Σ dense``. Per image also ``ratio_paired``: the median over rounds of that round's amsr /
dense (and its quartiles), which a slow spell of the machine moves less.

Strategies (how the accelerated network runs its masked convs):

- ``pixel``: ``MaskedConv2d`` / ``GatherScatterConv2d`` — gather the 3×3 taps of each masked-in pixel.
- ``tile``: ``amsr.sparse.tiles`` — gather active T×T tiles with a 1-px halo, dense conv on the batch.
- ``rows``: ``amsr.rows`` — the network on the rows of its active pixels, end to end (CARN / CARN-M with an
  output blend; other models have no row program).
- ``auto``: per image, from the mask, as the product chooses (``amsr.sparse.auto``). A row program runs
  under the whole-image masks (graph inputs, so the mask is computed once) and window selection runs where the
  mask density is at most ``amsr.sparse.auto.DENSE_ABOVE_DENSITY`` of that execution, otherwise the dense
  network after the mask stage. Else (``tile``) the active tile fraction ``f`` decides: ``f ≤ break_even``
  runs the tile network under the mask, otherwise the dense network. Dense is never slower than dense beyond
  the mask stage, and its effective GMACs are the dense ones.
  ``break_even`` is the tile fraction at which the tile network's masked stages cost as much as the dense
  convs they replace: ``f* = (t_dense_convs − t_fixed) / t_dense_convs`` with ``t_fixed`` the per-stage
  gather/scatter/transposes at f → 0 (measured per model with the ORT profiler: the descriptor's
  ``SparseRules.tile_break_even``; 0.5 where not measured).

GMACs are counted in PyTorch from the realised mask (``amsr.core.cost``), the tile path counting whole tiles.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from amsr.core import paths
from amsr.core.cost import run_counting_macs
from amsr.core.errors import AmsrError
from amsr.io.images import lr_images, read_rgb8, to_tensor
from amsr.masking.mask import MaskConfig, MaskGenerator
from amsr.models import LoadedModel, unwrap_accelerated
from amsr.sparse.pixel import MaskedConv2d
from amsr.sparse.auto import dense_above
from amsr.rows import row_program
from amsr.sparse.tiles import DEFAULT_TILE, active_tile_fraction, to_tiles
from amsr.zoo.descriptor import SparseRules

if TYPE_CHECKING:
    from amsr.export.cache_key import ExportKey

log = logging.getLogger(__name__)

STRATEGIES = ("auto", "pixel", "tile", "rows")
# PyTorch on CUDA (measured on an H200, results/bench/gpu): the tile network was slower than dense for every
# CNN (CARN-M, PAN, IMDN) at every mask measured (ratio 2.4–16), and one tile conv costs 0.95–2.1× the dense
# cuDNN conv even at 20 % density: auto runs the dense network on a GPU.
CUDA_BREAK_EVEN = -1.0


def default_break_even(rules: SparseRules, device_type: str) -> float:
    """The active-tile fraction above which ``auto`` runs the dense network, for an architecture (its
    descriptor's ``SparseRules.tile_break_even``, measured on onnxruntime CPU) on a device type."""
    if device_type == "cuda":
        return CUDA_BREAK_EVEN
    return rules.tile_break_even


@dataclass
class Variants:
    """The PyTorch modules of one benchmark: dense, accelerated (pixel or tile), mask generator."""

    dense: torch.nn.Module
    amsr: torch.nn.Module
    mask: MaskGenerator
    tile_net: torch.nn.Module | None = None  # tile network (auto strategy)
    path: str = "pixel"  # what ``amsr`` runs: pixel, tile, rows or windows (no masked convs)
    extra: dict[str, Any] = field(default_factory=dict)


def has_masked_convs(net: torch.nn.Module) -> bool:
    """Whether ``net`` runs masked convs (CNNs); transformers select windows instead and have none."""
    return any(isinstance(m, MaskedConv2d) for m in net.modules())


def build_variants(model: LoadedModel, config: MaskConfig, strategy: str, tile: int,
                   sparse_tail: bool = True) -> Variants:
    """Dense, accelerated and mask modules. Models without masked convs (window selection) run their
    accelerated network as it is under every strategy but ``tile``, which has nothing to tile there."""
    acc = model.accelerated(config, sparse_tail=sparse_tail)
    gen = next(m for m in acc.modules() if isinstance(m, MaskGenerator))
    if not has_masked_convs(acc):
        if strategy == "tile":
            raise AmsrError(f"{model.arch.id} has no masked convs to run in tiles (it selects attention "
                            "windows): use --strategy auto or pixel")
        return Variants(model.dense(), acc, gen, path="windows")
    if strategy in ("rows", "auto"):
        program = row_program(unwrap_accelerated(acc))
        if program is not None:
            return Variants(model.dense(), program, gen, path="rows")
        if strategy == "rows":
            raise AmsrError(f"{model.arch.id} has no row program (CARN / CARN-M with an output blend, e.g. "
                            "--operating-point default): use --strategy auto, pixel or tile")
    if strategy == "pixel":
        return Variants(model.dense(), acc, gen)
    tiled = to_tiles(acc, tile)
    return Variants(model.dense(), tiled, gen, tile_net=tiled, path="tile")


def _median_ms(samples: list[float]) -> float:
    return float(statistics.median(samples)) * 1e3


def _quartiles(samples: list[float]) -> tuple[float, float]:
    """(25th, 75th) percentile; both the sample itself when there is one."""
    if len(samples) < 2:
        return samples[0], samples[0]
    q = statistics.quantiles(samples, n=4, method="inclusive")
    return q[0], q[2]


def _timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> float:
    """Wall-clock seconds of ``fn()``; ``sync`` waits for queued GPU work (before and after)."""
    if sync:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - t0


def check_device(device: str, backend: str) -> torch.device:
    """The torch device of a benchmark; CUDA only for the PyTorch backend and only when PyTorch sees a GPU."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise AmsrError(f"unknown device {device!r} (cpu or cuda[:N])") from None
    if dev.type not in ("cpu", "cuda"):
        raise AmsrError(f"unknown device {device!r} (cpu or cuda[:N])")
    if dev.type == "cuda":
        if backend != "pytorch":
            raise AmsrError("--device cuda needs --backend pytorch (the onnxruntime bench runs the CPU provider)")
        if not torch.cuda.is_available():
            raise AmsrError("--device cuda: PyTorch sees no CUDA GPU (torch.cuda.is_available() is False)")
    return dev


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    import platform

    return f"CPU {platform.machine()} ({platform.processor() or 'unknown'})"


def summarise_profile(path: str | Path, runs: int) -> dict[str, Any]:
    """Per-run milliseconds of an onnxruntime profile, by op type and by stage (``mask``, ``sparse_conv``, rest)."""
    events = json.loads(Path(path).read_text())
    by_op: dict[str, float] = defaultdict(float)
    by_stage: dict[str, float] = defaultdict(float)
    sparse_by_op: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        ms = float(e.get("dur", 0)) / 1e3 / max(1, runs)
        op = e.get("args", {}).get("op_name", "?")
        name = e["name"]
        stage = name.split("/")[0] if "/" in name else "network"
        if stage.startswith("sparse_conv_"):
            stage = "sparse_conv"
            sparse_by_op[op] += ms
        elif stage not in ("mask",):
            stage = "network"
        by_op[op] += ms
        by_stage[stage] += ms

    def r(d: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted(d.items(), key=lambda kv: -kv[1])}

    return {"total_ms": round(sum(by_op.values()), 3), "by_stage_ms": r(by_stage), "by_op_ms": r(by_op),
            "sparse_conv_by_op_ms": r(sparse_by_op)}


class _Ort:
    """The exported graphs of one benchmark in onnxruntime sessions."""

    def __init__(self, paths: dict[str, Path], threads: int) -> None:
        import onnx
        import onnx_graphsurgeon as gs

        from amsr.export.passes import extract_mask_subgraph, mask_as_input
        from amsr.runtime.onnxrt import import_onnxruntime

        self.ort = import_onnxruntime()
        self.threads = threads
        self.paths = paths
        self.sessions = {k: self._session(p.read_bytes()) for k, p in paths.items()}
        amsr_graph = onnx.load(str(paths["amsr"]))
        g = gs.import_onnx(amsr_graph)
        self.mask_bytes = gs.export_onnx(extract_mask_subgraph(g)).SerializeToString()
        # The mask session runs right before another session, so it must not spin-wait (``session_options``;
        # measured: +35 ms per Set14 image on 2 cores, CARN-M auto → dense).
        self.sessions["mask"] = self._session(self.mask_bytes, spin=False)
        if "tile" in paths or "rows" in paths:  # the auto strategy's graph under the whole-image masks
            g = gs.import_onnx(onnx.load(str(paths.get("tile", paths.get("rows")))))
            self.sessions["masked"] = self._session(gs.export_onnx(mask_as_input(g)).SerializeToString())

    def _session(self, model: bytes, profile_prefix: str | None = None, spin: bool = True) -> Any:
        from amsr.runtime.onnxrt import session_options

        o = session_options(self.ort, self.threads, spin)
        if profile_prefix:
            o.enable_profiling = True
            o.profile_file_prefix = profile_prefix
        return self.ort.InferenceSession(model, sess_options=o, providers=["CPUExecutionProvider"])

    def run(self, key: str, x: np.ndarray, masks: dict[str, np.ndarray] | None = None) -> np.ndarray:
        feeds = {"lr": x} if masks is None else {"lr": x, **masks}
        return self.sessions[key].run(None, feeds)[0]

    def masks(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every mask of the graph (``export.passes.mask_tensors``), by name, from the mask session."""
        s = self.sessions["mask"]
        names = [o.name for o in s.get_outputs()]
        return dict(zip(names, s.run(names, {"lr": x}), strict=True))

    def profile(self, key: str, model: bytes, images: list[np.ndarray], workdir: Path,
                masks: list[np.ndarray] | None = None) -> dict[str, Any]:
        s = self._session(model, str(workdir / f"ort_profile_{key}"))
        for x in images:
            s.run(None, {"lr": x} if masks is None else {"lr": x, **self.masks(x)})
        path = s.end_profiling()
        try:
            return summarise_profile(path, len(images))
        finally:
            Path(path).unlink(missing_ok=True)


def export_variants(model: LoadedModel, config: MaskConfig, tile: int, cache: Path, v: Variants) -> dict[str, Path]:
    """Export (or reuse from ``cache``) the dense and accelerated graphs of this benchmark.

    Entries are named and verified by ``amsr.export.cache_key`` (the scheme of ``Upscaler.from_model``'s cache): model,
    variant, scale, checkpoint sha256, every mask setting, opset and toolchain, plus the tile size for the tile
    network, which is another graph than the pixel one. A damaged entry is exported again.
    """
    from amsr.export.cache_key import cached_export, export_key
    from amsr.export.onnx_export import export_onnx
    from amsr.runtime.export_check import onnxruntime_check

    def key(cfg: MaskConfig | None, tile_size: int | None = None, execution: str | None = None) -> ExportKey:
        return export_key(model.arch.id, model.scale, model.weights, cfg, variant=model.variant, tile=tile_size,
                          execution=execution)

    # The pixel path of a model that has a row program is another graph of the same settings.
    stages = v.path == "pixel" and row_program(unwrap_accelerated(v.amsr)) is not None
    keys = {"dense": key(None), "amsr": key(config, None if v.tile_net is None else tile,
                                            "stages" if stages else None)}
    files: dict[str, Path] = {}
    for name, mod in (("dense", v.dense), ("amsr", v.amsr)):
        def export(dest: Path, mod: torch.nn.Module = mod, name: str = name) -> None:
            log.info("exporting %s to %s", name, dest)
            export_onnx(mod, dest, rows=not stages, verify=onnxruntime_check)

        files[name] = cached_export(cache / keys[name].file_name, keys[name], export)
    if v.tile_net is not None:
        files["tile"] = files["amsr"]
    if v.path == "rows":
        files["rows"] = files["amsr"]
    return files


def default_cache() -> Path:
    """Where amsr-bench keeps its exported graphs: ``<amsr cache>/bench`` (``amsr.core.paths.cache_dir``)."""
    return paths.cache_dir() / "bench"


@dataclass(frozen=True)
class BenchSpec:
    """What ``run_bench`` measures and how (``amsr-bench``'s options).

    ``device`` (PyTorch backend): ``cpu`` or ``cuda``; on CUDA every timed call is bracketed by a device
    synchronisation. ``operating_point``: where ``config`` came from, copied into the report. ``sparse_tail``:
    with an output blend, run the tail convs sparsely (default) or densely (PyTorch backend; the exported
    graph always computes the tail densely). ``break_even``: overrides the density/tile fraction above which
    ``auto`` runs dense. ``limit``: the first N images only."""

    backend: str = "onnxruntime"
    threads: int = 2
    config: MaskConfig | None = None
    strategy: str = "auto"
    tile: int = DEFAULT_TILE
    warmup: int = 1
    repeats: int = 5
    limit: int | None = None
    cache: Path | None = None
    profile: bool = True
    break_even: float | None = None
    workdir: Path | None = None
    device: str = "cpu"
    operating_point: dict[str, Any] | None = None
    sparse_tail: bool = True


@dataclass(frozen=True)
class ImageBench:
    """One image of a bench report: its mask, the path ``auto`` took, effective GMACs and median times."""

    image: str
    size: tuple[int, int]
    density: float
    tile_fraction: float
    path: str
    dense_gmacs: float
    amsr_gmacs: float
    dense_ms: float
    mask_ms: float
    amsr_ms: float
    ratio: float
    ratio_paired: float
    ratio_quartiles: tuple[float, float]
    gmacs_ratio: float


@dataclass(frozen=True)
class BenchReport:
    """What ``run_bench`` measured; ``to_json()`` is ``amsr-bench --json``'s contract (per-image rows under
    ``per_image``, ``profile`` only when onnxruntime profiled)."""

    model: str
    scale: int
    backend: str
    strategy: str
    tile: int | None
    tile_impl: str | None
    break_even: float | None
    path: str
    threads: int
    device: str
    torch: str
    images: int
    data: str
    mask_config: dict[str, Any]
    operating_point: dict[str, Any] | None
    sparse_tail: bool
    warmup: int
    repeats: int
    dense_ms: float
    amsr_ms: float
    mask_ms: float
    ratio: float
    gmacs_ratio: float
    mask_share_of_dense: float
    dense_gmacs: float
    amsr_gmacs: float
    density: float
    tile_fraction: float
    per_image: list[ImageBench]
    profile: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        if out["profile"] is None:
            del out["profile"]
        return out


def run_bench(model: LoadedModel, data: Path, spec: BenchSpec = BenchSpec(),
              progress: Callable[[str, int, int], None] | None = None) -> BenchReport:
    """Benchmark ``model`` dense vs accelerated on the LR images of ``data``, as ``spec`` says.

    ``progress(phase, done, total)`` is called as each phase starts (``masks``, ``export``, ``warmup``,
    ``timing``, ``profile``) and after each image of it, outside the timed calls; ``done`` of ``total`` counts
    image steps over the whole run (one per image in ``masks``, per image and round in ``warmup`` and
    ``timing``).
    """
    backend, threads, strategy, tile = spec.backend, spec.threads, spec.strategy, spec.tile
    warmup, repeats, cache, break_even = spec.warmup, spec.repeats, spec.cache, spec.break_even
    sparse_tail = spec.sparse_tail
    if strategy not in STRATEGIES:
        raise AmsrError(f"unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)})")
    if backend not in ("onnxruntime", "pytorch"):
        raise AmsrError(f"unknown backend {backend!r} (onnxruntime or pytorch)")
    dev = check_device(spec.device, backend)
    config = spec.config or MaskConfig()
    # The exported graph computes the tail densely (export/exportable.py): count what it computes.
    sparse_tail = sparse_tail and backend == "pytorch"
    be = break_even if break_even is not None else default_break_even(model.arch.rules, dev.type)
    rows_be = break_even if break_even is not None else dense_above("rows")
    windows_be = break_even if break_even is not None else dense_above("windows")
    paths_img = lr_images(data)[: spec.limit or None]
    xs = [to_tensor(read_rgb8(p)).to(dev) for p in paths_img]
    total, done = len(xs) * (1 + warmup + repeats), 0

    def step(phase: str, images: int = 0) -> None:
        nonlocal done
        done += images
        if progress is not None:
            progress(phase, done, total)

    torch.set_num_threads(threads)
    v = build_variants(model, config, strategy, tile, sparse_tail=sparse_tail)
    for mod in (v.dense, v.amsr, v.mask):
        mod.to(dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else None

    # Masks, choice and effective GMACs from PyTorch (the exported graphs compute the same masks).
    rows: list[dict[str, Any]] = []
    step("masks")
    with torch.no_grad():
        for p, x in zip(paths_img, xs):
            m = v.mask(x)
            f_tile = active_tile_fraction(m, tile)
            _, dense_macs = run_counting_macs(v.dense, x)
            if v.path in ("rows", "windows"):
                use_dense = strategy == "auto" and float(m.mean()) > (rows_be if v.path == "rows" else windows_be)
            else:
                use_dense = strategy == "auto" and v.tile_net is not None and f_tile > be
            amsr_macs = dense_macs if use_dense else run_counting_macs(v.amsr, x)[1]
            rows.append({"image": p.name, "size": (int(x.shape[-2]), int(x.shape[-1])),
                         "density": round(float(m.mean()), 4), "tile_fraction": round(f_tile, 4),
                         "path": "dense" if use_dense else v.path,
                         "dense_gmacs": dense_macs / 1e9, "amsr_gmacs": amsr_macs / 1e9, "_mask": m})
            step("masks", 1)

    times: dict[str, list[list[float]]] = {k: [[] for _ in xs] for k in ("dense", "mask", "amsr")}
    prof: dict[str, Any] = {}
    if backend == "onnxruntime":
        cache = cache or default_cache()
        step("export")
        ort = _Ort(export_variants(model, config, tile, cache, v), threads)
        arrays = [x.cpu().numpy() for x in xs]

        def amsr_call(i: int) -> Callable[[], Any]:
            if strategy == "auto" and rows[i]["path"] == "dense":
                if v.path == "tile" and be < 0:  # as the product's stage graphs: dense, no mask (amsr.sparse.auto)
                    return lambda: ort.run("dense", arrays[i])
                return lambda: (ort.run("mask", arrays[i]), ort.run("dense", arrays[i]))  # mask stage, then dense
            if strategy != "auto" or v.path == "windows" or (v.tile_net is None and v.path != "rows"):
                return lambda: ort.run("amsr", arrays[i])
            return lambda: ort.run("masked", arrays[i], ort.masks(arrays[i]))

        calls = {"dense": lambda i: (lambda: ort.run("dense", arrays[i])),
                 "mask": lambda i: (lambda: ort.run("mask", arrays[i])), "amsr": amsr_call}
    else:
        def torch_call(mod: torch.nn.Module, x: torch.Tensor) -> Callable[[], Any]:
            def f() -> Any:
                with torch.no_grad():
                    return mod(x)
            return f

        def amsr_torch(i: int) -> Callable[[], Any]:
            if strategy == "auto" and rows[i]["path"] == "dense":
                if v.path == "tile" and be < 0:
                    return torch_call(v.dense, xs[i])
                return lambda: (torch_call(v.mask, xs[i])(), torch_call(v.dense, xs[i])())
            return torch_call(v.amsr, xs[i])

        calls = {"dense": lambda i: torch_call(v.dense, xs[i]), "mask": lambda i: torch_call(v.mask, xs[i]),
                 "amsr": amsr_torch}

    fns = {k: [calls[k](i) for i in range(len(xs))] for k in calls}
    step("warmup")
    for _ in range(warmup):
        for i in range(len(xs)):
            for k in ("dense", "mask", "amsr"):
                fns[k][i]()
            step("warmup", 1)
    step("timing")
    for round_ in range(repeats):
        # ABBA order: a call right after another of the same session finds its threads awake, so the order
        # alternates per round instead of always favouring the same variant.
        order = ("dense", "mask", "amsr") if round_ % 2 == 0 else ("amsr", "mask", "dense")
        for i in range(len(xs)):
            for k in order:
                times[k][i].append(_timed(fns[k][i], sync))
            step("timing", 1)

    if backend == "onnxruntime" and spec.profile:
        step("profile")
        assert cache is not None  # set in the onnxruntime branch above
        wd = spec.workdir or cache
        prof["dense"] = ort.profile("dense", ort.paths["dense"].read_bytes(), arrays, wd)
        prof["amsr"] = ort.profile("amsr", ort.paths["amsr"].read_bytes(), arrays, wd)

    for i, r in enumerate(rows):
        del r["_mask"]
        for k in ("dense", "mask", "amsr"):
            r[f"{k}_ms"] = round(_median_ms(times[k][i]), 3)
        r["ratio"] = round(r["amsr_ms"] / r["dense_ms"], 4)
        # The same ratio per timed round (amsr and dense adjacent in time), then its median and quartiles: a
        # slow spell of this shared machine hits both calls of a round, so the paired median is the steadier
        # per-image figure. CARN-M Set14 (15 rounds, every image dense + a 1 % mask) had ratio 0.93–1.11.
        paired = sorted(a / d for a, d in zip(times["amsr"][i], times["dense"][i]))
        r["ratio_paired"] = round(float(statistics.median(paired)), 4)
        r["ratio_quartiles"] = tuple(round(float(q), 4) for q in _quartiles(paired))
        r["gmacs_ratio"] = round(r["amsr_gmacs"] / r["dense_gmacs"], 4)
    dense_ms = sum(r["dense_ms"] for r in rows)
    amsr_ms = sum(r["amsr_ms"] for r in rows)
    mask_ms = sum(r["mask_ms"] for r in rows)
    dg, ag = sum(r["dense_gmacs"] for r in rows), sum(r["amsr_gmacs"] for r in rows)
    per_image = [ImageBench(**r) for r in rows]
    return BenchReport(
        model=model.arch.id, scale=model.scale, backend=backend, strategy=strategy,
        tile=tile if v.tile_net is not None else None,
        tile_impl=None if v.tile_net is None else "v2: one Pad+Transpose per stage, scatter into the padded map",
        break_even={"rows": rows_be, "windows": windows_be}.get(v.path, be) if strategy == "auto" and (
            v.tile_net is not None or v.path in ("rows", "windows")) else None, path=v.path,
        threads=threads, device=device_name(dev), torch=torch.__version__,
        images=len(rows), data=str(data), mask_config=config.to_json(), operating_point=spec.operating_point,
        sparse_tail=sparse_tail and config.output_dilation is not None, warmup=warmup, repeats=repeats,
        dense_ms=round(dense_ms, 3), amsr_ms=round(amsr_ms, 3), mask_ms=round(mask_ms, 3),
        ratio=round(amsr_ms / dense_ms, 4), gmacs_ratio=round(ag / dg, 4),
        mask_share_of_dense=round(mask_ms / dense_ms, 4),
        dense_gmacs=round(dg / len(rows), 4), amsr_gmacs=round(ag / len(rows), 4),
        density=round(sum(r["density"] for r in rows) / len(rows), 4),
        tile_fraction=round(sum(r["tile_fraction"] for r in rows) / len(rows), 4),
        per_image=per_image, profile=prof or None)

"""Run an exported amsr graph with onnxruntime: whole images or large images in overlapping tiles.

``OrtSessionFromOnnx`` is a Polygraphy loader (lazy, ``<Output>From<Input>``, usable inside
``OnnxrtRunner``) that adds what Polygraphy's ``SessionFromOnnx`` lacks: a thread count and amsr's provider
rules. ``OrtUpscaler`` wraps one session for inference.

Providers: ``None`` → CPU only (the default: deterministic, always there); ``"auto"`` → TensorRT, CUDA, CPU,
whichever this onnxruntime build has, in that order; or a list of names/aliases (``"cpu"``, ``"cuda"``,
``"tensorrt"`` or full EP names). A requested provider the build lacks is an error, not a quiet fallback.

Tiling (``tiles``, ``upscale_tiled``): the LR image is cut into a grid of near-equal tiles of at most ``tile``
px; each tile is run with ``overlap`` px of real image context on every inner side and the context is cropped
from the output. A dense network gives the whole-image result once ``overlap`` ≥ its receptive radius (CARN-M x4:
21 LR px, bit-identical on Set14 at 24 px; at the default 16 px the difference is ≤ 2e-5, far below one
8-bit level).

Accelerated networks: the mask is a whole-image decision (2-means over the image's high-frequency map), and
a tile computing its own mask picks its own threshold: on Set14 x4 with 64-px tiles that moved Y-PSNR by up
to 0.45 dB and changed pixels by up to 1.1. So by default the mask is computed once on the whole image (the
graph's mask stage alone, ``extract_mask_subgraph``) and each tile runs the sparse network with its crop of
that mask (``mask_as_input``): the same result as an untiled run, under the same overlap rule as dense.
``per_tile_mask=True`` restores the per-tile masks (different output); graphs whose mask is computed after
size padding (``amsr.mask_size`` = ``padded``) always use them, with a warning.

Memory of the whole-image mask: the mask stage runs in two parts (``mask_head`` / ``mask_tail``). The head,
the high-frequency map ``mean_c |x − G(x)|``, is per pixel and reaches as far as the blur radius, so it runs
in horizontal bands of ``MASK_BAND_PX`` LR px with that many rows of halo (equal to the whole-image run bit
for bit: tests/runtime/test_tiled_memory.py); only the tail (the 2-means, a global decision, and the
dilations) runs on the whole image, on the one-channel map. On a 4000×3000 LR photo (CARN-M x4 default) the
mask stage's peak above its float32 input fell from 335 to 243 MB: the three-channel blur intermediates are
gone; the one-channel map, the 2-means' temporaries and the two masks remain.

Every session runs without onnxruntime's memory pattern (``session_options``), which planned a second block
for a repeated tile shape beside the arena (CARN-M x4 default, 512-px tiles: peak RSS 5.3 → 3.5 GB).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from amsr.core.errors import AmsrError, BackendUnavailableError, CheckpointError, InputImageError, UnsupportedModelError
from amsr.runtime.tiling import Tile, TileRun, assemble, context, iter_tiles, tile_bounds

try:  # pure Python and shipped with the same extra as onnxruntime; onnxruntime itself is imported lazily
    from polygraphy import util as pg_util
    from polygraphy.backend.base import BaseLoader
except ImportError as e:
    raise BackendUnavailableError("polygraphy is not installed: pip install polygraphy") from e

log = logging.getLogger(__name__)

#: LR px per band of the mask head (``masks``): the default tile's 512², so each three-channel float32
#: intermediate of the head is 3 MB, far below one tile's working set (CARN-M x4 at 512 px: ≈ 4.5 GB).
MASK_BAND_PX = 512 * 512

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
AUTO_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or ``BackendUnavailableError`` naming the package to install."""
    try:
        import onnxruntime
    except ImportError:
        raise BackendUnavailableError("onnxruntime is not installed: pip install onnxruntime "
                                      "(or onnxruntime-gpu for the CUDA/TensorRT providers)") from None
    return onnxruntime


def parse_providers(spec: str | None) -> str | tuple[str, ...] | None:
    """A command line's ``--providers`` (comma-separated names or aliases, ``auto``, ``cpu``) as what
    ``resolve_providers`` takes: ``None`` (CPU) for no spec or ``cpu`` alone, ``"auto"``, else the names."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    if not names or [n.lower() for n in names] == ["cpu"]:
        return None
    if [n.lower() for n in names] == ["auto"]:
        return "auto"
    return tuple(names)


def resolve_providers(providers: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Execution provider names for ``providers`` (see module docstring) given the ``available`` ones."""
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str) and providers.lower() == "auto":
        return [p for p in AUTO_PROVIDERS if p in available]
    names = [providers] if isinstance(providers, str) else list(providers)
    resolved = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        match = next((a for a in available if a.lower() == full.lower()), None)
        if match is None:
            raise BackendUnavailableError(f"onnxruntime execution provider {name!r} is not available in this "
                                          f"build (available: {', '.join(available)}); for CUDA/TensorRT "
                                          "install onnxruntime-gpu")
        resolved.append(match)
    return resolved


def session_options(ort: Any, threads: int | None = None, spin: bool = True, mem_pattern: bool = True) -> Any:
    """``ort.SessionOptions`` with ``threads`` intra-op threads (one inter-op; ``None``: onnxruntime's
    choice) and, with ``spin=False``, no spin-waiting after a run: for a session that runs right before another
    one (the mask stage), whose spinning threads would hold the cores the next session needs.

    ``mem_pattern=False`` turns off onnxruntime's memory pattern: from the second run of a shape it plans one
    block for all of that run's tensors, allocated beside the arena chunks the first run left, so a repeated
    shape holds its working set about twice. ``OrtUpscaler`` turns it off (CARN-M x4 default, four 391×516
    tiles: peak RSS 5.3 → 3.5 GB, run time 36.1 → 35.0 s on 2 cores).
    """
    options = ort.SessionOptions()
    options.enable_mem_pattern = mem_pattern
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OrtSessionFromOnnx(BaseLoader):
    """Functor that builds an onnxruntime ``InferenceSession`` with amsr's provider rules and a thread count."""

    def __init__(self, model: Any, providers: str | Sequence[str] | None = None, threads: int | None = None,
                 spin: bool = True, mem_pattern: bool = True) -> None:
        """
        Args:
            model: path to an ``.onnx`` file, serialized model bytes, or a callable returning either.
            providers: ``None`` (CPU), ``"auto"`` or a list of provider names/aliases.
            threads: intra-op threads; ``None`` lets onnxruntime choose (one per core).
            spin: let the intra-op threads spin-wait after a run (onnxruntime's default); see
                ``session_options``.
            mem_pattern: onnxruntime's memory pattern (its default); see ``session_options``.
        """
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be ≥ 1, got {threads}")
        self._model = model
        self.providers = providers
        self.threads = threads
        self.spin = spin
        self.mem_pattern = mem_pattern

    @pg_util.check_called_by("__call__")
    def call_impl(self) -> Any:
        ort = import_onnxruntime()
        model, _ = pg_util.invoke_if_callable(self._model)
        if isinstance(model, os.PathLike):
            model = str(model)
        options = session_options(ort, self.threads, self.spin, self.mem_pattern)
        providers = resolve_providers(self.providers, ort.get_available_providers())
        return ort.InferenceSession(model, sess_options=options, providers=providers)


def _open_session(path: Path, providers: str | Sequence[str] | None, threads: int | None) -> Any:
    """An ``OrtSessionFromOnnx`` session of ``path`` without the memory pattern (``session_options``); a file
    onnxruntime cannot load (empty, random bytes, an invalid graph) is one ``CheckpointError`` line instead of
    onnxruntime's exception."""
    try:
        return OrtSessionFromOnnx(path, providers=providers, threads=threads, mem_pattern=False)()
    except AmsrError:
        raise
    except Exception as e:  # onnxruntime raises InvalidArgument, InvalidProtobuf, Fail, …: none share a base
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: onnxruntime cannot load it as a model ({type(e).__name__}: "
                              f"{first[:200]})") from None


def _spec(arg: Any) -> Any:
    """An onnxruntime ``NodeArg`` as ``export.metadata.TensorSpec`` (``shape`` is None for an unknown rank)."""
    from amsr.export.metadata import TensorSpec

    shape = arg.shape
    return TensorSpec(arg.name, None if shape is None else len(shape), arg.type == "tensor(float)")


class OrtUpscaler:
    """An exported amsr graph in an onnxruntime session: N×3×H×W float32 [0, 1] → N×3×sH×sW float32.

    Args:
        onnx_path: the ``.onnx`` file (``export_onnx`` output).
        providers: ``None`` (CPU), ``"auto"`` (TensorRT, CUDA, CPU as available) or a list of names.
        threads: intra-op threads; ``None`` = onnxruntime's default (all cores).

    Raises:
        BackendUnavailableError: onnxruntime (or polygraphy) missing, or a requested provider unavailable.
        CheckpointError: no such file, a file onnxruntime cannot load, a graph without one N×C×H×W float32
            input and output, or malformed ``amsr.*`` metadata.
    """

    def __init__(self, onnx_path: str | os.PathLike[str], providers: str | Sequence[str] | None = None,
                 threads: int | None = None) -> None:
        from amsr.export.metadata import check_io, check_metadata, int_field

        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model not found: {self.path}")
        import_onnxruntime()
        self._providers, self._threads = providers, threads
        self.session = _open_session(self.path, providers, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        # One input, an N×C×H×W float32 output: a foreign graph is refused here, not by a traceback per image.
        self.output_name = check_io([_spec(i) for i in inputs], [_spec(o) for o in outputs], str(self.path)).name
        self.input_name = inputs[0].name
        meta = check_metadata(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        self.metadata: dict[str, str] = meta
        self.scale: int | None = int_field(meta, "amsr.scale", str(self.path))
        self.min_input_size = int_field(meta, "amsr.min_input_size", str(self.path)) or 1
        self.accelerated = meta.get("amsr.kind") == "accelerated"
        shape = inputs[0].shape or []  # None or [] when the graph does not say (rank unknown)
        self.channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None
        self._release = import_onnxruntime().RunOptions()  # ``_release_if``
        self._release.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._mask_session: Any = None  # the mask tail (or the whole mask stage), built on first use (``masks``)
        self._hf_session: Any = None  # the mask head, run per band; None when the graph does not split
        self._blur_radius = 0  # rows of halo a band of the head needs
        self._masked_session: Any = None  # the network with ``mask`` as an input (global-mask tiling)

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def _check(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise InputImageError(f"expected an N×C×H×W array, got {getattr(x, 'shape', type(x).__name__)}")
        if not np.issubdtype(x.dtype, np.floating):
            raise InputImageError(f"expected float32 input in [0, 1], got {x.dtype}")
        if self.channels is not None and x.shape[1] != self.channels:
            raise InputImageError(f"expected {self.channels} channels, got {x.shape[1]} (shape {x.shape})")
        if min(x.shape[-2:]) < self.min_input_size:
            raise InputImageError(f"image {x.shape[-2]}×{x.shape[-1]} is smaller than this model's minimum "
                                  f"{self.min_input_size}×{self.min_input_size}")
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Upscale a batch in one run."""
        x = self._check(x)
        return self.session.run([self.output_name], {self.input_name: x})[0]

    def _derived_session(self, edit: Any, spin: bool = True) -> Any:
        """A session on this file's graph after one ``export.passes`` edit (e.g. ``extract_mask_subgraph``)."""
        try:
            import onnx
            import onnx_graphsurgeon as gs
        except ImportError:
            raise BackendUnavailableError("mask sessions need onnx and onnx-graphsurgeon: "
                                          "pip install onnx onnx-graphsurgeon") from None
        graph = gs.import_onnx(onnx.load(str(self.path)))
        edit(graph)
        model = gs.export_onnx(graph)
        return OrtSessionFromOnnx(model.SerializeToString(), providers=self._providers, threads=self._threads,
                                  spin=spin, mem_pattern=False)()

    def mask(self, x: np.ndarray) -> np.ndarray:
        """The accelerated graph's network mask of ``x``: N×1×H×W float32, 1 = computed (runs the mask stage only).

        For a graph with ``amsr.mask_size`` = ``padded`` the mask has the padded input's size.
        """
        return self.masks(x)["mask"]

    def masks(self, x: np.ndarray, band_px: int = MASK_BAND_PX) -> dict[str, np.ndarray]:
        """Every whole-image mask of ``x`` the graph computes (``export.passes.mask_tensors``): ``mask`` and,
        for an output-blend graph, ``mask/output``; each N×1×H×W float32.

        The high-frequency map is computed in bands of about ``band_px`` LR px (module docstring); the
        result equals the mask stage run on the whole image.
        """
        if not self.accelerated:
            raise UnsupportedModelError(f"{self.path.name} is a dense graph: it has no mask")
        x = self._check(x)
        if band_px < 1:
            raise ValueError(f"band_px must be ≥ 1, got {band_px}")
        self._build_mask_sessions()
        session = self._mask_session
        if self._hf_session is None:  # a graph mask_head does not recognise: the whole stage, whole image
            feed = {self.input_name: x}
        else:
            feed = {session.get_inputs()[0].name: self._high_frequency(x, band_px)}
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed, self._release_if(True)), strict=True))

    def _build_mask_sessions(self) -> None:
        """The mask head and tail sessions (or the whole mask stage when the graph does not split)."""
        if self._mask_session is not None:
            return
        from amsr.core.errors import ExportError
        from amsr.export.metadata import mask_config_field
        from amsr.export.passes import extract_mask_subgraph
        from amsr.masking.mask import MAX_BLUR_SIZE

        config = mask_config_field(self.metadata, str(self.path))
        self._blur_radius = (config.blur_size if config is not None else MAX_BLUR_SIZE) // 2
        try:  # spin=False: the tiles run next
            head, tail = self._derived_session(mask_head, spin=False), self._derived_session(mask_tail, spin=False)
        except ExportError as e:
            log.warning("%s: mask computed on the whole image at once (%s)", self.path.name, e)
            head, tail = None, self._derived_session(extract_mask_subgraph, spin=False)
        self._hf_session = head
        self._mask_session = tail  # last: it is the flag other threads test

    def _high_frequency(self, x: np.ndarray, band_px: int) -> np.ndarray:
        """The mask head over ``x`` in horizontal bands of ≈ ``band_px`` px, each with ``_blur_radius`` rows of
        halo cropped off: the N×1×H×W float32 high-frequency map."""
        n, _, h, w = x.shape
        name = self._hf_session.get_outputs()[0].name
        if self.metadata.get("amsr.mask_size") == "padded":
            # The head pads the image to the model's size multiple first: each band would be padded on its own
            # and the map has the padded size, so it runs on the whole image (IMDTN: a multiple of 6).
            return self._hf_session.run([name], {self.input_name: x}, self._release_if(True))[0]
        hf = np.empty((n, 1, h, w), dtype=np.float32)
        for b0, b1 in tile_bounds(h, max(1, band_px // w)):
            lo, hi = context(b0, b1, h, self._blur_radius)
            band = self._hf_session.run([name], {self.input_name: np.ascontiguousarray(x[:, :, lo:hi])},
                                        self._release_if(b1 == h))[0]
            hf[:, :, b0:b1] = band[:, :, b0 - lo:b1 - lo]
        return hf

    def upscale_tiled(self, x: np.ndarray, tile: int = 256, overlap: int = 16,
                      per_tile_mask: bool = False) -> np.ndarray:
        """Upscale in tiles of at most ``tile``×``tile`` LR px, each run with ``overlap`` px of context.

        Dense graphs, and accelerated graphs with the default whole-image mask: equal to ``self(x)`` when
        ``overlap`` ≥ the network's receptive radius (module docstring). ``per_tile_mask=True`` lets each tile
        of an accelerated graph compute its own mask instead: close to ``self(x)``, not equal.
        """
        return assemble(self.tiles(x, tile, overlap, per_tile_mask), x.shape[-2:])

    def tiles(self, x: np.ndarray, tile: int = 256, overlap: int = 16,
              per_tile_mask: bool = False) -> Iterator[Tile]:
        """``upscale_tiled``'s tiles one by one, as they are computed (the masks first, before this returns):
        a caller writes each into its own output and never holds the float32 HR image. An image that fits
        one tile is run whole (one ``Tile``)."""
        x = self._check(x)
        if tile < 1 or overlap < 0:
            raise ValueError(f"tile must be ≥ 1 and overlap ≥ 0, got tile={tile}, overlap={overlap}")
        tile = max(tile, self.min_input_size)
        if max(x.shape[-2:]) <= tile:
            return iter([Tile.whole(self(x), x.shape[-2:])])
        return iter_tiles(self._tile_runner(x, per_tile_mask), x.shape[-2:], tile, overlap, self.min_input_size)

    def _tile_runner(self, x: np.ndarray, per_tile_mask: bool) -> TileRun:
        """A function that upscales the tile ``x[:, :, rows, cols]``, under the whole-image mask if it applies.

        The bottom-right tile (``iter_tiles`` runs it last) hands the session's arena back to the system
        (``_release``), so the image's conversion and PNG encoding do not sit on top of the tiles' working set.
        """
        if self.accelerated and not per_tile_mask and self.metadata.get("amsr.mask_size") != "input":
            log.warning("%s computes its mask after padding the input: tiles use their own masks", self.path.name)
            per_tile_mask = True
        h, w = x.shape[-2:]
        if not self.accelerated or per_tile_mask:
            return lambda rows, cols: self.session.run([self.output_name], {self.input_name: _crop(x, rows, cols)},
                                                       self._release_if(rows.stop == h and cols.stop == w))[0]

        from amsr.export.passes import mask_as_input

        masks = self.masks(x)  # all of them: a tile must not threshold its own content (``masks``)
        if self._masked_session is None:
            self._masked_session = self._derived_session(mask_as_input)
        session = self._masked_session
        return lambda rows, cols: session.run([self.output_name], {
            self.input_name: _crop(x, rows, cols), **{name: _crop(m, rows, cols) for name, m in masks.items()}},
            self._release_if(rows.stop == h and cols.stop == w))[0]

    def _release_if(self, last: bool) -> Any:
        """Run options for a session's last run on an image: shrink its CPU arena afterwards (``None``: keep it).

        Shrinking after every tile cost 18–23 % of the run time (CARN-M x4, four 391×516 tiles); after the
        last one it frees the tiles' working set (2.9 GB there) before the result is converted and written.
        """
        return self._release if last else None


def _crop(a: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
    return np.ascontiguousarray(a[:, :, rows, cols])


def _hf_tensor(graph: Any) -> Any:
    """The high-frequency map (N×1×H×W) of a mask-only graph: the ReduceMean the 2-means flattens (the Reshape
    read by its first ReduceMin). ``ExportError`` when the graph is not built that way."""
    from amsr.core.errors import ExportError

    first_min = next((n for n in graph.nodes if n.op == "ReduceMin"), None)
    flat = first_min.inputs[0] if first_min is not None else None
    reshape = flat.inputs[0] if flat is not None and flat.inputs else None
    hf = reshape.inputs[0] if reshape is not None and reshape.op == "Reshape" else None
    if hf is None or not hf.inputs or hf.inputs[0].op != "ReduceMean":
        raise ExportError("no high-frequency map (ReduceMean → Reshape → ReduceMin) in the mask stage")
    return hf


def mask_head(graph: Any) -> Any:
    """The mask stage up to the high-frequency map: input ``lr``, output the N×1×H×W float32 map (per pixel,
    reaching the blur radius: it may run in bands with that halo)."""
    from amsr.export.passes import extract_mask_subgraph

    extract_mask_subgraph(graph)
    hf = _hf_tensor(graph)
    hf.dtype = np.float32
    graph.outputs = [hf]
    return graph.cleanup().toposort()


def _reads_no_channels(node: Any) -> bool:
    """A ``Shape`` node whose ``start``/``end`` select N, H or W of an N×C×H×W input, never C."""
    if node.op != "Shape":
        return False
    start, end = (int(node.attrs.get(k, d)) for k, d in (("start", 0), ("end", 4)))
    start, end = start + 4 if start < 0 else start, end + 4 if end < 0 else end
    return not max(0, start) <= 1 < min(4, end)


def mask_tail(graph: Any) -> Any:
    """The mask stage after the high-frequency map: input the map (N×1×H×W float32), outputs the masks (the
    2-means and the dilations). The sizes the stage reads from ``lr`` (N, H, W) are read from the map."""
    from amsr.core.errors import ExportError
    from amsr.export.passes import extract_mask_subgraph

    extract_mask_subgraph(graph)
    hf, lr = _hf_tensor(graph), graph.inputs[0]
    hf.inputs.clear()
    graph.cleanup()
    readers = [n for n in graph.nodes if any(t is lr for t in n.inputs)]
    if not all(_reads_no_channels(n) for n in readers):
        raise ExportError("the 2-means reads the input beyond its N, H, W: "
                          + ", ".join(sorted({n.op for n in readers})))
    for node in readers:
        node.inputs[0] = hf
    hf.dtype = np.float32
    hf.shape = [lr.shape[0], 1, lr.shape[2], lr.shape[3]] if lr.shape is not None else None
    graph.inputs = [hf]
    return graph.cleanup().toposort()

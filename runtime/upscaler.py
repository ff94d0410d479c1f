"""``Upscaler``: an exported amsr graph as an image → image function for production use.

It wraps ``runtime.onnxrt.OrtUpscaler`` (one onnxruntime session; N×3×H×W float32 in, unclamped out) with
what user images need:

- dtypes: ``uint8``, ``uint16`` (scaled to [0, 1] as float32, never through 8 bits: a float32 holds every
  16-bit level exactly) or ``float32`` in [0, 1]; the result has the input's dtype, clamped to [0, 1] and,
  for integers, rounded to the nearest level.
- channels: H×W×C with C = 1, 3 or 4 (or H×W, returned H×W). Gray is replicated to RGB for the network and
  returned as the mean of the three output channels. Alpha is **not** sent through the network: the zoo
  networks are trained on RGB only and would invent texture and ringing in a coverage map, so it is
  upscaled separately with bicubic interpolation (clamped) and re-attached, tile by tile with a 2-px halo
  when the scale is a power of two (then each tile's bicubic equals the whole image's bit for bit), else
  once for the whole image (at x3 a tile's sampling positions differ in the last bits: up to 2.3e-5).
  RGB under transparent pixels is upscaled as stored (straight alpha).
- tiling (``tile``): the LR image is cut into tiles of at most ``tile``×``tile`` px, each run with ``overlap``
  px of real neighbouring context that is cropped from its output (``OrtUpscaler.tiles``). Dense graphs:
  equal to the untiled result once ``overlap`` ≥ the network's receptive radius (CARN-M x4: 21 px; at 16 px
  the difference is ≤ 2e-5). Accelerated graphs: by default the mask is computed **once on the whole image**
  (the graph's cheap mask stage) and every tile runs under its crop of that mask, so tiling does not change
  which pixels are computed and the result equals the untiled one under the same overlap rule.
  ``per_tile_mask=True`` lets each tile compute its own mask instead (each tile then thresholds its own
  content: on Set14 x4 with 64-px tiles this moved Y-PSNR by up to 0.45 dB). Graphs whose mask is computed
  after size padding always use per-tile masks (``OrtUpscaler`` logs a warning).
- memory: each tile is converted to the output dtype and written into the result as soon as it is computed
  (per-pixel operations only, so the bytes are those of a whole-image conversion), and the network input is
  built one channel at a time: a tiled run holds the result, the float32 LR input, the mask stage's
  one-channel LR maps and one tile's working set, never a float image of the output (2.3 GB for a
  4000×3000 photo at x4: README, Production inference).

Thread safety: ``Upscaler.__call__`` may be called from several threads at once. onnxruntime's
``InferenceSession.run`` is thread-safe; the only state created after construction is the derived sessions
an accelerated graph needs for whole-image-mask tiling (mask head, mask tail, masked network), which
``OrtUpscaler`` builds lazily without a lock, so the first tiled call builds them under this class's lock.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from amsr.core.errors import InputImageError
from amsr.runtime.tiling import Tile, context

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from amsr.export.cache_key import ExportKey
    from amsr.masking.mask import MaskConfig
    from amsr.runtime.onnxrt import OrtUpscaler

log = logging.getLogger(__name__)

_INT_MAX = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


@dataclass(frozen=True)
class RunOptions:
    """How an ``Upscaler`` runs its graph (picklable: the Ray actors rebuild their ``Upscaler`` from it).

    Attributes:
        providers: ``None`` (CPU), ``"auto"`` (TensorRT, CUDA, CPU: whichever this onnxruntime build has) or
            a list of provider names/aliases (``"cpu"``, ``"cuda"``, ``"tensorrt"``).
        threads: onnxruntime intra-op threads per session; ``None`` = one per core.
        tile: largest LR tile side in px; ``None`` = whole image in one run.
        overlap: LR px of context around each tile (see module docstring).
        per_tile_mask: accelerated graphs: each tile computes its own mask (module docstring).
        dense_graph: ``auto`` for an accelerated graph: the dense graph of the same model, run instead for an
            image where ``amsr.sparse.auto.runs_dense`` says the accelerated graph would be slower (by its
            ``amsr.execution`` and the whole-image mask density; stage graphs always run it, without a
            mask). The dense output is the better one. ``None``: always the graph.
    """

    providers: str | tuple[str, ...] | None = None
    threads: int | None = None
    tile: int | None = None
    overlap: int = 16
    per_tile_mask: bool = False
    dense_graph: Path | None = None

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"tile must be ≥ 1 (or None for no tiling), got {self.tile}")
        if self.overlap < 0:
            raise ValueError(f"overlap must be ≥ 0, got {self.overlap}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be ≥ 1, got {self.threads}")
        if isinstance(self.providers, list):
            object.__setattr__(self, "providers", tuple(self.providers))


class Upscaler:
    """An exported amsr graph as ``image → image`` (see the module docstring for dtypes, channels, tiling).

    Build with ``Upscaler.from_onnx(path, ...)`` or ``Upscaler.from_model(name, scale, ...)``.

    Attributes:
        onnx_path: the graph file.
        options: the ``RunOptions`` it runs with.
        scale: the upscaling factor (from the graph's metadata, else learnt from the first output).
        accelerated: whether the graph is an AMSR (masked) graph.
    """

    def __init__(self, runner: OrtUpscaler, options: RunOptions, dense: OrtUpscaler | None = None) -> None:
        self._ort = runner
        self._dense = dense  # ``RunOptions.dense_graph``, opened
        self.last_ran = "dense" if not runner.accelerated else "accelerated"
        self.options = options
        self.onnx_path = Path(runner.path)
        self.accelerated = bool(runner.accelerated)
        self._scale: int | None = runner.scale
        self._lock = threading.Lock()
        # Accelerated graphs tile under the whole-image mask through sessions OrtUpscaler builds on first use;
        # build them under the lock once (``_tiles``).
        self._lazy_sessions_pending = (self.accelerated and options.tile is not None and not options.per_tile_mask)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike[str], providers: str | Sequence[str] | None = None,
                  threads: int | None = None, tile: int | None = None, overlap: int = 16,
                  per_tile_mask: bool = False) -> Upscaler:
        """Open an exported graph (``export_onnx`` / ``amsr-export`` output) in onnxruntime.

        Args: see ``RunOptions``.

        Raises:
            CheckpointError: no such file.
            BackendUnavailableError: onnxruntime missing, or a requested provider unavailable.
            ValueError: a bad ``tile``/``overlap``/``threads``.
        """
        prov = tuple(providers) if providers is not None and not isinstance(providers, str) else providers
        options = RunOptions(providers=prov, threads=threads, tile=tile, overlap=overlap, per_tile_mask=per_tile_mask)
        return cls.from_options(path, options)

    @classmethod
    def from_options(cls, path: str | os.PathLike[str], options: RunOptions) -> Upscaler:
        """``from_onnx`` with the options as one ``RunOptions``."""
        from amsr.core.errors import CheckpointError
        from amsr.runtime.onnxrt import OrtUpscaler

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX model not found: {path}")
        prov = list(options.providers) if isinstance(options.providers, tuple) else options.providers
        runner = OrtUpscaler(path, providers=prov, threads=options.threads)
        dense = None
        if options.dense_graph is not None and runner.accelerated:
            dense = OrtUpscaler(options.dense_graph, providers=prov, threads=options.threads)
        return cls(runner, options, dense)

    @classmethod
    def from_model(cls, name: str, scale: int, dilation: int | None = None, accelerated: bool = True, *,
                   mask: MaskConfig | None = None, variant: str = "", weights: str | os.PathLike[str] | None = None,
                   cache_dir: str | os.PathLike[str] | None = None, opset: int | None = None,
                   providers: str | Sequence[str] | None = None, threads: int | None = None,
                   tile: int | None = None, overlap: int = 16, per_tile_mask: bool = False,
                   auto: bool = True) -> Upscaler:
        """A zoo model, exported once to a cached ONNX file (``exported_model_path``) and opened with ``from_onnx``.

        Args:
            name, scale, variant, weights: as ``amsr.models.load_model``.
            dilation: mask dilation radius (shorthand that overrides ``mask.dilation``).
            accelerated: AMSR graph (``True``) or the dense network.
            mask: mask settings of the accelerated graph. Default (with ``dilation`` also unset): the shipped
                0.05 dB operating point of ``name`` x``scale``, or the dense network where none is calibrated.
            cache_dir: where exported graphs are kept (default ``<amsr cache>/onnx``).
            opset: ONNX opset of the export; ``None`` = the exporter's default (``onnx_export.MIN_OPSET``).
            providers, threads, tile, overlap, per_tile_mask: see ``RunOptions``.
            auto: a row graph also gets the dense graph (``dense_fallback``), run for images where the rows
                would be slower (``RunOptions.dense_graph``).

        Raises:
            UnsupportedModelError, CheckpointError: as ``load_model``. ExportError: the export failed.
        """
        if accelerated and mask is None and dilation is None:
            # No setting asked for: the shipped quality operating point, or the dense model where none is
            # calibrated — never the raw skip (issue #13: a 4-px grid over the flat areas of photos).
            from amsr.operating_point import shipped_default_or_dense

            mask, source = shipped_default_or_dense(name, scale)
            accelerated = mask is not None
            log.info("%s x%d: %s", name, scale, "shipped default operating point" if accelerated else source["reason"])
        path = exported_model_path(name, scale, dilation=dilation, accelerated=accelerated, mask=mask,
                                   variant=variant, weights=weights, cache_dir=cache_dir, opset=opset)
        prov = tuple(providers) if providers is not None and not isinstance(providers, str) else providers
        options = RunOptions(providers=prov, threads=threads, tile=tile, overlap=overlap, per_tile_mask=per_tile_mask,
                             dense_graph=dense_fallback(path, name, scale, variant=variant, weights=weights,
                                                        cache_dir=cache_dir, opset=opset) if auto else None)
        return cls.from_options(path, options)

    @property
    def scale(self) -> int:
        if self._scale is None:
            raise RuntimeError(f"{self.onnx_path.name} has no amsr.scale metadata; run one image to learn it")
        return self._scale

    @property
    def providers(self) -> list[str]:
        return self._ort.providers

    def __call__(self, image: np.ndarray, progress: Callable[[float], None] | None = None) -> np.ndarray:
        """Upscale one image: H×W or H×W×C (C = 1, 3, 4), ``uint8``/``uint16``/``float32`` [0, 1] → the same
        dtype and layout at ``scale``× the size. ``progress`` is called after each tile with the fraction of the
        image done (of its LR pixels; 1.0 after the last tile).

        Raises:
            InputImageError: wrong shape, dtype or value range, or smaller than the graph's minimum size.
        """
        img = _check_image(image)
        squeeze = img.ndim == 2
        if squeeze:
            img = img[..., None]
        h, w, channels = img.shape
        alpha = img[..., 3] if channels == 4 else None
        out: np.ndarray | None = None
        s = done = 0
        for t in self._tiles(_network_input(img)):
            if out is None:
                s = t.scale
                if self._scale is None:
                    self._scale = s  # int assignment: atomic; every thread learns the same value
                out = np.empty((h * s, w * s, channels), dtype=image.dtype)
            rows, cols = t.hr
            out[rows, cols, :min(channels, 3)] = _pixels(t.sr[0], image.dtype, gray=channels == 1)
            if alpha is not None and _alpha_tiles_exactly(s):
                out[rows, cols, 3] = _from_unit(upscale_alpha_region(alpha, t.rows, t.cols, s), image.dtype)
            if progress is not None:
                done += (t.rows.stop - t.rows.start) * (t.cols.stop - t.cols.start)
                progress(done / (h * w))
        assert out is not None
        if alpha is not None and not _alpha_tiles_exactly(s):
            out[..., 3] = _from_unit(upscale_alpha(_to_unit(alpha), s), image.dtype)
        return out[..., 0] if squeeze else out

    def _runner_for(self, x: np.ndarray) -> OrtUpscaler:
        """The graph for ``x``: the accelerated one, or with ``dense_graph`` the dense one where
        ``amsr.sparse.auto.runs_dense`` says so (the mask stage runs once more: 1–3 % of a dense run)."""
        if self._dense is None:
            return self._ort
        from amsr.sparse.auto import needs_mask, runs_dense

        execution = self.execution
        if not needs_mask(execution):
            use_dense = True
            log.debug("%s execution: running the dense graph", execution)
        else:
            density = float(self._ort.masks(x)["mask"].mean())
            use_dense = runs_dense(execution, density)
            log.debug("mask density %.3f: running the %s graph", density, "dense" if use_dense else "accelerated")
        self.last_ran = "dense" if use_dense else "accelerated"
        return self._dense if use_dense else self._ort

    @property
    def execution(self) -> str:
        """How the graph runs (``amsr.execution`` metadata): ``rows``, ``windows``, ``stages``; ``dense``."""
        if not self.accelerated:
            return "dense"
        from amsr.export.metadata import execution_field

        return execution_field(self._ort.metadata)

    def _tiles(self, x: np.ndarray) -> Iterable[Tile]:
        """The network's output on ``x`` (1×3×H×W): one whole tile, or ``OrtUpscaler.tiles``."""
        o = self.options
        runner = self._runner_for(x)
        if runner is not self._ort:
            return [Tile.whole(runner(x), x.shape[-2:])] if o.tile is None else runner.tiles(
                x, tile=o.tile, overlap=o.overlap)
        if o.tile is None:
            return [Tile.whole(self._ort(x), x.shape[-2:])]
        tiled = max(x.shape[-2:]) > max(o.tile, self._ort.min_input_size)
        if tiled and self._lazy_sessions_pending:
            with self._lock:  # ``tiles`` builds the sessions (and computes the masks) before it returns
                if self._lazy_sessions_pending:
                    tiles = self._ort.tiles(x, tile=o.tile, overlap=o.overlap, per_tile_mask=o.per_tile_mask)
                    self._lazy_sessions_pending = False
                    return tiles
        return self._ort.tiles(x, tile=o.tile, overlap=o.overlap, per_tile_mask=o.per_tile_mask)

    def __repr__(self) -> str:
        kind = "accelerated" if self.accelerated else "dense"
        return f"Upscaler({self.onnx_path.name!r}, {kind}, x{self._scale}, {self.options})"


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InputImageError(f"expected an H×W or H×W×C image with C = 1, 3 or 4, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16, np.float32):
        raise InputImageError(f"expected uint8, uint16 or float32 pixels, got {image.dtype}")
    if image.dtype == np.float32 and image.size:
        lo, hi = float(image.min()), float(image.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also refuses NaN
            raise InputImageError(f"float32 images must lie in [0, 1], got values in [{lo:g}, {hi:g}]")
    return image


def _to_unit(img: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] (uint16: exact, via float32 with its 24-bit mantissa)."""
    if img.dtype == np.float32:
        return img
    return img.astype(np.float32) / np.float32(_INT_MAX[img.dtype])


def _network_input(img: np.ndarray) -> np.ndarray:
    """H×W×C pixels → the 1×3×H×W float32 network input (gray replicated), converted one channel at a time:
    no float copy of the whole image beside it."""
    x = np.empty((1, 3, *img.shape[:2]), dtype=np.float32)
    for c in range(3):
        x[0, c] = _to_unit(img[..., c if img.shape[2] >= 3 else 0])
    return x


def _from_unit(out: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """[0, 1] float → ``dtype`` (integers rounded to the nearest level)."""
    if dtype == np.float32:
        return np.ascontiguousarray(out, dtype=np.float32)
    return np.rint(out * _INT_MAX[np.dtype(dtype)]).astype(dtype)


def _pixels(y: np.ndarray, dtype: np.dtype[Any], gray: bool) -> np.ndarray:
    """A 3×h×w network output (a tile or the whole image) → h×w×3 (``gray``: h×w×1, the channel mean)
    pixels of ``dtype``, clamped to [0, 1]: per-pixel operations only, so tiles give the whole image's bytes."""
    out = np.clip(y, 0.0, 1.0).transpose(1, 2, 0)
    if gray:
        out = out.mean(axis=2, keepdims=True)
    return _from_unit(out, dtype)


def _alpha_tiles_exactly(scale: int) -> bool:
    """Whether ``upscale_alpha_region`` equals the whole image's bicubic: at a power-of-two scale torch's
    sampling positions ``(i + 0.5) / s − 0.5`` are exact in float32 wherever the tile starts."""
    return scale & (scale - 1) == 0


#: LR px of context a bicubic output pixel reads beyond its source pixel (4 taps: −1 … +2).
BICUBIC_HALO = 2


def upscale_alpha_region(alpha: np.ndarray, rows: slice, cols: slice, scale: int) -> np.ndarray:
    """``upscale_alpha`` of the LR region ``alpha[rows, cols]`` (H×W, the image's dtype), from a crop with
    ``BICUBIC_HALO`` px of context: the whole image's values there when ``_alpha_tiles_exactly(scale)``."""
    r0, r1 = context(rows.start, rows.stop, alpha.shape[0], BICUBIC_HALO)
    c0, c1 = context(cols.start, cols.stop, alpha.shape[1], BICUBIC_HALO)
    up = upscale_alpha(_to_unit(alpha[r0:r1, c0:c1]), scale)
    return up[(rows.start - r0) * scale:(rows.stop - r0) * scale, (cols.start - c0) * scale:(cols.stop - c0) * scale]


def upscale_alpha(alpha: np.ndarray, scale: int) -> np.ndarray:
    """H×W float32 [0, 1] → sH×sW by bicubic interpolation (half-pixel centres, as the LR was made), clamped."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(alpha, dtype=np.float32))[None, None]
    with torch.no_grad():
        up = F.interpolate(t, scale_factor=scale, mode="bicubic", align_corners=False)
    return up[0, 0].clamp_(0.0, 1.0).numpy()


def exported_model_path(name: str, scale: int, dilation: int | None = None, accelerated: bool = True, *,
                        mask: MaskConfig | None = None, variant: str = "",
                        weights: str | os.PathLike[str] | None = None,
                        cache_dir: str | os.PathLike[str] | None = None, opset: int | None = None) -> Path:
    """The cached ONNX export of a zoo model (``export_cache_path``), exported and verified against PyTorch on
    first use. Concurrent first uses (threads, processes, Ray actors) are safe: each writes atomically.

    The entry is served only when its sidecar (``amsr.export.cache_key``) vouches for its bytes; a truncated or swapped
    file is exported again. A cache folder that cannot be written is refused before the model is loaded.

    Raises:
        OutputPathError: the export is needed and the cache folder refuses new files.
    """
    from amsr.export.cache_key import cached_export, entry_problem
    from amsr.core.files import check_writable

    out, wpath, config, key = _cache_entry(name, scale, dilation, accelerated, mask, variant, weights, cache_dir,
                                           opset)
    if entry_problem(out, key) is not None:
        check_writable(out, "export cache")

    def export(dest: Path) -> None:
        from amsr.export.onnx_export import export_onnx
        from amsr.models import load_model
        from amsr.runtime.export_check import onnxruntime_check

        model = load_model(name, scale, weights=wpath, variant=variant)
        module = model.accelerated(config) if accelerated else model.dense()
        log.info("exporting %s x%d to %s", name, scale, dest)
        export_onnx(module, dest, opset=key.opset, verify=onnxruntime_check)

    return cached_export(out, key, export)


def dense_fallback(path: Path, name: str, scale: int, **cache: Any) -> Path | None:
    """The dense graph ``auto`` needs next to the accelerated graph ``path`` (exported once, cached like it),
    or ``None`` when ``path`` is itself dense."""
    from amsr.export.metadata import read_metadata

    if read_metadata(path).get("amsr.kind") != "accelerated":
        return None
    return exported_model_path(name, scale, accelerated=False, **cache)


def export_cache_path(name: str, scale: int, dilation: int | None = None, accelerated: bool = True, *,
                      mask: MaskConfig | None = None, variant: str = "",
                      weights: str | os.PathLike[str] | None = None,
                      cache_dir: str | os.PathLike[str] | None = None, opset: int | None = None) -> Path:
    """Where ``exported_model_path`` keeps this export (it may not exist yet).

    The file is named after everything that changes the graph, so a stale export is never reused:
    ``<name>[-<variant>]_x<scale>_<dense | amsr-d<dilation>-<hash of all mask settings>>_w<checkpoint
    sha256>_op<opset>_<hash of the torch, onnx, onnxscript versions and amsr's source>.onnx`` in ``cache_dir``
    (default ``<amsr cache>/onnx``, see ``amsr.core.paths.cache_dir``): ``amsr.export.cache_key.ExportKey.file_name``, the
    scheme amsr-bench's cache uses too.

    Raises:
        UnsupportedModelError, CheckpointError: as ``load_model`` (the checkpoint is located and hashed).
    """
    return _cache_entry(name, scale, dilation, accelerated, mask, variant, weights, cache_dir, opset)[0]


def _cache_entry(name: str, scale: int, dilation: int | None, accelerated: bool, mask: MaskConfig | None,
                 variant: str, weights: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None,
                 opset: int | None) -> tuple[Path, Path, MaskConfig, ExportKey]:
    from amsr.core import paths
    from amsr.core.errors import AmsrError
    from amsr.export.cache_key import export_key
    from amsr.masking.mask import MaskConfig
    from amsr.weights import resolve_weights
    from amsr.zoo import architecture_at

    config = mask or MaskConfig()
    if dilation is not None:
        try:
            config = replace(config, dilation=dilation)
        except ValueError as e:
            raise AmsrError(str(e)) from None
    arch = architecture_at(name, scale)
    if weights is None:
        wpath = resolve_weights(arch.weight_file(scale, variant or (arch.variants[0] if arch.variants else "")))
    else:
        wpath = resolve_weights(arch.weights[0], weights)
    key = export_key(name, scale, wpath, config if accelerated else None, variant=variant, opset=opset)
    folder = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "onnx"
    return folder / key.file_name, wpath, config, key

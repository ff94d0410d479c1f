"""TensorRT engines for exported amsr graphs: build (Polygraphy loaders), cache safely, run (``TrtRunner``).

``build_engine(onnx_path, out_engine, config)`` composes ``NetworkFromOnnxPath`` → ``CreateConfig`` (one
optimization profile for ``lr``, fp16 opt-in, workspace limit, timing cache beside the engine) →
``EngineBytesFromNetwork`` and writes the engine atomically with a JSON sidecar (``<engine>.json``) holding
what the engine is only valid for: TensorRT version, GPU name, ONNX sha256, shapes, precision, amsr version,
and the engine file's own sha256 (an engine swapped under an unchanged sidecar is refused).
``load_engine`` refuses an engine whose sidecar does not match the current TensorRT, GPU or ONNX file
(``EngineMismatchError``): a TensorRT engine is tied to the TensorRT build and GPU it was made on.
``engine_cache_key`` names an engine after all of these (vs-mlrt's rule).

fp16 policy: refusal, not per-layer fp32 islands. ``build_engine(..., supports_half=False)`` with
``config.fp16`` raises ``UnsupportedModelError`` naming the model (the zoo descriptor's ``supports_half`` is
the source of truth: for those models fp16 was found numerically unsafe, e.g. attention softmax/LayerNorm
overflow). Keeping such layers in fp32 through layer precision constraints would need the exact layer
names of each parsed network and a GPU to validate the result, neither of which can be checked here.

TensorRT and a GPU are needed only from ``build_engine``'s parsing step and in ``load_engine``/
``TrtUpscaler``; config validation, the fp16 guard, the static op check, the sidecar and cache key logic run
anywhere. Missing ``tensorrt`` → ``BackendUnavailableError`` naming the pip package; no NVIDIA GPU → the
same error type with that reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amsr.core.errors import BackendUnavailableError, InputImageError, UnsupportedModelError
from amsr.core.files import save_bytes
from amsr.weights import sha256_of

log = logging.getLogger(__name__)

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
SIDECAR_SUFFIX = ".json"
TIMING_CACHE_SUFFIX = ".timing.cache"
Shape = tuple[int, int, int, int]


class EngineMismatchError(BackendUnavailableError):
    """A cached engine was built for another TensorRT, GPU, ONNX file or build configuration."""


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or ``BackendUnavailableError`` naming the pip package."""
    try:
        import tensorrt
    except ImportError:
        raise BackendUnavailableError("TensorRT is not installed: pip install tensorrt "
                                      "(or pip install 'amsr[tensorrt]'; needs an NVIDIA GPU and driver)") from None
    return tensorrt


def gpu_name() -> str:
    """Name of the first NVIDIA GPU (``nvidia-smi``), or ``BackendUnavailableError`` when there is none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise BackendUnavailableError("no NVIDIA GPU found (nvidia-smi is not on PATH): TensorRT engines can only "
                                      "be built and run on a machine with an NVIDIA GPU and driver")
    try:
        out = subprocess.run([exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as e:
        raise BackendUnavailableError(f"no usable NVIDIA GPU: nvidia-smi failed ({e})") from None
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        raise BackendUnavailableError("no NVIDIA GPU found (nvidia-smi lists none)")
    return names[0]


def _amsr_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("amsr")
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class BuildConfig:
    """How an engine is built (validated at construction; units: pixels, bytes).

    Attributes:
        min_shape, opt_shape, max_shape: N×3×H×W of the optimization profile for ``lr``. TensorRT tunes
            kernels for ``opt_shape`` and accepts anything in [min, max]. No dim may be 0; ``build_engine``
            also raises min H/W to the graph's ``amsr.min_input_size`` by refusing a smaller one.
        fp16: allow fp16 kernels (opt-in; refused for models with ``supports_half=False``).
        workspace_bytes: TensorRT workspace memory-pool limit.
        timing_cache: keep a timing cache beside the engine (``<engine>.timing.cache``) and reuse it.
    """

    min_shape: Shape = (1, 3, 16, 16)
    opt_shape: Shape = (1, 3, 256, 256)
    max_shape: Shape = (1, 3, 1024, 1024)
    fp16: bool = False
    workspace_bytes: int = 1 << 30
    timing_cache: bool = True

    def __post_init__(self) -> None:
        shapes = {"min_shape": self.min_shape, "opt_shape": self.opt_shape, "max_shape": self.max_shape}
        for name, s in shapes.items():
            if len(s) != 4 or not all(isinstance(d, int) and d >= 1 for d in s):
                raise ValueError(f"BuildConfig.{name} must be four positive ints N×C×H×W, got {s}")
            if s[1] != 3:
                raise ValueError(f"BuildConfig.{name}: amsr graphs take 3 channels, got {s}")
        if not all(a <= b <= c for a, b, c in zip(self.min_shape, self.opt_shape, self.max_shape, strict=True)):
            raise ValueError(f"BuildConfig shapes must satisfy min ≤ opt ≤ max per dim, got "
                             f"{self.min_shape}, {self.opt_shape}, {self.max_shape}")
        if self.workspace_bytes < 1 << 20:
            raise ValueError(f"BuildConfig.workspace_bytes must be ≥ 1 MiB, got {self.workspace_bytes}")

    @property
    def precision(self) -> str:
        return "fp16" if self.fp16 else "fp32"

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(min_shape=list(self.min_shape), opt_shape=list(self.opt_shape), max_shape=list(self.max_shape))
        return d


def check_fp16(config: BuildConfig, supports_half: bool, model_name: str = "this model") -> None:
    """``UnsupportedModelError`` when fp16 is asked for a model whose descriptor says it is unsafe."""
    if config.fp16 and not supports_half:
        raise UnsupportedModelError(f"fp16 engine refused for {model_name}: its descriptor sets supports_half=False "
                                    "(fp16 overflows or loses accuracy in its attention/normalisation layers); "
                                    "build with fp16=False")


def model_supports_half(model_id: str) -> bool:
    """The zoo descriptor's ``supports_half`` for a CLI model name (``UnsupportedModelError`` if unknown)."""
    from amsr.zoo import get_architecture

    return get_architecture(model_id).supports_half


def _onnx_metadata(onnx_path: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def engine_cache_key(onnx_sha256: str, config: BuildConfig, trt_version: str, gpu: str) -> str:
    """16 hex digits naming everything an engine depends on: ONNX checksum, shapes, precision, TensorRT, GPU."""
    payload = json.dumps({"onnx": onnx_sha256, "config": config.as_json(), "tensorrt": trt_version, "gpu": gpu},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def engine_path_for(onnx_path: str | os.PathLike[str], config: BuildConfig, cache_dir: str | os.PathLike[str],
                    trt_version: str, gpu: str) -> Path:
    """``cache_dir/<onnx stem>-<cache key>.engine``."""
    key = engine_cache_key(sha256_of(onnx_path), config, trt_version, gpu)
    return Path(cache_dir) / f"{Path(onnx_path).stem}-{key}.engine"


def sidecar_path(engine_path: str | os.PathLike[str]) -> Path:
    return Path(str(engine_path) + SIDECAR_SUFFIX)


def make_sidecar(onnx_path: Path, config: BuildConfig, trt_version: str, gpu: str,
                 engine_sha256: str | None = None) -> dict[str, Any]:
    """The sidecar record of an engine built from ``onnx_path`` with ``config``; ``engine_sha256``: the engine
    bytes' sha256, checked on load (``check_engine_file``)."""
    digest = sha256_of(onnx_path)
    return {"amsr_version": _amsr_version(), "tensorrt_version": trt_version, "gpu_name": gpu,
            "onnx_sha256": digest, "onnx_file": onnx_path.name, "precision": config.precision,
            "config": config.as_json(), "cache_key": engine_cache_key(digest, config, trt_version, gpu),
            "onnx_metadata": _onnx_metadata(onnx_path), "engine_sha256": engine_sha256}


def check_engine_file(engine_path: str | os.PathLike[str], sidecar: dict[str, Any]) -> None:
    """``EngineMismatchError`` unless the engine file is the one its sidecar was written for: an engine swapped or
    truncated under an unchanged sidecar would otherwise be deserialized (or crash TensorRT) as if it matched.
    A sidecar without ``engine_sha256`` (written before it was recorded) cannot vouch for its engine."""
    recorded = sidecar.get("engine_sha256")
    name = Path(engine_path).name
    if not isinstance(recorded, str) or len(recorded) != 64:
        raise EngineMismatchError(f"cached {name} cannot be used: its sidecar records no engine sha256 "
                                  "(rebuild it with build_engine)")
    if sha256_of(engine_path) != recorded:
        raise EngineMismatchError(f"cached {name} cannot be used: the file's sha256 differs from the one its sidecar "
                                  "recorded (swapped or damaged; rebuild it with build_engine)")


def read_sidecar(engine_path: str | os.PathLike[str]) -> dict[str, Any]:
    p = sidecar_path(engine_path)
    if not p.is_file():
        raise EngineMismatchError(f"{engine_path}: no sidecar {p.name}; rebuild the engine with build_engine")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise EngineMismatchError(f"{p}: unreadable sidecar ({e}); rebuild the engine") from None


def check_sidecar(sidecar: dict[str, Any], trt_version: str, gpu: str, onnx_path: str | os.PathLike[str] | None = None,
                  config: BuildConfig | None = None, engine_name: str = "engine") -> None:
    """``EngineMismatchError`` listing each way ``sidecar`` differs from the current TensorRT/GPU/ONNX/config."""
    wrong = []
    if sidecar.get("tensorrt_version") != trt_version:
        wrong.append(f"TensorRT {sidecar.get('tensorrt_version')} ≠ installed {trt_version}")
    if sidecar.get("gpu_name") != gpu:
        wrong.append(f"GPU {sidecar.get('gpu_name')!r} ≠ this GPU {gpu!r}")
    if onnx_path is not None and sidecar.get("onnx_sha256") != sha256_of(onnx_path):
        wrong.append(f"ONNX sha256 differs from {Path(onnx_path).name}")
    if config is not None and sidecar.get("config") != config.as_json():
        wrong.append(f"build config {sidecar.get('config')} ≠ requested {config.as_json()}")
    if wrong:
        raise EngineMismatchError(f"cached {engine_name} cannot be used: " + "; ".join(wrong)
                                  + " (rebuild it with build_engine)")


def _uses_amsr_plugins(onnx_path: Path) -> bool:
    import onnx

    return any(n.domain == "amsr" for n in onnx.load(str(onnx_path), load_external_data=False).graph.node)


def build_engine(onnx_path: str | os.PathLike[str], out_engine: str | os.PathLike[str],
                 config: BuildConfig | None = None, supports_half: bool | None = None,
                 model_name: str | None = None) -> Path:
    """Build a TensorRT engine for ``onnx_path`` and write it (atomically) with its JSON sidecar.

    Args:
        onnx_path: an ``export_onnx`` graph (input ``lr``), or a ``sparse_impl="plugin"`` graph.
        out_engine: destination ``.engine``; the sidecar is ``<out_engine>.json``, the timing cache
            ``<out_engine>.timing.cache``.
        config: shapes, precision, workspace (default ``BuildConfig()``).
        supports_half, model_name: the model's fp16 flag and zoo id (fp16 guard, module docstring); with
            ``supports_half=None`` the flag is looked up from ``model_name`` in the zoo, and fp16 without
            either is refused (the guard cannot be skipped by omission).

    Raises:
        UnsupportedModelError: fp16 for a model without fp16 support.
        ExportError: the graph has nodes TensorRT's parser rejects (``export.trt_support``), or min H/W is
            below the graph's minimum input size.
        BackendUnavailableError: no tensorrt package or no NVIDIA GPU; or the build failed.
    """
    from amsr.core.errors import ExportError
    from amsr.export.trt_support import require_trt_support

    config = config or BuildConfig()
    onnx_path, out_engine = Path(onnx_path), Path(out_engine)
    if config.fp16 and supports_half is None:
        if model_name is None:
            raise UnsupportedModelError("fp16 build: pass model_name (zoo id) or supports_half so the fp16 "
                                        "guard can check the model")
        supports_half = model_supports_half(model_name)
    check_fp16(config, bool(supports_half) if supports_half is not None else True, model_name or onnx_path.stem)
    min_size = int(_onnx_metadata(onnx_path).get("amsr.min_input_size", "1"))
    if min(config.min_shape[2:]) < min_size:
        raise ExportError(f"{onnx_path.name} accepts H, W ≥ {min_size}: raise BuildConfig.min_shape "
                          f"{config.min_shape} to at least {min_size}×{min_size}")
    require_trt_support(onnx_path)
    trt = import_tensorrt()
    gpu = gpu_name()
    if _uses_amsr_plugins(onnx_path):
        import amsr.plugins.masked_conv3x3_trt  # noqa: F401 (registers amsr::MaskedConv3x3 with TensorRT)
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath, Profile

    cache = Path(str(out_engine) + TIMING_CACHE_SUFFIX) if config.timing_cache else None
    profile = Profile().add(INPUT_NAME, min=config.min_shape, opt=config.opt_shape, max=config.max_shape)
    create_config = CreateConfig(
        fp16=config.fp16, profiles=[profile],
        memory_pool_limits={trt.MemoryPoolType.WORKSPACE: config.workspace_bytes},
        load_timing_cache=str(cache) if cache is not None and cache.is_file() else None)
    build = EngineBytesFromNetwork(NetworkFromOnnxPath(str(onnx_path)), config=create_config,
                                   save_timing_cache=str(cache) if cache is not None else None)
    try:
        data = build()
    except Exception as e:  # Polygraphy raises PolygraphyException for parser and builder failures
        raise BackendUnavailableError(f"TensorRT could not build {onnx_path.name}: {e}") from e
    sidecar = make_sidecar(onnx_path, config, trt.__version__, gpu,
                           engine_sha256=hashlib.sha256(bytes(data)).hexdigest())
    save_bytes(out_engine, bytes(data))
    save_bytes(sidecar_path(out_engine), json.dumps(sidecar, indent=2, sort_keys=True).encode())
    log.info("built %s engine %s (key %s) on %s", config.precision, out_engine, sidecar["cache_key"], gpu)
    return out_engine


def load_engine(path: str | os.PathLike[str], onnx_path: str | os.PathLike[str] | None = None,
                config: BuildConfig | None = None) -> Any:
    """Deserialize a cached engine after checking its sidecar against this TensorRT/GPU (and ONNX/config)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TensorRT engine not found: {path}")
    sidecar = read_sidecar(path)
    check_engine_file(path, sidecar)
    trt = import_tensorrt()
    check_sidecar(sidecar, trt.__version__, gpu_name(), onnx_path=onnx_path, config=config, engine_name=path.name)
    if sidecar.get("onnx_metadata", {}).get("amsr.sparse_impl") == "plugin":
        import amsr.plugins.masked_conv3x3_trt  # noqa: F401 (plugin creators must exist before deserializing)
    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes

    return EngineFromBytes(BytesFromPath(str(path)))()


class TrtUpscaler:
    """A TensorRT engine: N×3×H×W float32 [0, 1] → N×3×sH×sW float32 (``OrtUpscaler``'s interface).

    Args:
        engine_path: a ``build_engine`` output (its sidecar must match this TensorRT and GPU).
        onnx_path: optionally, the ONNX file it must have been built from.

    Inputs must lie within the engine's profile (``min_shape``..``max_shape``); larger images go through
    ``upscale_tiled`` with ``tile`` ≤ the profile's max H/W. Accelerated engines tile with per-tile masks
    (the whole-image-mask mode of ``OrtUpscaler`` needs the mask subgraph as a second engine: not built).
    """

    def __init__(self, engine_path: str | os.PathLike[str], onnx_path: str | os.PathLike[str] | None = None) -> None:
        from polygraphy.backend.trt import TrtRunner

        self.path = Path(engine_path)
        self.engine = load_engine(self.path, onnx_path)
        self.sidecar = read_sidecar(self.path)
        meta: dict[str, str] = dict(self.sidecar.get("onnx_metadata", {}))
        self.metadata = meta
        self.scale: int | None = int(meta["amsr.scale"]) if "amsr.scale" in meta else None
        self.min_input_size = max(int(meta.get("amsr.min_input_size", "1")), *self.sidecar["config"]["min_shape"][2:])
        self.max_input_size = min(self.sidecar["config"]["max_shape"][2:])
        self.accelerated = meta.get("amsr.kind") == "accelerated"
        self.channels = 3
        self.input_name, self.output_name = INPUT_NAME, OUTPUT_NAME
        self._runner = TrtRunner(self.engine, name=f"trt:{self.path.name}")
        self._runner.activate()

    @property
    def providers(self) -> list[str]:
        return ["TensorRT"]

    def close(self) -> None:
        if getattr(self, "_runner", None) is not None and self._runner.is_active:
            self._runner.deactivate()

    def __del__(self) -> None:
        self.close()

    def _check(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != 3:
            raise InputImageError(f"expected an N×3×H×W array, got {getattr(x, 'shape', type(x).__name__)}")
        if not np.issubdtype(x.dtype, np.floating):
            raise InputImageError(f"expected float32 input in [0, 1], got {x.dtype}")
        if min(x.shape[-2:]) < int(self.metadata.get("amsr.min_input_size", "1")):
            raise InputImageError(f"image {x.shape[-2]}×{x.shape[-1]} is smaller than this model's minimum")
        return np.ascontiguousarray(x, dtype=np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Upscale a batch in one run (it must fit the engine's optimization profile)."""
        x = self._check(x)
        lo, hi = self.sidecar["config"]["min_shape"], self.sidecar["config"]["max_shape"]
        if not all(a <= d <= b for a, d, b in zip(lo, x.shape, hi, strict=True)):
            raise InputImageError(f"input {x.shape} is outside the engine's profile {lo}..{hi}: use "
                                  "upscale_tiled or build an engine with a larger max_shape")
        return np.array(self._runner.infer({self.input_name: x}, copy_outputs_to_host=True)[self.output_name])

    def upscale_tiled(self, x: np.ndarray, tile: int = 256, overlap: int = 16,
                      per_tile_mask: bool = False) -> np.ndarray:
        """Tiles that fit the engine profile, through the one tile loop (``runtime.tiling``).

        Accelerated engines compute their masks inside the engine, so a tile would threshold its own content:
        they tile only with ``per_tile_mask=True`` (opt-in, as for onnxruntime; the output differs from the
        untiled one). Whole-image masks need the masks as engine inputs: not built.

        Raises:
            UnsupportedModelError: an accelerated engine without ``per_tile_mask=True``.
        """
        from amsr.runtime.tiling import crop_runner, run_tiled

        x = self._check(x)
        if self.accelerated and not per_tile_mask:
            raise UnsupportedModelError("TensorRT engines of accelerated graphs tile only with per-tile masks "
                                        "(per_tile_mask=True, which changes the output); build an engine whose "
                                        "profile covers the whole image, or tile with onnxruntime")
        tile = min(tile, self.max_input_size - 2 * overlap)
        if tile < self.min_input_size:
            raise InputImageError(f"tile {tile} (with overlap {overlap}) does not fit the engine profile")
        if max(x.shape[-2:]) <= tile:
            return self(x)
        return run_tiled(crop_runner(self, x), x.shape[-2:], tile, overlap, self.min_input_size)

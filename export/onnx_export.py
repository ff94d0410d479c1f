"""Export a dense or accelerated amsr model to ONNX: input ``lr`` N×3×H×W float32, output ``sr``; N, H, W dynamic.

Exporter choice: the dynamo exporter (``torch.onnx.export(..., dynamo=True)`` with ``dynamic_shapes``).
- It is the only one of the two that exports the accelerated models: the TorchScript exporter
  (``dynamo=False``, torch 2.13) loses the channel count after the mask generator's replicate pad when H, W
  are dynamic ("ONNX export of convolution for kernel of unknown shape"); it handles dense CARN-M only.
- It keeps H×W symbolic through the whole graph (output dims ``4*H``, ``4*W``) and handles the
  data-dependent pixel count of the sparse stages (NonZero) as an unbacked size instead of a constant.
- Its node metadata names the torch module of every node, which ``passes.name_mask_subgraph`` uses.
- Where it fails on a dense graph, the TorchScript exporter is tried and ``amsr.exporter`` says which ran
  (``_torch_export``); both failing is one ``ExportError`` naming both errors.
It only emits opset ≥ 18 itself, and ``onnx.version_converter`` has no 18→17 adapter for Pad; ``opset=17``
(the default) is reached with ``passes.downgrade_to_opset17``, which rewrites the few ops that changed.

Cost on 2 CPU cores: dense CARN-M ~7 s, accelerated ~20–35 s (mostly ``torch.export``'s decomposition
pass over the 50 unrolled 2-means steps and the data-dependent sparse stages), mask-only ~9 s.

A trace is correct only for the branch the sample input took, so models are first rewritten with their
export twins (``exportable.prepare_for_export``) that have no shape-dependent branches, and the export is
then checked against PyTorch at the sample size and at an odd size (``verify``: the runtime's check,
``amsr.runtime.export_check.onnxruntime_check``, passed in so that export imports nothing above it).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import warnings
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from amsr.core.errors import BackendUnavailableError, ExportError
from amsr.export.exportable import export_min_size, mask_generator_of, pads_input, prepare_for_export
from amsr.core.files import atomic_path
from amsr.rows import is_row_program

if TYPE_CHECKING:
    import numpy as np
    import onnx

log = logging.getLogger(__name__)

INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
MIN_OPSET = 17
_NATIVE_OPSET = 18  # the lowest opset the dynamo exporter writes without conversion
# Sizes the export is checked at besides the sample size: odd, and not a multiple of the usual pad sizes.
VERIFY_SIZES: tuple[tuple[int, int], ...] = ((17, 23),)


@functools.cache
def toolchain_hash() -> str:
    """8 hex digits over what shapes an exported graph: the torch, onnx and onnxscript versions and the source
    of the method and the exporter (``amsr`` without its tools and CLIs, and ``amsr.export``). Caches of
    exported graphs put it in their file names, so a graph exported by other code — a release or a
    development checkout — is never reused, while editing a harness or a help string keeps them."""
    from importlib import metadata

    import amsr
    import amsr.export

    versions = []
    for package in ("torch", "onnx", "onnxscript"):
        try:
            versions.append(f"{package}={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package}=?")
    method = Path(amsr.__file__).parent
    return source_hash([method, Path(amsr.export.__file__).parent], ";".join(versions),
                       exclude=[method / "cli", method / "tools"])


def source_hash(roots: list[Path], salt: str = "", exclude: list[Path] | None = None) -> str:
    """8 hex digits over ``salt`` and the names and bytes of every ``.py`` file below ``roots`` and not below
    ``exclude``."""
    h = hashlib.sha256(salt.encode())
    skip = tuple(exclude or ())
    for root in sorted(set(roots)):
        for f in sorted(root.rglob("*.py")):
            if any(f.is_relative_to(e) for e in skip):
                continue
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:8]


def _require_onnx_tools() -> None:
    """Raise ``BackendUnavailableError`` naming the pip packages when the export toolchain is missing."""
    missing = []
    for module, package in (("onnx", "onnx"), ("onnxscript", "onnxscript"),
                            ("onnx_graphsurgeon", "onnx-graphsurgeon")):
        try:
            __import__(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise BackendUnavailableError(f"ONNX export needs {', '.join(missing)}: pip install {' '.join(missing)} "
                                      "(or pip install 'amsr[onnx]')")


def _torch_export(module: nn.Module, sample: torch.Tensor, output_name: str, min_size: int,
                  opset: int, fallback: bool = False) -> tuple[onnx.ModelProto, str]:
    """``torch.onnx.export`` with N, H, W dynamic, and the exporter that wrote it (``dynamo`` or ``torchscript``).

    The dynamo exporter first (the sample's batch of 2 avoids 0/1 specialisation). Where it fails on a graph
    without a mask (a user network's dense export: its pass manager raised ``PassError`` on a hybrid CNN +
    attention network, issue #16), the TorchScript exporter is tried when ``fallback``; an accelerated graph
    needs the dynamo exporter's module scopes to name its stages, so there its error is final.
    """
    dims = {0: torch.export.Dim("N", min=1), 2: torch.export.Dim("H", min=min_size),
            3: torch.export.Dim("W", min=min_size)}
    with torch.no_grad(), warnings.catch_warnings():
        # AcceleratedSR keeps ``last_mask`` for callers; harmless during export.
        warnings.filterwarnings("ignore", message=".*was assigned during export.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        try:
            program = _dynamo_export(module, sample, output_name, opset, dims)
        except Exception as e:  # the exporter raises many unrelated types; all mean "no graph"
            first = _first_line(e)
            if not fallback:
                raise ExportError(f"torch.onnx.export failed for {type(module).__name__}: {first}") from e
            try:
                proto = _torchscript_export(module, sample, output_name, opset)
            except Exception as e2:
                raise ExportError(f"torch.onnx.export failed for {type(module).__name__} with both exporters: "
                                  f"dynamo: {first}; TorchScript: {_first_line(e2)}") from e2
            log.warning("the dynamo exporter failed (%s); exported with the TorchScript exporter", first)
            return proto, "torchscript"
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto, "dynamo"


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message``: exporter errors run to pages of trace."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def _dynamo_export(module: nn.Module, sample: torch.Tensor, output_name: str, opset: int,
                   dims: dict[int, torch.export.Dim]) -> Any:
    return torch.onnx.export(module, (sample,), input_names=[INPUT_NAME], output_names=[output_name],
                             opset_version=max(opset, _NATIVE_OPSET), dynamo=True, dynamic_shapes=(dims,),
                             optimize=True, verbose=False)


def _torchscript_export(module: nn.Module, sample: torch.Tensor, output_name: str, opset: int) -> onnx.ModelProto:
    import tempfile

    import onnx

    axes = {0: "N", 2: "H", 3: "W"}
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # "legacy TorchScript-based exporter": chosen
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.onnx"
        torch.onnx.export(module, (sample,), str(path), input_names=[INPUT_NAME], output_names=[output_name],
                          opset_version=max(opset, _NATIVE_OPSET), dynamo=False,
                          dynamic_axes={INPUT_NAME: axes, output_name: axes})
        return onnx.load(str(path))


def _run_passes(model: onnx.ModelProto, opset: int, net_dilation: int | None = None,
                scoped: bool = True) -> tuple[onnx.ModelProto, dict[str, int]]:
    """Stage names (``scoped``: the graph has the dynamo exporter's module scopes; a dense TorchScript
    export has neither scopes nor stages), constant folding and cleanup, then the opset asked for (17 from
    the exporters' 18)."""
    import onnx_graphsurgeon as gs

    from amsr.export.passes import downgrade_to_opset17, fold_and_cleanup, name_mask_subgraph, torch_scopes

    graph = gs.import_onnx(model)
    stages = name_mask_subgraph(graph, torch_scopes(model), net_dilation=net_dilation) if scoped else {}
    fold_and_cleanup(graph)
    if opset == 17:
        downgrade_to_opset17(graph)
    out = gs.export_onnx(graph)
    out.ir_version = model.ir_version
    return out, stages


def check_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.checker`` (full) and strict shape inference; returns the model with inferred shapes."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"exported graph is not valid ONNX: {e}") from e


def _set_metadata(model: onnx.ModelProto, meta: dict[str, str]) -> None:
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _kind_and_meta(source: nn.Module, kind: str, min_size: int, stages: dict[str, int]) -> dict[str, str]:
    meta = {"amsr.kind": kind, "amsr.min_input_size": str(min_size)}
    scale = getattr(source, "scale", None)
    if isinstance(scale, int):
        meta["amsr.scale"] = str(scale)
    generator = mask_generator_of(source)
    if generator is not None:
        meta["amsr.mask_config"] = json.dumps(generator.config.to_json(), sort_keys=True)
        # "input": the mask has the input's H×W (a whole-image mask can be cropped per tile); "padded": it is
        # computed after the model's size padding.
        meta["amsr.mask_size"] = "padded" if pads_input(source) else "input"
    if stages:
        meta["amsr.sparse_stages"] = str(sum(1 for s in stages if s != "mask"))
    return meta


def export_graph(model: nn.Module, out: str | Path, opset: int = MIN_OPSET, sample_size: tuple[int, int] = (64, 64),
                 output_name: str = OUTPUT_NAME, kind: str | None = None, rows: bool = True) -> Path:
    """Export ``model`` (any amsr module taking N×3×H×W) with one output ``output_name``; see ``export_onnx``."""
    _require_onnx_tools()
    import onnx

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: amsr exports opset ≥ {MIN_OPSET}")
    prepared = prepare_for_export(model, rows=rows) if output_name == OUTPUT_NAME else model.eval()
    min_size = export_min_size(prepared)
    sh, sw = sample_size
    if min(sh, sw) < max(2, min_size):
        raise ExportError(f"sample_size {sample_size} is too small: use at least {max(2, min_size)} px "
                          "(size 1 would be specialised by the exporter)")
    sample = torch.rand(2, 3, sh, sw, generator=torch.Generator().manual_seed(0))
    generator = mask_generator_of(model)
    proto, exporter = _torch_export(prepared, sample, output_name, min_size, opset, fallback=generator is None)
    proto, stages = _run_passes(proto, opset, None if generator is None else generator.config.dilation,
                                scoped=exporter == "dynamo")
    if kind is None:
        kind = "accelerated" if mask_generator_of(model) is not None else "dense"
    meta = _kind_and_meta(model, kind, min_size, stages)
    meta["amsr.exporter"] = exporter
    if kind == "accelerated":
        meta["amsr.execution"] = execution_of(prepared, stages)
    _set_metadata(proto, meta)
    proto = check_onnx(proto)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    log.info("exported %s model to %s (opset %d, stages %s)", kind, out, opset, stages)
    return Path(out)


def execution_of(prepared: nn.Module, stages: dict[str, int]) -> str:
    """``amsr.execution`` of an accelerated graph: ``rows`` (a row program), ``windows`` (window selection and
    no masked-conv stage) or ``stages`` (GatherND/ScatterND per masked conv); ``amsr.sparse.auto`` keys on it."""
    from amsr.export.passes import SPARSE_PREFIX, WINDOW_PREFIX

    if any(is_row_program(m) for m in prepared.modules()):
        return "rows"
    if any(s.startswith(WINDOW_PREFIX) for s in stages) and not any(s.startswith(SPARSE_PREFIX) for s in stages):
        return "windows"
    return "stages"


class Verdict(Protocol):
    """What a verifier returns (``amsr.runtime.parity.ParityResult`` is one)."""

    passed: bool

    def summary(self) -> str: ...


#: (model, written graph, inputs) → verdict; raises ``BackendUnavailableError`` when it cannot run here.
Verifier = Callable[[nn.Module, Path, "list[np.ndarray]"], Verdict]


def export_onnx(model: nn.Module, out: str | Path, opset: int = MIN_OPSET, sample_size: tuple[int, int] = (64, 64),
                verify: Verifier | None = None, rows: bool = True) -> Path:
    """Export a dense or accelerated model to ONNX and write it atomically.

    Args:
        model: what ``LoadedModel.dense()`` / ``.accelerated()`` return (a ``PaddedSR``), an ``AcceleratedSR``,
            or any module mapping N×3×H×W float32 RGB [0, 1] to N×3×sH×sW. Not modified (a copy is exported).
        out: destination ``.onnx`` path.
        opset: ONNX opset, ≥ 17 (18 and above are written by the exporter directly, 17 by a rewrite pass).
        sample_size: LR H×W of the sample the exporter traces with (any size ≥ 2 works: H, W stay dynamic).
        verify: checks the written graph against ``model`` on image-like inputs at ``sample_size`` and at
            17×23 before it reaches ``out``: ``amsr.runtime.export_check.onnxruntime_check`` (onnxruntime,
            Polygraphy, atol 1e-4, masks identical; skipped with a warning when they are missing). ``None``:
            not run (onnx.checker only).
        rows: export an accelerated CARN / CARN-M with an output blend as its row program (``amsr.rows``:
            work follows the active pixels end to end); ``False``: the per-stage GatherND/ScatterND graph.

    Returns:
        ``out``. The graph has input ``lr`` (N×3×H×W) and output ``sr`` (N×3×sH×sW); accelerated models also
        carry a tensor named ``mask`` (N×1×H×W) that ``passes.expose_mask_output`` can make an output.
        Model metadata: ``amsr.kind`` (dense/accelerated/mask), ``amsr.scale``, ``amsr.min_input_size``,
        ``amsr.exporter`` (``dynamo``, or ``torchscript`` where dynamo failed on a dense graph), and for
        accelerated graphs ``amsr.mask_config`` (JSON), ``amsr.mask_size``, ``amsr.sparse_stages``,
        ``amsr.execution`` (``rows``, ``windows`` or ``stages``: ``execution_of``).

    Raises:
        ExportError: the exporter failed, the graph is invalid, or it does not match PyTorch.
        BackendUnavailableError: onnx / onnxscript / onnx-graphsurgeon are not installed.
    """
    with atomic_path(out) as tmp:  # a graph that fails verification never reaches ``out``
        export_graph(model, tmp, opset=opset, sample_size=sample_size, rows=rows)
        if verify is not None:
            _verify(model, tmp, sample_size, verify)
    return Path(out)


def verification_image(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A 1×3×h×w image-like input in [0, 1]: smooth random shapes (noise upsampled 4×) plus ±0.05 grain, so
    masks have flat and textured parts. Not white noise: PAN x4's checkpoint maps uniform [0, 1] noise to
    outputs of 1e21 (PyTorch and onnxruntime alike, so no tolerance can compare them), while it stays in
    [0, 1] on images and on this input (max |Δ| 4e-6)."""
    import torch.nn.functional as F

    base = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=gen)
    smooth = F.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    return (smooth + 0.1 * (torch.rand(1, 3, h, w, generator=gen) - 0.5)).clamp(0, 1)


def _verify(model: nn.Module, path: Path, sample_size: tuple[int, int], verify: Verifier) -> None:
    min_size = export_min_size(model)
    sizes = [sample_size] + [(max(h, min_size), max(w, min_size)) for h, w in VERIFY_SIZES]
    gen = torch.Generator().manual_seed(1)
    inputs = [verification_image(h, w, gen).numpy() for h, w in sizes]
    try:
        result = verify(model, path, inputs)
    except BackendUnavailableError as e:
        log.warning("export written to %s but not verified: %s", path, e)
        return
    if not result.passed:
        raise ExportError(f"{path}: ONNX output differs from PyTorch ({result.summary()})")

def export_mask_only(model: nn.Module, out: str | Path, opset: int = 17,
                     sample_size: tuple[int, int] = (64, 64)) -> Path:
    """Write the mask generator of an accelerated model as its own graph: input ``lr``, output ``mask``.

    Args:
        model: an accelerated model (``LoadedModel.accelerated()``, an ``AcceleratedSR``) or a ``MaskGenerator``.
        out: destination ``.onnx`` path (written atomically).

    Raises:
        ExportError: ``model`` has no mask generator (a dense model), or the export failed.
    """
    from amsr.export.passes import MASK_TENSOR

    generator = mask_generator_of(model)
    if generator is None:
        raise ExportError(f"{type(model).__name__} has no mask generator (a dense model): nothing to export")
    return export_graph(generator, out, opset=opset, sample_size=sample_size, output_name=MASK_TENSOR,
                        kind="mask")

"""Model identity stored in an exported ONNX file, so later tools rebuild the same PyTorch reference.

Keys (``metadata_props``): ``amsr.model``, ``amsr.variant``, ``amsr.weights_sha256`` (and for your own network,
``amsr-export --module``: ``amsr.model`` = the ``PKG.MOD:FACTORY`` spec and ``amsr.user_network``, JSON of its
input range, size multiple and window patterns) next to what the exporter writes itself (``amsr.kind``,
``amsr.scale``, ``amsr.mask_config``, ``amsr.exporter``, …).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from amsr.core.errors import CheckpointError
from amsr.core.files import atomic_path

if TYPE_CHECKING:
    import onnx

    from amsr.masking.mask import MaskConfig

# Integer metadata and the smallest value each may hold (a scale of 0 or a negative minimum size is as unusable
# as "x"): read with ``int_field``.
INT_FIELDS: dict[str, int] = {"amsr.scale": 1, "amsr.min_input_size": 1, "amsr.sparse_stages": 0}
OUTPUT_NAME = "sr"  # the output an amsr graph is run for (``OrtUpscaler``), else its first output


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """All ``metadata_props`` of an ONNX file (weights are not loaded), after checking that the file is an
    amsr-shaped graph (``check_io``) and that its ``amsr.*`` values parse (``check_metadata``).

    Raises:
        CheckpointError: unreadable or empty file, a graph amsr cannot run, or malformed ``amsr.*`` metadata.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, OSError, …: all mean "not a readable model"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(e).__name__}: {first})") from None
    if not model.graph.node:  # protobuf parses an empty file as an empty model
        raise CheckpointError(f"{path}: not a readable ONNX model (it holds no graph)")
    check_io(*proto_io(model), source=str(path))
    return check_metadata({p.key: p.value for p in model.metadata_props}, str(path))


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output as far as amsr cares: its name, rank (``None``: unknown) and element type."""

    name: str
    rank: int | None
    is_float32: bool

    def describe(self) -> str:
        rank = "unknown rank" if self.rank is None else ("a scalar" if self.rank == 0 else f"rank {self.rank}")
        return f"{self.name!r} ({rank}, {'float32' if self.is_float32 else 'not float32'})"


def proto_io(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The graph inputs (initializers excluded: old IRs list them as inputs) and outputs of an ONNX model."""
    import onnx

    def spec(vi: onnx.ValueInfoProto) -> TensorSpec:
        t = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        rank = len(t.shape.dim) if t is not None and t.HasField("shape") else None
        return TensorSpec(vi.name, rank, t is not None and t.elem_type == onnx.TensorProto.FLOAT)

    weights = {init.name for init in model.graph.initializer}
    return ([spec(vi) for vi in model.graph.input if vi.name not in weights],
            [spec(vi) for vi in model.graph.output])


def check_io(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec], source: str) -> TensorSpec:
    """``CheckpointError`` unless the graph has one N×C×H×W float32 input and its ``sr`` output (else its first)
    is N×C×H×W float32: what every amsr graph is and every runner assumes. Returns that output."""
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise CheckpointError(f"{source}: the graph has {len(inputs)} inputs ({names}); an amsr graph has one, "
                              "N×3×H×W float32 'lr'")
    if inputs[0].rank not in (4, None) or not inputs[0].is_float32:
        raise CheckpointError(f"{source}: input {inputs[0].describe()} is not an N×C×H×W float32 image batch")
    if not outputs:
        raise CheckpointError(f"{source}: the graph has no outputs")
    out = next((o for o in outputs if o.name == OUTPUT_NAME), outputs[0])
    if out.rank not in (4, None) or not out.is_float32:
        raise CheckpointError(f"{source}: output {out.describe()} is not an N×C×H×W float32 image batch")
    return out


def check_metadata(meta: Mapping[str, str], source: str) -> dict[str, str]:
    """``meta`` as a dict once every ``INT_FIELDS`` entry is an integer ≥ its minimum and ``amsr.mask_config`` is a
    JSON object; ``CheckpointError`` naming the key and value otherwise."""
    for key, low in INT_FIELDS.items():
        if key in meta:
            _parse_int(meta[key], key, low, source)
    if "amsr.mask_config" in meta:
        try:
            config = json.loads(meta["amsr.mask_config"])
        except ValueError:
            config = None
        if not isinstance(config, dict):
            raise CheckpointError(f"{source}: metadata amsr.mask_config is not a JSON object "
                                  f"({meta['amsr.mask_config'][:60]!r})")
    return dict(meta)


def int_field(meta: Mapping[str, str], key: str, source: str) -> int | None:
    """The integer metadata ``key`` (``None`` when absent); ``CheckpointError`` when it is not one."""
    return _parse_int(meta[key], key, INT_FIELDS.get(key, 0), source) if key in meta else None


def execution_field(meta: Mapping[str, str]) -> str:
    """How an accelerated graph runs (``amsr.execution``: ``rows``, ``windows`` or ``stages``; graphs written
    before the field existed ran stages), which ``amsr.sparse.auto`` keys on."""
    return meta.get("amsr.execution", "stages")


def mask_config_field(meta: Mapping[str, str], source: str) -> MaskConfig | None:
    """The ``amsr.mask_config`` of an accelerated graph as a ``MaskConfig`` (``None`` when absent);
    ``CheckpointError`` when its keys or values are not valid settings."""
    from amsr.masking.mask import MaskConfig

    if "amsr.mask_config" not in meta:
        return None
    check_metadata(meta, source)
    try:
        return MaskConfig.from_json(json.loads(meta["amsr.mask_config"]))
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: metadata amsr.mask_config holds invalid mask settings ({e})") from None


def _parse_int(value: str, key: str, low: int, source: str) -> int:
    try:
        n = int(value.strip())
    except (ValueError, AttributeError):
        raise CheckpointError(f"{source}: metadata {key} = {value[:40]!r} is not an integer") from None
    if n < low:
        raise CheckpointError(f"{source}: metadata {key} = {n} (must be ≥ {low})")
    return n


def add_metadata(path: str | os.PathLike[str], meta: dict[str, str]) -> Path:
    """Add or replace ``meta`` entries in an ONNX file, rewriting it atomically."""
    import onnx

    model = onnx.load(str(path))
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))
    return Path(path)

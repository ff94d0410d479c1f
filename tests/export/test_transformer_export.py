"""export/: Swin transformer models in ONNX. Dense SwinIR / IMDTN graphs build the shifted-window attention mask
from the dynamic H×W (correct away from the traced size); window-selected blocks export as
GatherScatterSwinBlock (window means → NonZero → Gather → block → ScatterND, empty selections included); the
accelerated IMDTN x4 graph matches PyTorch on real Set5 images (identical masks, 1e-4, 0.001 dB)."""

from __future__ import annotations

import collections
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="ONNX export tests need the onnx extra: pip install 'amsr[onnx]'")
pytest.importorskip("onnx_graphsurgeon", reason="needs onnx-graphsurgeon (pip install 'amsr[onnx]')")
pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (pip install 'amsr[onnx]')")
pytest.importorskip("onnxruntime", reason="parity checks need onnxruntime (pip install 'amsr[onnx]')")
pytest.importorskip("polygraphy", reason="parity checks need polygraphy (pip install 'amsr[onnx]')")

from amsr.export.exportable import (
    ExportSwinBlock,
    GatherScatterSwinBlock,
    attention_mask_of,
    prepare_for_export,
    window_index,
    window_region_labels,
)
from amsr.export.passes import WINDOW_PREFIX
from amsr.io.images import list_images
from amsr.models import unwrap_accelerated
from amsr.runtime.parity import check_parity, compare_with_torch
from amsr.sparse.window import MaskedSwinBlock, window_token_index
from amsr.zoo.swinir_arch import shifted_window_mask
from tests.conftest import weight_file
from tests.onnx_exports import (
    exported_imdtn,
    exported_swinir,
    imdtn_x4,
    tiny_swinir,
    tiny_swinir_accelerated,
)

# LR sizes away from the traced one: odd, not multiples of the window, one of a single window row (8 is the
# smallest the reflect pad to a multiple of 8 allows).
SIZES = [(2, 17, 23), (1, 30, 41), (1, 8, 13), (1, 40, 24)]


def _random_inputs(shapes: list[tuple[int, int, int]], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((n, 3, h, w), dtype=np.float32) for n, h, w in shapes]


def _spot_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A flat grey image with a 2×2 noisy spot: its mask is a 4×4 blob, below half of any 6×6 or 8×8 window."""
    x = np.full((1, 3, h, w), 0.5, dtype=np.float32)
    x[..., h // 2: h // 2 + 2, w // 2: w // 2 + 2] = np.random.default_rng(seed).random((3, 2, 2))
    return x


@pytest.fixture(scope="module")
def imdtn_weights(weights_dir: Path) -> Path:
    return weight_file(weights_dir, "imdtn_x4.pth")


# --- the twins in PyTorch (fast) ------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "ws", "shift"), [(8, 8, 8, 4), (16, 24, 8, 4), (18, 30, 6, 3), (12, 6, 6, 3),
                                                      (24, 16, 8, 0)])
def test_in_graph_tables_equal_the_cached_ones(h: int, w: int, ws: int, shift: int) -> None:
    assert torch.equal(window_index(h, w, ws, shift, torch.device("cpu")), window_token_index(h, w, ws, shift))
    if shift:
        mask = attention_mask_of(window_region_labels(h, w, ws, shift, torch.device("cpu")))
        expected = shifted_window_mask(h, w, ws, shift)
        assert expected is not None and torch.equal(mask, expected)


@pytest.mark.parametrize("variant", ["classical", "lightweight", "real"])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 2.0])
@torch.no_grad()
def test_twins_compute_the_same_values(variant: str, threshold: float) -> None:
    dense = tiny_swinir(variant)
    prepared = prepare_for_export(dense)
    assert sum(isinstance(m, ExportSwinBlock) for m in prepared.modules()) == 4
    acc = copy.deepcopy(tiny_swinir_accelerated(variant))  # the cached model keeps its threshold
    for m in acc.modules():
        if isinstance(m, MaskedSwinBlock):
            m.threshold = threshold
    acc_prepared = prepare_for_export(acc)
    assert sum(isinstance(m, GatherScatterSwinBlock) for m in acc_prepared.modules()) == 4
    assert not any(isinstance(m, MaskedSwinBlock) for m in acc_prepared.modules())
    x = torch.from_numpy(np.concatenate([_random_inputs([(1, 30, 41)])[0], _spot_image(30, 41)]))
    assert torch.equal(prepared(x), dense(x))
    reference = acc(x)
    assert torch.equal(acc_prepared(x), reference)
    selected = [m.last_selected for m in acc.modules() if isinstance(m, MaskedSwinBlock)]
    if threshold > 1:
        assert selected == [0] * 4


# --- SwinIR graphs (random weights) ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["classical", "lightweight", "real"])
def test_dense_swinir_is_correct_at_any_size(variant: str) -> None:
    path = exported_swinir(variant, "dense")
    result = compare_with_torch(tiny_swinir(variant), path, _random_inputs(SIZES))
    assert result.passed, result.summary()
    assert result.max_abs_diff <= 1e-4
    ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["Softmax"] == 4 and ops["Range"] > 0  # tables built from the size, not stored constants


def test_accelerated_swinir_window_stages() -> None:
    path = exported_swinir("classical", "accelerated")
    model = onnx.load(str(path))
    stages: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for node in model.graph.node:
        if node.name.startswith(WINDOW_PREFIX):
            stages[node.name.split("/")[0]][node.op_type] += 1
    assert sorted(stages) == [f"{WINDOW_PREFIX}{i}" for i in range(4)]
    for ops in stages.values():
        assert ops["ScatterND"] == 1 and ops["Softmax"] == 1 and ops["LayerNormalization"] == 2
    # Blocks with the same shift select the same windows: the exporter's CSE keeps one selection per shift,
    # in the first stage that computes it (stage 0 unshifted, stage 1 shifted).
    for i in (0, 1):
        assert stages[f"{WINDOW_PREFIX}{i}"]["NonZero"] == 1 and stages[f"{WINDOW_PREFIX}{i}"]["ReduceMean"] == 1
    all_ops = collections.Counter(n.op_type for n in model.graph.node)
    assert all_ops["Softmax"] == 4  # attention only inside the window stages: no dense pass over all windows
    for node in model.graph.node:
        if node.op_type == "ScatterND":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs.get("reduction", b"none") == b"none"
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["amsr.kind"] == "accelerated"


def test_accelerated_swinir_matches_torch_including_empty_selections() -> None:
    model = tiny_swinir_accelerated("classical")
    inputs = _random_inputs(SIZES) + [_spot_image(30, 41), np.concatenate([_spot_image(24, 40),
                                                                          _random_inputs([(1, 24, 40)])[0]])]
    result = compare_with_torch(model, exported_swinir("classical", "accelerated"), inputs)
    assert result.passed, result.summary()
    assert result.mask_mismatch_pixels == 0 and result.max_abs_diff <= 1e-4
    with torch.no_grad():  # the spot image selects no window at all: the ONNX run above had empty gathers
        model(torch.from_numpy(inputs[-2]))
    assert unwrap_accelerated(model).window_fraction() == 0.0


# --- IMDTN x4 (real checkpoint) --------------------------------------------------------------------------------


def test_imdtn_dense_is_correct_at_any_size(imdtn_weights: Path) -> None:
    result = compare_with_torch(imdtn_x4(imdtn_weights).dense(), exported_imdtn("dense", imdtn_weights),
                                _random_inputs([(1, 17, 23), (1, 30, 41)]))
    assert result.passed, result.summary()


def test_imdtn_accelerated_set5_parity(imdtn_weights: Path, data_dir: Path) -> None:
    folder = data_dir / "Set5" / "x4"
    lr = list_images(folder / "LR")[1:3]  # two of the smaller images keep the test short
    model = imdtn_x4(imdtn_weights).accelerated()
    path = exported_imdtn("accelerated", imdtn_weights)
    result = check_parity(model, path, lr, [folder / "HR" / p.name for p in lr])
    assert result.passed, result.summary()
    assert result.mask_mismatch_pixels == 0
    assert result.max_abs_diff <= 1e-4
    assert result.psnr_diff is not None and result.psnr_diff <= 1e-3
    names = {n.name.split("/")[0] for n in onnx.load(str(path)).graph.node}
    assert {f"{WINDOW_PREFIX}{i}" for i in range(6)} <= names and "mask" in names

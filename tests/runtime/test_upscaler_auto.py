"""``auto`` in the Upscaler (``amsr.sparse.auto``): a row or window graph runs images whose mask is dense on the
dense graph instead; a stage graph always runs the dense graph, without computing a mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amsr.io.images import read_rgb8
from amsr.sparse.auto import dense_above, runs_dense
from tests.conftest import weight_file


@pytest.fixture(scope="module")
def graphs(weights_dir: Path) -> tuple[Path, Path]:
    from tests.onnx_exports import exported, exported_blend

    weights = weight_file(weights_dir, "carn_m.pth")
    return exported_blend(weights), exported("dense", weights)


def _crop(data_dir: Path, name: str, rows: slice, cols: slice) -> np.ndarray:
    path = data_dir / "Photos2K" / "x4" / "LR" / name
    if not path.is_file():
        pytest.skip(f"{path} not found (set AMSR_DATA_DIR)")
    return np.ascontiguousarray(read_rgb8(path)[rows, cols])


@pytest.mark.parametrize("tile", [None, 48])
def test_auto_runs_dense_images_densely_and_sparse_images_on_rows(graphs: tuple[Path, Path], data_dir: Path,
                                                                  tile: int | None) -> None:
    from amsr.runtime.onnxrt import OrtUpscaler
    from amsr.runtime.upscaler import RunOptions, Upscaler

    rows_graph, dense_graph = graphs
    assert OrtUpscaler(rows_graph).metadata["amsr.execution"] == "rows"
    auto = Upscaler.from_options(rows_graph, RunOptions(threads=1, tile=tile, dense_graph=dense_graph))
    textured = _crop(data_dir, "img_005.png", slice(0, 96), slice(0, 128))  # density ≈ 1
    flat = _crop(data_dir, "img_001.png", slice(0, 96), slice(0, 160))  # density ≈ 0.01
    for image, expect in ((textured, "dense"), (flat, "accelerated")):
        density = float(auto._ort.masks(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)["mask"].mean())
        assert (density > dense_above("rows")) == (expect == "dense")
        out = auto(image)
        assert auto.last_ran == expect
        graph = dense_graph if expect == "dense" else rows_graph
        alone = Upscaler.from_options(graph, RunOptions(threads=1, tile=tile))(image)
        np.testing.assert_array_equal(out, alone)


def test_no_dense_graph_for_stage_graphs(graphs: tuple[Path, Path], weights_dir: Path) -> None:
    """Only a row graph gets the fallback: a dense graph handed to ``dense_graph`` of a dense graph is unused."""
    from amsr.runtime.upscaler import RunOptions, Upscaler

    _, dense_graph = graphs
    up = Upscaler.from_options(dense_graph, RunOptions(threads=1, dense_graph=dense_graph))
    assert up._dense is None


def test_stage_graphs_run_the_dense_graph_without_a_mask(graphs: tuple[Path, Path], weights_dir: Path,
                                                          data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GatherND/ScatterND stage graphs were slower than dense on every CNN measured: ``auto`` runs the dense
    graph for every image and does not pay for a mask it would not use."""
    from amsr.runtime.onnxrt import OrtUpscaler
    from amsr.runtime.upscaler import RunOptions, Upscaler
    from tests.onnx_exports import exported

    _, dense_graph = graphs
    stages = exported("accelerated", weight_file(weights_dir, "carn_m.pth"))
    up = Upscaler.from_options(stages, RunOptions(threads=1, dense_graph=dense_graph))
    assert up.execution == "stages"

    def no_mask(*args: object, **kw: object) -> None:
        raise AssertionError("auto computed a mask for a stage graph")

    monkeypatch.setattr(OrtUpscaler, "masks", no_mask)
    flat = _crop(data_dir, "img_001.png", slice(0, 96), slice(0, 160))
    out = up(flat)
    assert up.last_ran == "dense"
    np.testing.assert_array_equal(out, Upscaler.from_options(dense_graph, RunOptions(threads=1))(flat))


def test_window_graphs_fall_back_to_dense_on_dense_masks(weights_dir: Path, data_dir: Path) -> None:
    """IMDTN's window-selection graph (``amsr.execution = windows``) runs where the mask density is at most
    ``dense_above("windows")`` and the dense graph elsewhere, each output equal to that graph's alone, also
    untiled and tiled at sizes its window does not divide (its mask is computed after padding)."""
    from amsr.runtime.upscaler import RunOptions, Upscaler
    from tests.onnx_exports import exported_imdtn

    weights = weight_file(weights_dir, "imdtn_x4.pth")
    windows, dense = exported_imdtn("accelerated", weights), exported_imdtn("dense", weights)
    auto = Upscaler.from_options(windows, RunOptions(threads=1, dense_graph=dense))
    assert auto.execution == "windows"
    ran = set()
    # textured (density ≈ 1) and sky (≈ 0.01) crops
    # odd sizes: the graph pads to a multiple of its 6-px window before the mask (amsr.mask_size = padded)
    for name, rows, cols in (("img_005.png", slice(0, 47), slice(0, 61)), ("img_001.png", slice(0, 47), slice(200, 261))):
        image = _crop(data_dir, name, rows, cols)
        density = float(auto._ort.masks(image.transpose(2, 0, 1)[None].astype(np.float32) / 255)["mask"].mean())
        out = auto(image)
        expect = "dense" if runs_dense("windows", density) else "accelerated"
        assert auto.last_ran == expect
        ran.add(expect)
        alone = Upscaler.from_options(dense if expect == "dense" else windows, RunOptions(threads=1))(image)
        np.testing.assert_array_equal(out, alone)
        tiled = Upscaler.from_options(windows, RunOptions(threads=1, tile=32, dense_graph=dense))
        assert tiled(image).shape == out.shape and tiled.last_ran == expect
    assert ran == {"dense", "accelerated"}  # both branches exercised

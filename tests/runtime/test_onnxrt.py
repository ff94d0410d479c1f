"""runtime/onnxrt.py: OrtUpscaler on CARN-M x4 graphs (output, tiling, masks), providers, input checks and a
missing onnxruntime."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("polygraphy", reason="the ONNX runtime helpers need polygraphy (pip install 'amsr[onnx]')")

from amsr.core.errors import BackendUnavailableError, InputImageError, UnsupportedModelError
from amsr.io.images import read_rgb8, to_tensor, to_uint8
from amsr.io.metrics import psnr_y
from amsr.runtime.onnxrt import OrtUpscaler, import_onnxruntime, parse_providers, resolve_providers
from amsr.runtime.tiling import tile_bounds
from tests.conftest import weight_file

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.fixture(scope="module")
def carn_weights(weights_dir: Path) -> Path:
    for module in ("onnxruntime", "onnxscript", "onnx_graphsurgeon"):
        pytest.importorskip(module, reason=f"needs {module} (pip install 'amsr[onnx]')")
    return weight_file(weights_dir, "carn_m.pth")


def _graph(kind: str, weights: Path) -> Path:
    from tests.onnx_exports import exported

    return exported(kind, weights)


def _lr(data_dir: Path, set_name: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    folder = data_dir / set_name / "x4"
    return to_tensor(read_rgb8(folder / "LR" / name)).numpy(), read_rgb8(folder / "HR" / name)


def test_upscaler_matches_torch(carn_weights: Path, data_dir: Path) -> None:
    from tests.onnx_exports import carn_m_x4

    up = OrtUpscaler(_graph("dense", carn_weights), threads=2)
    assert up.providers == [CPU] and up.scale == 4 and not up.accelerated
    x, _ = _lr(data_dir, "Set5", "img_005.png")  # 57×86 (the Set5 parity test covers every image)
    with torch.no_grad():
        ref = carn_m_x4(carn_weights).dense()(torch.from_numpy(x)).numpy()
    got = up(x)
    assert got.shape == ref.shape == (1, 3, 4 * x.shape[2], 4 * x.shape[3])
    assert np.abs(got - ref).max() <= 1e-4


def test_tiled_dense_equals_untiled(carn_weights: Path, data_dir: Path) -> None:
    up = OrtUpscaler(_graph("dense", carn_weights), threads=2)
    x, _ = _lr(data_dir, "Set14", "img_002.png")
    x = np.concatenate([x[:, :, :80, :88], x[:, :, 40:120, 60:148]])  # a batch of two 80×88 crops: 2×2 tiles
    full = up(x)
    # CARN-M's receptive radius is 21 LR px: with 24 px of context every kept output pixel sees the same input.
    np.testing.assert_allclose(up.upscale_tiled(x, tile=44, overlap=24), full, atol=1e-5, rtol=0)
    np.testing.assert_allclose(up.upscale_tiled(x, tile=44), full, atol=1e-4, rtol=0)  # default overlap 16


def test_tiled_accelerated_uses_the_whole_image_mask(carn_weights: Path, data_dir: Path) -> None:
    from amsr.masking.mask import compute_mask
    from amsr.models import unwrap_accelerated
    from tests.onnx_exports import carn_m_x4

    up = OrtUpscaler(_graph("accelerated", carn_weights), threads=2)
    assert up.accelerated
    x, hr = _lr(data_dir, "Set14", "img_013.png")
    x, hr = x[:, :, 16:112, 16:112], hr[64:448, 64:448]  # 96×96 LR crop and its HR
    config = unwrap_accelerated(carn_m_x4(carn_weights).accelerated()).config
    np.testing.assert_array_equal(up.mask(x), compute_mask(torch.from_numpy(x), config).numpy())
    full = up(x)
    np.testing.assert_allclose(up.upscale_tiled(x, tile=48, overlap=24), full, atol=1e-5, rtol=0)

    # Per-tile masks: each tile thresholds its own content, so the output differs, within a PSNR bound.
    per_tile = up.upscale_tiled(x, tile=48, overlap=24, per_tile_mask=True)
    assert np.abs(per_tile - full).max() > 1e-3
    psnr_full = psnr_y(to_uint8(torch.from_numpy(full)), hr, shave=4)
    psnr_tiles = psnr_y(to_uint8(torch.from_numpy(per_tile)), hr, shave=4)
    assert abs(psnr_tiles - psnr_full) <= 0.5
    # The mask session runs right before the tiles: its threads must not spin-wait and hold the cores.
    spin = up._mask_session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert spin == "0"


def test_tile_bounds_cover_the_image() -> None:
    for size, tile in [(1, 256), (100, 64), (129, 64), (1000, 256), (64, 64)]:
        spans = tile_bounds(size, tile)
        assert spans[0][0] == 0 and spans[-1][1] == size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
        assert all(0 < e - s <= tile for s, e in spans)
        assert max(e - s for s, e in spans) - min(e - s for s, e in spans) <= 1


def test_input_checks(carn_weights: Path) -> None:
    up = OrtUpscaler(_graph("dense", carn_weights))
    with pytest.raises(InputImageError, match="channels"):
        up(np.zeros((1, 4, 8, 8), np.float32))
    with pytest.raises(InputImageError, match="float32"):
        up(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(InputImageError, match="N×C×H×W"):
        up(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(UnsupportedModelError, match="dense"):
        up.mask(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="tile"):
        up.upscale_tiled(np.zeros((1, 3, 8, 8), np.float32), tile=0)


def test_provider_resolution() -> None:
    assert resolve_providers(None, [CUDA, CPU]) == [CPU]
    assert resolve_providers("auto", [CPU, CUDA, TRT]) == [TRT, CUDA, CPU]
    assert resolve_providers("auto", [CPU]) == [CPU]
    assert resolve_providers(["cuda", "cpu"], [CUDA, CPU]) == [CUDA, CPU]
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        resolve_providers(["tensorrt"], [CPU])
    # One command-line parser for amsr-upscale and amsr-parity: cpu and no spec mean the same (CPU only).
    assert parse_providers(None) is None and parse_providers("cpu") is None and parse_providers(" CPU ") is None
    assert parse_providers("auto") == "auto" and parse_providers("cuda, cpu") == ("cuda", "cpu")
    assert resolve_providers(parse_providers("trt,cpu"), [TRT, CPU]) == [TRT, CPU]


def test_missing_onnxruntime_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the import fails first")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        import_onnxruntime()
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        OrtUpscaler(model)

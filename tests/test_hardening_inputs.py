"""Issue #14, input/settings half: image-size limit before decoding, mask settings checked, NaN input refused,
clear errors for wrong tensors at the zoo modules' outermost forward, a string rule taken as one pattern."""

from __future__ import annotations

import json
import struct
import zlib
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from amsr import models, surgery
from amsr.cli import eval as eval_cli
from amsr.cli.common import mask_config_from
from amsr.core.errors import AmsrError, InputImageError
from amsr.io.images import read_rgb8
from amsr.io.user_images import DEFAULT_MAX_PIXELS, check_image_size, pixel_limit, read_image, write_png
from amsr.masking.mask import MaskConfig, MaskGenerator, compute_mask, require_finite
from amsr.models import LoadedModel
from amsr.operating_point import config_from_json, load_operating_point
from amsr.surgery import accelerate, match_modules
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules

cv2 = pytest.importorskip("cv2", reason="16-bit PNG support needs opencv-python-headless (pip install 'amsr[png16]')")


# ------------------------------------------------------------------------------------------ image-size limit

def _tiny_png(path: Path, depth: int, size: int = 4) -> Path:
    img = np.full((size, size, 3), 7, np.uint16 if depth == 16 else np.uint8)
    return write_png(path, img)


def _declare_size(path: Path, width: int, height: int) -> Path:
    """Patch a PNG's IHDR to declare ``width``×``height`` (CRC recomputed): a few hundred bytes, a huge header."""
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pixel decoding fails the test instead of allocating gigabytes (the bug being tested)."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.delenv("AMSR_MAX_PIXELS", raising=False)


@pytest.mark.parametrize("depth, width, height", [(8, 30000, 30000), (16, 30000, 30000), (8, 12000, 12000),
                                                  (16, 8001, 8000)])
def test_bomb_png_is_refused_from_its_header(tmp_path: Path, no_decoding: None, depth: int, width: int,
                                             height: int) -> None:
    path = _declare_size(_tiny_png(tmp_path / "bomb.png", depth), width, height)
    assert path.stat().st_size < 1000
    with pytest.raises(InputImageError, match=f"{width}×{height} image .* over the 64 MP limit .*AMSR_MAX_PIXELS"):
        read_image(path)
    with pytest.raises(InputImageError, match=f"{width}×{height}"):  # the benchmark reader: same policy
        read_rgb8(path)


def test_pillow_refusal_is_not_an_exif_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Limit raised above Pillow's own: Pillow's DecompressionBombError (raised while reading the EXIF of a
    16-bit PNG that OpenCV decoded) used to be logged as 'unreadable EXIF data ignored' and the image kept."""
    path = _declare_size(_tiny_png(tmp_path / "bomb16.png", 16), 30000, 30000)
    monkeypatch.setattr(cv2, "imdecode", lambda *a: np.zeros((2, 2, 3), np.uint16))  # no 5 GB decode
    monkeypatch.setenv("AMSR_MAX_PIXELS", str(10**9))
    with pytest.raises(InputImageError, match="exceeds limit"):
        read_image(path)
    assert "EXIF" not in caplog.text


@pytest.mark.parametrize("depth", [8, 16])
def test_limit_override_by_env_and_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, depth: int) -> None:
    path = _tiny_png(tmp_path / "img.png", depth, size=16)  # 256 pixels, really decoded
    monkeypatch.setenv("AMSR_MAX_PIXELS", "100")
    with pytest.raises(InputImageError, match="16×16 image .* over the 0.0001 MP limit"):
        read_image(path)
    assert read_image(path, max_pixels=256).shape == (16, 16, 3)  # the argument beats the environment
    monkeypatch.setenv("AMSR_MAX_PIXELS", "256")
    assert read_image(path).shape == (16, 16, 3)
    with pytest.raises(InputImageError, match="over the"):
        read_image(path, max_pixels=255)
    if depth == 8:
        assert read_rgb8(path).shape == (16, 16, 3)
        with pytest.raises(InputImageError, match="over the"):
            read_rgb8(path, max_pixels=255)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".webp"])
def test_limit_applies_to_other_formats_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        suffix: str) -> None:
    path = tmp_path / f"img{suffix}"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(path)
    monkeypatch.setenv("AMSR_MAX_PIXELS", "255")
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    for reader in (read_image, read_rgb8):
        with pytest.raises(InputImageError, match="16×16 image"):
            reader(path)


def test_default_limit_and_bad_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMSR_MAX_PIXELS", raising=False)
    assert pixel_limit() == DEFAULT_MAX_PIXELS == 64_000_000
    check_image_size("photo.jpg", 4000, 3000)  # a 12 MP photo passes
    check_image_size("phone.jpg", 8160, 6120)  # a 50 MP phone photo passes
    with pytest.raises(InputImageError):
        check_image_size("big.png", 8001, 8000)
    monkeypatch.setenv("AMSR_MAX_PIXELS", "100_000_000")
    assert pixel_limit() == 100_000_000
    for bad in ("0", "-5", "lots", "1.5e8"):
        monkeypatch.setenv("AMSR_MAX_PIXELS", bad)
        with pytest.raises(AmsrError, match="AMSR_MAX_PIXELS"):
            pixel_limit()
    with pytest.raises(AmsrError, match="positive integer"):
        pixel_limit(0)


# ------------------------------------------------------------------------------------------- mask settings

@pytest.mark.parametrize("kwargs, message", [
    ({"blur_sigma": float("nan")}, "blur_sigma must be finite"),
    ({"blur_sigma": float("inf")}, "blur_sigma must be finite"),
    ({"blur_sigma": 21.0}, "blur_sigma must be > 0 and ≤ 20"),
    ({"blur_sigma": "1.5"}, "blur_sigma must be a number"),
    ({"dilation": 2.7}, "dilation must be an integer, got 2.7 \\(float\\)"),
    ({"dilation": True}, "dilation must be an integer"),
    ({"dilation": "2"}, "dilation must be an integer"),
    ({"dilation": 3000000000}, "dilation must be between 0 and 64"),
    ({"dilation": 65}, "dilation must be between 0 and 64"),
    ({"blur_size": 100001}, "blur_size must be between 1 and 31"),
    ({"blur_size": 33}, "blur_size must be between 1 and 31"),
    ({"blur_size": 5.0}, "blur_size must be an integer"),
    ({"kmeans_iters": 1001}, "kmeans_iters must be between 1 and 1000"),
    ({"flat_eps": float("nan")}, "flat_eps must be finite"),
    ({"flat_eps": 1.0}, "flat_eps must be ≥ 0 and < 1"),
    ({"flat_eps": -1e-6}, "flat_eps must be ≥ 0"),
    ({"window_threshold": float("nan")}, "window_threshold must be finite"),
    ({"window_threshold": float("inf")}, "window_threshold must be finite"),
    ({"dilation": 2, "output_dilation": 1.5}, "output_dilation must be an integer"),
    ({"dilation": 2, "output_dilation": 65}, "output_dilation must be between 0 and 64"),
])
def test_bad_mask_settings_are_one_line_value_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message) as e:
        MaskConfig(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)


def test_mask_settings_bounds_are_inclusive_and_numpy_scalars_normalised() -> None:
    MaskConfig(blur_size=31, blur_sigma=20.0, dilation=64, kmeans_iters=1000, window_threshold=1.5, flat_eps=0.0)
    c = MaskConfig(dilation=np.int64(2), blur_sigma=np.float32(1.5), output_dilation=np.int32(1))
    assert type(c.dilation) is int and type(c.blur_sigma) is float and type(c.output_dilation) is int
    assert c.digest() == MaskConfig(dilation=2, output_dilation=1).digest()  # JSON-serialisable, same name


def test_nan_sigma_no_longer_switches_the_mask_off() -> None:
    with pytest.raises(ValueError):
        MaskConfig(blur_sigma=float("nan"))


def test_cli_mask_options_out_of_range_are_amsr_errors() -> None:
    base = {"blur_size": 5, "blur_sigma": 1.5, "dilation": 1, "window_threshold": 0.5}
    for over in ({"dilation": 3000000000}, {"blur_size": 100001}, {"blur_sigma": float("nan")}, {"hf_floor": 2.0}):
        with pytest.raises(AmsrError) as e:
            mask_config_from(Namespace(**{**base, **over}))
        assert "\n" not in str(e.value)


def test_eval_cli_huge_dilation_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    for sub, size in (("HR", 32), ("LR", 16)):  # a valid x2 pair, so the settings are what fails
        (tmp_path / "set" / sub).mkdir(parents=True)
        Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(tmp_path / "set" / sub / "a.png")
    monkeypatch.setattr(eval_cli, "load_model", lambda *a, **k: _loaded())
    rc = eval_cli.main(["--model", "carn_m", "--scale", "2", "--data", str(tmp_path / "set"),
                        "--dilation", "3000000000", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and err.startswith("amsr-eval: error: dilation must be between 0 and 64")


@pytest.mark.parametrize("cfg, message", [
    ({"dilation": 2.7}, "dilation must be an integer"),
    ({"dilation": 2, "blur_sigmaa": 1.0}, "unknown setting\\(s\\) 'blur_sigmaa' \\(known: blur_size, "),
    ([2], "expected an object, got list"),
    ({"blur_sigma": None}, "blur_sigma must be a number"),
])
def test_operating_point_config_errors_are_one_line(tmp_path: Path, cfg: object, message: str) -> None:
    with pytest.raises(AmsrError, match=message) as e:
        config_from_json(cfg)
    assert "\n" not in str(e.value)
    f = tmp_path / "op.json"
    f.write_text(json.dumps({"model": "carn_m", "scale": 4, "config": cfg}))
    with pytest.raises(AmsrError, match=f"^{f}: bad mask settings"):
        load_operating_point(f)


# ---------------------------------------------------------------------------------------------- NaN input

from tests.test_operating_point import _Tiny  # noqa: E402 (head conv, one body conv, pixel-shuffle x2)


def _one_nan(shape: tuple[int, ...] = (1, 3, 16, 16)) -> torch.Tensor:
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(0))
    x[0, 1, 5, 7] = float("nan")
    return x


def test_one_nan_pixel_would_zero_the_whole_mask() -> None:
    """Why NaN is refused: the (unchecked, traced) mask stage turns one NaN into an all-zero mask."""
    x = _one_nan()
    assert float(MaskGenerator()(x).sum()) == 0.0
    assert float(MaskGenerator()(torch.nan_to_num(x)).sum()) > 0


def test_nan_or_inf_input_is_refused_by_compute_mask_and_accelerate() -> None:
    acc = accelerate(_Tiny().eval(), ["body"], MaskConfig(dilation=1))
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.rand(1, 3, 16, 16)
        x[0, 0, 2, 3] = bad
        with pytest.raises(InputImageError, match="1 NaN/Inf value"):
            compute_mask(x)
        with torch.no_grad(), pytest.raises(InputImageError, match="NaN/Inf"):
            acc(x)
    with torch.no_grad():
        assert acc(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


def test_finite_screen_has_no_false_alarms() -> None:
    """The cheap screen is a sum: huge finite values overflowing it, or an fp16 image summing past 65504,
    must still pass (they are counted exactly before refusing)."""
    require_finite(torch.full((1, 3, 8, 8), 3e38))
    require_finite(torch.full((1, 3, 300, 300), 0.9, dtype=torch.float16))
    with pytest.raises(InputImageError, match="1 NaN/Inf value"):
        require_finite(_one_nan().half())


# ------------------------------------------------------------------------------- zoo modules' input checks

def _loaded(multiple_of: int = 1) -> LoadedModel:
    arch = Architecture(id="tiny", description="test", scales=(2,), weights=(), detect=lambda sd: False,
                        build=lambda sd, s: _Tiny(), rules=SparseRules(convs=("body",)),
                        size=SizeRequirements(multiple_of=multiple_of))
    return LoadedModel(arch=arch, scale=2, net=_Tiny().eval(), weights=Path("none"))


_GOOD = torch.rand(1, 3, 12, 10)


@pytest.mark.parametrize("x, message", [
    (_GOOD[0], "expected an N×3×H×W tensor, got shape \\(3, 12, 10\\) \\(add the batch dimension: x\\[None\\]\\)"),
    (_GOOD[:, :1], "expected an N×3×H×W tensor, got shape \\(1, 1, 12, 10\\)"),
    (torch.rand(1, 4, 12, 10), "got shape \\(1, 4, 12, 10\\)"),
    (_GOOD.double(), "expected float32 pixels in \\[0, 1\\] .* got float64: pass x.to\\(torch.float32\\)"),
    (_GOOD.half(), "got float16"),
    ((_GOOD * 255).byte(), "got uint8: pass x.to\\(torch.float32\\) / 255"),
    (_GOOD.numpy(), "expected a torch.Tensor N×3×H×W, got ndarray"),
    (torch.rand(0, 3, 12, 10), "non-empty"),
])
@pytest.mark.parametrize("kind", ["dense", "accelerated"])
def test_wrong_tensors_get_one_clear_error(x: object, message: str, kind: str) -> None:
    model = _loaded(multiple_of=8)
    module = model.dense() if kind == "dense" else model.accelerated(MaskConfig(dilation=1))
    with torch.no_grad(), pytest.raises(InputImageError, match=message):
        module(x)
    with torch.no_grad():
        assert module(_GOOD).shape == (1, 3, 24, 20)


def test_nan_refused_by_the_accelerated_zoo_module_only() -> None:
    model = _loaded()
    with torch.no_grad():
        with pytest.raises(InputImageError, match="NaN/Inf"):
            model.accelerated()(_one_nan())
        y = model.dense()(_one_nan())  # dense: the NaN only spreads over its receptive field, visibly
    assert bool(y.isnan().any()) and not bool(y.isnan().all())


def test_a_double_model_takes_double_input() -> None:
    module = _loaded().dense().double()
    with torch.no_grad():
        assert module(_GOOD.double()).dtype == torch.float64
        with pytest.raises(InputImageError, match="expected float64 pixels .* got float32"):
            module(_GOOD)


def test_checked_once_at_the_outermost_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    def spy(x: torch.Tensor, *args: object, **kwargs: object) -> None:
        calls.append(tuple(x.shape))

    monkeypatch.setattr(models, "check_sr_input", spy)
    monkeypatch.setattr(surgery, "check_sr_input", spy)
    with torch.no_grad():
        _loaded(multiple_of=8).accelerated()(_GOOD)
    assert calls == [(1, 3, 12, 10)]  # the unpadded input, once (not again inside AcceleratedSR)


def test_checks_are_skipped_while_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("input check ran while tracing")

    monkeypatch.setattr(models, "check_sr_input", refuse)
    monkeypatch.setattr(surgery, "check_sr_input", refuse)
    dense = _loaded().dense()
    with torch.no_grad():
        exported = torch.export.export(dense, (_GOOD,))
        traced = torch.jit.trace(dense, (_GOOD,), check_trace=False)  # its check reruns eagerly
        torch.testing.assert_close(exported.module()(_GOOD), traced(_GOOD))
    with pytest.raises(AssertionError, match="tracing"):  # the spy is live: eagerly it runs
        dense(_GOOD)


# ------------------------------------------------------------------------------------- rules as one string

def test_a_string_rule_is_one_pattern() -> None:
    net = _Tiny().eval()
    assert match_modules(net, "body") == ["body"]
    one = accelerate(net, "body", MaskConfig(dilation=1))
    listed = accelerate(net, ["body"], MaskConfig(dilation=1))
    assert [n for n, m in one.named_modules() if type(m).__name__ == "MaskedConv2d"] == ["net.body"]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(one(x), listed(x))

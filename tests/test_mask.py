"""The mask generator: scikit-learn parity on real images, flat/tiny images, dilation, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from amsr.io.images import list_images, read_rgb8, to_tensor
from amsr.tools.calibrate import make_lr
from amsr.masking.mask import (
    MaskConfig,
    MaskGenerator,
    dilate,
    gaussian_kernel,
    high_frequency_map,
    kmeans2_mask_sklearn,
)


def _lr_images(data_dir: Path) -> list[Path]:
    return [p for s in ("Set5", "Set14") for sc in (2, 3, 4) for p in list_images(data_dir / s / f"x{sc}" / "LR")]


def test_torch_kmeans_matches_sklearn_on_every_benchmark_image(data_dir: Path) -> None:
    cfg = MaskConfig(dilation=0)
    gen = MaskGenerator(cfg)
    images = _lr_images(data_dir)
    assert len(images) == 3 * (5 + 14)
    for p in images:
        x = to_tensor(read_rgb8(p))
        ours = gen(x)[0, 0].numpy() > 0.5
        hf = high_frequency_map(x, gaussian_kernel(cfg.blur_size, cfg.blur_sigma))[0, 0].numpy()
        ref = kmeans2_mask_sklearn(hf, cfg)
        assert np.array_equal(ours, ref), f"{p}: {int((ours != ref).sum())} pixels differ from scikit-learn"
        assert 0.05 < ours.mean() < 0.95, f"{p}: degenerate mask density {ours.mean():.3f}"


def test_deterministic_start_is_close_to_kmeanspp(data_dir: Path) -> None:
    """The min/max start may land on a neighbouring fixed point of k-means++; by at most a few pixels."""
    cfg = MaskConfig(dilation=0)
    for p in list_images(data_dir / "Set5" / "x4" / "LR"):
        x = to_tensor(read_rgb8(p))
        hf = high_frequency_map(x, gaussian_kernel(cfg.blur_size, cfg.blur_sigma))[0, 0].numpy()
        ours = MaskGenerator(cfg)(x)[0, 0].numpy() > 0.5
        pp = kmeans2_mask_sklearn(hf, cfg, init="k-means++")
        assert (ours != pp).mean() < 2e-3


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_flat_image_gives_all_ones(value: float) -> None:
    x = torch.full((1, 3, 20, 30), value)
    m = MaskGenerator()(x)
    assert m.shape == (1, 1, 20, 30)
    assert bool((m == 1).all())
    assert kmeans2_mask_sklearn(np.zeros((20, 30), np.float32)).all()


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 4)])
def test_tiny_images_work(size: tuple[int, int]) -> None:
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    m = MaskGenerator()(x)
    assert m.shape == (1, 1, *size)
    assert set(m.unique().tolist()) <= {0.0, 1.0}


def test_mask_is_per_image_in_a_batch() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.rand(1, 3, 24, 24, generator=g)
    b = torch.zeros(1, 3, 24, 24)
    b[..., 8:16, 8:16] = 1.0
    gen = MaskGenerator()
    both = gen(torch.cat([a, b]))
    assert torch.equal(both[0:1], gen(a)) and torch.equal(both[1:2], gen(b))


@pytest.mark.parametrize("radius", [0, 1, 3])
def test_dilation_grows_a_point_to_a_square(radius: int) -> None:
    m = torch.zeros(1, 1, 15, 15)
    m[0, 0, 7, 7] = 1
    d = dilate(m, radius)
    assert int(d.sum()) == (2 * radius + 1) ** 2
    assert d[0, 0, 7 - radius, 7 + radius] == 1


def test_dilation_never_shrinks_the_mask(data_dir: Path) -> None:
    x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / "img_001.png"))
    prev = None
    for d in range(4):
        m = MaskGenerator(MaskConfig(dilation=d))(x)
        if prev is not None:
            assert bool((m >= prev).all()) and m.sum() > prev.sum()
        prev = m


@pytest.mark.parametrize("kwargs", [{"blur_size": 4}, {"blur_sigma": 0.0}, {"dilation": -1}, {"kmeans_iters": 0},
                                    {"hf_floor": -0.01}, {"hf_floor": 1.5}, {"hf_floor": float("nan")}])
def test_bad_config_is_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MaskConfig(**kwargs)  # type: ignore[arg-type]


def test_mask_generator_copies_and_pickles_without_sharing_graphs() -> None:
    """The CUDA-graph cache is per module: a deep copy replays its own generator (its own config), and a
    pickled generator (graphs are not picklable) comes back with an empty cache and the same masks."""
    import copy
    import pickle

    gen = MaskGenerator(MaskConfig(dilation=0))
    dup = copy.deepcopy(gen)
    assert dup.graphed is not None and dup.graphed.fn.__self__ is dup
    dup.config = MaskConfig(dilation=2)
    x = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(dup(x), gen(x))
    back = pickle.loads(pickle.dumps(gen))
    assert back.graphed is not None and back.graphed.fn.__self__ is back and torch.equal(back(x), gen(x))


def test_cpu_input_never_takes_the_graph_path() -> None:
    from amsr.masking.cuda_graphs import can_replay

    assert not can_replay(torch.zeros(1, 3, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-graph replay needs an NVIDIA GPU (none here)")
def test_cuda_graph_mask_equals_the_eager_mask_bit_for_bit(data_dir: Path) -> None:
    gen = MaskGenerator(MaskConfig(dilation=1)).cuda()
    for name in ("img_001.png", "img_002.png", "img_001.png"):  # the third call replays a captured graph
        x = to_tensor(read_rgb8(data_dir / "Set5" / "x4" / "LR" / name)).cuda()
        with torch.no_grad():
            assert torch.equal(gen(x), gen.eager(x))


def test_mask_config_json_round_trip_and_one_line_errors() -> None:
    """``to_json`` / ``from_json`` are the one serialiser (operating points, graph metadata, reports)."""
    import json

    cfg = MaskConfig(dilation=6, output_dilation=3, window_threshold=0.25)
    assert MaskConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    for bad, match in (([], "expected an object"), ({"dilation": 2, "d_out": 1}, r"unknown setting\(s\) 'd_out'"),
                       ({"dilation": 2.5}, "dilation must be an integer"), ({1: 2}, "unknown setting")):
        with pytest.raises(ValueError, match=match):
            MaskConfig.from_json(bad)


def test_hf_floor_keeps_the_texture_the_2_means_splits_off(data_dir: Path) -> None:
    """T91/t53 (hair beside a face; its x4 LR as calibration makes it) is textured everywhere: the 2-means leaves
    its weaker half out, the floor keeps every pixel above it; the paper's mask is a subset, scikit-learn's
    reference agrees, and a floor of 1 (above any value) is the paper's mask."""
    path = data_dir / "train" / "T91" / "t53.bmp"
    if not path.is_file():
        pytest.skip(f"{path} not found (set AMSR_DATA_DIR)")
    x = to_tensor(make_lr(read_rgb8(path), 4)[0])
    plain, floor = MaskConfig(dilation=0), MaskConfig(dilation=0, hf_floor=0.04)
    hf = high_frequency_map(x, gaussian_kernel(plain.blur_size, plain.blur_sigma))[0, 0].numpy()
    paper = MaskGenerator(plain)(x)[0, 0].numpy() > 0.5
    kept = MaskGenerator(floor)(x)[0, 0].numpy() > 0.5
    assert np.array_equal(kept, paper | (hf > 0.04))
    assert kept.mean() > paper.mean() + 0.1, (paper.mean(), kept.mean())  # measured: 0.08 → 0.22
    assert np.array_equal(kept, kmeans2_mask_sklearn(hf, floor))
    assert torch.equal(MaskGenerator(MaskConfig(hf_floor=1.0))(x), MaskGenerator(MaskConfig())(x))

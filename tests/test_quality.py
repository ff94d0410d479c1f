"""Output blend, sparse tail, effective cost with a blend, operating-point choice and amsr-calibrate errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from amsr.cli import calibrate as calibrate_cli
from amsr.core.cost import run_counting_macs
from amsr.core.errors import AmsrError
from amsr.io.images import to_tensor, to_uint8
from amsr.io.metrics import psnr_y
from amsr.masking.mask import MaskConfig
from amsr.models import LoadedModel
from amsr.operating_point import GridPoint, pick
from amsr.surgery import accelerate
from amsr.tools.calibrate import FINE_TUNED_PAIRS, HF_FLOORS, choose_operating_point, default_grid, score_grid
from amsr.zoo.descriptor import Architecture, SparseRules

SCALE = 2
C = 8


class Tiny(nn.Module):
    """head 3×3 → residual body (two 3×3 convs) → tail: 3×3 conv + PixelShuffle."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Conv2d(3, C, 3, 1, 1)
        self.body = nn.Sequential(nn.Conv2d(C, C, 3, 1, 1), nn.ReLU(), nn.Conv2d(C, C, 3, 1, 1))
        self.up = nn.Sequential(nn.Conv2d(C, 3 * SCALE * SCALE, 3, 1, 1), nn.PixelShuffle(SCALE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        return self.up(f + self.body(f))


RULES = ("body.0", "body.2")
TAIL = [("up.0", 1)]


def _image(h: int = 20, w: int = 24, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 3, h, w), 0.5)
    x[..., 5:12, 6:14] = torch.rand(1, 3, 7, 8, generator=g)  # a textured patch in a flat image
    return x


def _masks(h: int = 20, w: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    m_net = torch.zeros(1, 1, h, w)
    m_net[..., 3:14, 4:16] = 1
    m_out = torch.zeros(1, 1, h, w)
    m_out[..., 5:12, 6:14] = 1
    return m_net, m_out


@torch.no_grad()
@pytest.mark.parametrize("tail", [None, TAIL])
def test_blend_with_full_output_mask_is_the_network_output(tail):
    net = Tiny().eval()
    x = _image()
    m_net, _ = _masks()
    plain = accelerate(net, RULES, MaskConfig(dilation=2))
    blend = accelerate(net, RULES, MaskConfig(dilation=2, output_dilation=1), tail=tail)
    torch.testing.assert_close(blend(x, mask=m_net, output_mask=torch.ones_like(m_net)), plain(x, mask=m_net),
                               rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("tail", [None, TAIL])
def test_blend_with_empty_output_mask_is_bicubic(tail):
    net = Tiny().eval()
    x = _image()
    m_net, _ = _masks()
    blend = accelerate(net, RULES, MaskConfig(dilation=2, output_dilation=0), tail=tail)
    y = blend(x, mask=m_net, output_mask=torch.zeros_like(m_net))
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False))


@torch.no_grad()
def test_sparse_tail_keeps_every_blended_pixel():
    net = Tiny().eval()
    x = _image()
    m_net, m_out = _masks()
    cfg = MaskConfig(dilation=2, output_dilation=1)
    dense_tail = accelerate(net, RULES, cfg)(x, mask=m_net, output_mask=m_out)
    sparse_tail = accelerate(net, RULES, cfg, tail=TAIL)(x, mask=m_net, output_mask=m_out)
    torch.testing.assert_close(sparse_tail, dense_tail, rtol=0, atol=1e-5)


@torch.no_grad()
def test_sparse_tail_keeps_every_blended_pixel_when_the_output_mask_is_wider():
    """d_out > d_net (fine-tuned weights): kept SR pixels outside the network mask still get exactly the tail's
    dense values (of skipped body features)."""
    net = Tiny().eval()
    x = _image()
    m_out, m_net = _masks()  # the output mask is the larger one
    cfg = MaskConfig(dilation=1, output_dilation=2)
    dense_tail = accelerate(net, RULES, cfg)(x, mask=m_net, output_mask=m_out)
    sparse_tail = accelerate(net, RULES, cfg, tail=TAIL)(x, mask=m_net, output_mask=m_out)
    torch.testing.assert_close(sparse_tail, dense_tail, rtol=0, atol=1e-5)
    assert not torch.equal(dense_tail, accelerate(net, RULES, cfg)(x, mask=m_net, output_mask=m_net))


@torch.no_grad()
def test_effective_macs_with_blend_match_a_hand_count():
    net = Tiny().eval()
    x = _image()
    h, w = x.shape[-2:]
    acc = accelerate(net, RULES, MaskConfig(dilation=2, output_dilation=1), tail=TAIL)
    _, dense = run_counting_macs(net, x)
    assert dense == h * w * (C * 3 * 9 + 2 * C * C * 9 + 3 * SCALE**2 * C * 9)
    # The generated masks: count by hand from what the model used.
    _, macs = run_counting_macs(acc, x)
    n_net = int(acc.last_mask.sum())
    n_out = int(acc.last_output_mask.sum())  # tail radius 0: the conv runs exactly on m_out
    assert 0 < n_out <= n_net < h * w
    assert macs == h * w * C * 3 * 9 + 2 * n_net * C * C * 9 + n_out * 3 * SCALE**2 * C * 9
    assert macs <= dense


def _tiny_model() -> LoadedModel:
    arch = Architecture(id="tiny", description="test", scales=(SCALE,), weights=(), detect=lambda sd: False,
                        build=lambda sd, s: Tiny(), rules=SparseRules(convs=RULES))
    return LoadedModel(arch=arch, scale=SCALE, net=Tiny().eval(), weights=Path("none"))


def _point(d: int, d_out: int | None, loss: float, saved: float) -> GridPoint:
    return GridPoint(MaskConfig(dilation=d, output_dilation=d_out), loss, 0.0, 1.0 - saved, 1.0, 0.5, None)


def test_choose_respects_the_budget_with_mock_scores():
    points = [_point(1, None, 3.0, 0.5), _point(5, 2, 0.04, 0.3), _point(6, 3, 0.02, 0.3),
              _point(7, 4, 0.01, 0.1), _point(8, 2, 0.06, 0.45)]
    op = choose_operating_point(_tiny_model(), [(np.zeros(1), np.zeros(1))], 0.05,
                                grid=[p.config for p in points], scorer=lambda m, i, g: points)
    assert op.config == MaskConfig(dilation=6, output_dilation=3)  # most saving within 0.05, ties → less loss
    assert pick(points, 0.005) is None
    assert pick(points, 10.0).config.dilation == 1
    with pytest.raises(AmsrError):
        pick(points, -0.1)


def test_pick_refuses_a_blend_margin_under_three_pixels():
    thin = _point(4, 3, 0.01, 0.4)  # cheapest and within budget on the mean, but a 1-px margin
    assert pick([thin, _point(6, 3, 0.03, 0.3)], 0.05).config == MaskConfig(dilation=6, output_dilation=3)
    assert pick([thin], 0.05) is None
    assert pick([_point(2, None, 0.01, 0.4)], 0.05).config == MaskConfig(dilation=2)  # no blend: no margin


def test_fine_tuned_weights_admit_thin_blends_on_their_measured_loss():
    """The blend floor was measured on published weights; weights trained under their mask are judged by the
    loss measured for them, and the per-image rule still holds."""
    thin = GridPoint(MaskConfig(dilation=2, output_dilation=2), 0.04, 0.0, 0.6, 1.0, 0.5, 0.4, None, 0.12)
    floor = _point(6, 3, 0.03, 0.3)
    assert pick([thin, floor], 0.05) == floor
    assert pick([thin, floor], 0.05, fine_tuned=True) == thin
    one_bad = GridPoint(MaskConfig(dilation=1, output_dilation=1), 0.04, 0.0, 0.5, 1.0, 0.4, 0.3, None, 0.4)
    assert pick([one_bad, floor], 0.05, fine_tuned=True) == floor  # 0.4 dB on one image > 3 × 0.05
    points = [thin, floor]
    op = choose_operating_point(_tiny_model(), [(np.zeros(1), np.zeros(1))], 0.05,
                                scorer=lambda m, i, g: points, fine_tuned=True)
    assert op.config == thin.config and op.calibration["fine_tuned"] is True
    assert "fine_tuned" not in choose_operating_point(_tiny_model(), [(np.zeros(1), np.zeros(1))], 0.05,
                                                      scorer=lambda m, i, g: points).calibration


def test_fine_tuned_grid_adds_the_thin_blends_once():
    model = _tiny_model()
    published = {(c.dilation, c.output_dilation) for c in default_grid(model)}
    grid = default_grid(model, fine_tuned=True)
    for floor in HF_FLOORS:  # every pair once at each high-frequency floor
        tuned = [(c.dilation, c.output_dilation) for c in grid if c.hf_floor == floor]
        assert len(tuned) == len(set(tuned))
        assert set(tuned) == published | set(FINE_TUNED_PAIRS)
        assert (2, 2) in tuned and (2, 2) not in published
    assert len(grid) == len(HF_FLOORS) * len(set(tuned)) and None in HF_FLOORS  # the paper's mask stays measured


def test_pick_refuses_a_point_that_loses_too_much_on_one_image():
    mean_ok_one_bad = GridPoint(MaskConfig(dilation=7, output_dilation=3), 0.04, 0.0, 0.6, 1.0, 0.5, 0.4, None, 0.35)
    safe = GridPoint(MaskConfig(dilation=6, output_dilation=3), 0.03, 0.0, 0.7, 1.0, 0.6, 0.4, None, 0.12)
    assert pick([mean_ok_one_bad, safe], 0.05) == safe  # 0.35 dB on one image > 3 × 0.05
    assert pick([mean_ok_one_bad, safe], 0.15) == mean_ok_one_bad  # 0.35 ≤ 3 × 0.15: the cheaper one
    unrecorded = GridPoint(MaskConfig(dilation=7, output_dilation=3), 0.04, 0.0, 0.6, 1.0, 0.5, 0.4)
    assert pick([unrecorded, safe], 0.05) == unrecorded  # grids from before the per-image loss was kept


def test_choose_on_a_tiny_real_case():
    model = _tiny_model()
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(2):
        hr = np.full((48, 48, 3), 128, np.uint8)
        hr[10:30, 12:36] = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        from amsr.tools.calibrate import make_lr
        pairs.append(make_lr(hr, SCALE))
    grid = [MaskConfig(dilation=d, output_dilation=o) for d in (1, 3) for o in (None, 0, 1) if o is None or o <= d]
    points = score_grid(model, pairs, grid)
    for budget in (0.0, 0.5, 100.0):
        op = choose_operating_point(model, pairs, budget, grid=grid, scorer=lambda m, i, g: points)
        ok = [p for p in points if p.loss_db <= budget and p.saved > 0]
        if op.chosen is None:
            assert not ok
        else:
            assert op.chosen.loss_db <= budget
            assert op.chosen.saved == max(p.saved for p in ok)
    assert all(p.gmacs <= p.dense_gmacs for p in points)

    # Against another network's dense output (fine-tuned weights vs the original): the losses move by
    # exactly the two dense networks' PSNR difference, image by image.
    other = _tiny_model()
    with torch.no_grad():
        for param in other.net.parameters():
            param.mul_(0.9)
    against = score_grid(model, pairs, grid, reference=other)
    own_dense = [psnr_y(to_uint8(model.dense()(to_tensor(lr))), hr, SCALE) for lr, hr in pairs]
    ref_dense = [psnr_y(to_uint8(other.dense()(to_tensor(lr))), hr, SCALE) for lr, hr in pairs]
    shift = float(np.mean(ref_dense) - np.mean(own_dense))
    assert abs(shift) > 1e-3  # the reference does differ
    for mine, theirs in zip(points, against):
        assert theirs.loss_db == pytest.approx(mine.loss_db + shift, abs=1e-6)


@pytest.mark.parametrize("extra, message", [([], "no images"), (["--budget", "-1"], "budget"),
                                            (["--budget", "abc"], "budget")])
def test_calibrate_errors_are_one_line(tmp_path, capsys, extra, message):
    rc = calibrate_cli.main(["--model", "carn_m", "--scale", "4", "--images", str(tmp_path),
                             "--json", str(tmp_path / "op.json"), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert len(err.splitlines()) == 1 and err.startswith("amsr-calibrate: error:") and message in err
    assert not (tmp_path / "op.json").exists()

"""Row execution of CARN / CARN-M (``amsr.rows``): the same SR output as the accelerated model it replaces,
a cost that follows the masks, and an exported graph onnxruntime runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from amsr.core.cost import run_counting_macs
from amsr.masking.mask import MaskConfig
from amsr.models import load_model, unwrap_accelerated
from amsr.rows import row_program
from amsr.rows.carn import RowCARN
from amsr.surgery import accelerate
from amsr.zoo import get_architecture
from amsr.zoo.carn_arch import CARN
from tests.conftest import weight_file

BLEND = MaskConfig(dilation=4, output_dilation=3)
# Fine-tuned weights tolerate the skip, so their blend may keep more than the network computes (d_out > d_net).
WIDE_BLEND = MaskConfig(dilation=1, output_dilation=3)


def _random_carn(efficient: bool, scale: int) -> CARN:
    torch.manual_seed(0)
    g = 4 if efficient else 1
    net = CARN(efficient=efficient, body_group=g, up_group=g, scale=scale).eval()
    with torch.no_grad():  # O(1) activations through the deep cascade, so that differences show
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.weight.requires_grad:
                m.weight.mul_(0.5)
    return net


def _accelerated(net: CARN, arch: str, scale: int, config: MaskConfig = BLEND):  # type: ignore[no-untyped-def]
    return accelerate(net, get_architecture(arch).rules, config, tail=get_architecture(arch).rules.tail(scale)).eval()


def _textured(n: int, h: int, w: int) -> torch.Tensor:
    """Flat background with a few textured patches: a sparse, scattered mask like a photo's."""
    g = torch.Generator().manual_seed(1)
    x = torch.full((n, 3, h, w), 0.4) + 0.01 * torch.rand(n, 3, h, w, generator=g)
    x[:, :, 3:12, 5:20] = torch.rand(n, 3, 9, 15, generator=g)
    x[:, :, h - 10:h - 2, w - 9:w] = torch.rand(n, 3, 8, 9, generator=g)
    x[:, :, h // 2, :] = 0.9
    return x


@pytest.mark.parametrize("efficient, arch", [(False, "carn"), (True, "carn_m")])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("config", [BLEND, WIDE_BLEND], ids=["blend", "wide_blend"])
def test_rows_equal_the_accelerated_model(efficient: bool, arch: str, scale: int, config: MaskConfig) -> None:
    acc = _accelerated(_random_carn(efficient, scale), arch, scale, config)
    program = row_program(acc)
    assert isinstance(program, RowCARN)
    x = _textured(2, 29, 37)  # batch of 2, odd sizes: masks touch the border
    with torch.no_grad():
        ref, y = acc(x), program(x)
    density = float(acc.last_mask.mean())
    assert 0.1 < density < 0.9  # really sparse, not all or nothing
    assert (y - ref).abs().max() < 1e-5


def test_no_row_program_without_the_blend_or_for_other_models() -> None:
    raw = _accelerated(_random_carn(True, 4), "carn_m", 4, MaskConfig(dilation=2))
    assert row_program(raw) is None  # without the blend every pixel's network output is kept


def test_all_active_rows_cost_exactly_the_dense_network() -> None:
    """A flat image gives an all-ones mask: the row program then computes every layer everywhere, and its
    count must equal amsr.core.cost's count of the dense network (grouped convs counted as grouped)."""
    net = _random_carn(True, 4)
    program = row_program(_accelerated(net, "carn_m", 4))
    assert program is not None
    x = torch.full((1, 3, 16, 20), 0.5)
    _, dense = run_counting_macs(net, x)
    _, rows = run_counting_macs(program, x)
    assert rows == dense
    y = _textured(1, 29, 37)
    _, sparse_rows = run_counting_macs(program, y)
    _, dense_y = run_counting_macs(net, y)
    assert sparse_rows < 0.9 * dense_y


def test_rows_on_a_photo_with_the_real_checkpoint(weights_dir: Path, data_dir: Path) -> None:
    """CARN-M x4 at its shipped default on a Photos2K crop: same output, and most of the compute skipped."""
    from amsr.io.images import list_images, read_rgb8, to_tensor
    from amsr.operating_point import default_operating_point

    weight_file(weights_dir, "carn_m.pth")
    folder = data_dir / "Photos2K" / "x4" / "LR"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    model = load_model("carn_m", 4)
    config = default_operating_point("carn_m", 4)
    assert config is not None and config.output_dilation is not None
    acc = model.accelerated(config)
    program = row_program(unwrap_accelerated(acc))
    assert program is not None
    x = to_tensor(read_rgb8(list_images(folder)[4]))[:, :, 100:196, 200:360].contiguous()  # img_005: density 0.3
    with torch.no_grad():
        ref, y = acc(x), program(x)
    assert (y - ref).abs().max() < 1e-5
    _, rows = run_counting_macs(program, x)
    _, dense = run_counting_macs(model.dense(), x)
    assert rows < 0.8 * dense


def test_exported_rows_graph_matches_pytorch(tmp_path: Path) -> None:
    """The exporter writes the row program for an accelerated CARN-M with a blend (``amsr.execution = rows``)
    and verifies it against PyTorch itself (export_onnx: Polygraphy, atol 1e-4, at 64×64 and 17×23); here
    also on a sparse input in onnxruntime, and with the masks fed as inputs (the tiled runner's graph) —
    which checks that the network and output masks got their own names when d_out > d_net. (A blend with
    d_out < d_net is the shipped default, exported with the real checkpoint by tests/onnx_exports.py and
    run tiled, masks fed, by tests/runtime/test_fidelity.py: one ~70 s export less here.)"""
    config = WIDE_BLEND
    for module in ("onnxruntime", "onnxscript", "onnx_graphsurgeon", "polygraphy"):
        pytest.importorskip(module)
    import onnx
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    from amsr.export.onnx_export import export_onnx
    from amsr.export.passes import mask_as_input, mask_names
    from amsr.runtime.export_check import onnxruntime_check

    acc = _accelerated(_random_carn(True, 2), "carn_m", 2, config)
    out = export_onnx(acc, tmp_path / "rows.onnx", verify=onnxruntime_check)
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["amsr.execution"] == "rows"
    x = _textured(1, 29, 37)
    with torch.no_grad():
        ref = acc(x).numpy()
        mask, output_mask = acc.last_mask.numpy(), acc.last_output_mask.numpy()
    y = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"lr": x.numpy()})[0]
    assert np.abs(y - ref).max() < 1e-4
    graph = gs.import_onnx(proto)
    assert mask_names(graph) == ["mask", "mask/output"]
    fed = gs.export_onnx(mask_as_input(graph)).SerializeToString()
    y2 = ort.InferenceSession(fed, providers=["CPUExecutionProvider"]).run(
        None, {"lr": x.numpy(), "mask": mask, "mask/output": output_mask})[0]
    assert np.abs(y2 - ref).max() < 1e-4

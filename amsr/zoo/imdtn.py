"""IMDTN descriptor (NTIRE 2022 efficient SR challenge, team 09; ofsoundof/NTIRE2022_ESR).

Hyper-parameters are read off the state dict: ``nf``/``in_nc`` from ``fea_conv``, the number of blocks from the
``IMDTB{k}`` prefixes, scale from ``upsampler.0`` rows = out_nc·scale² (out_nc = in_nc), and the Swin group's
window / heads / depth / MLP ratio from block 1's bias table, block count and ``mlp.fc1``.
"""

from __future__ import annotations

import math
import re

from amsr.core.checkpoint import load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules, StateDict, WeightFile
from amsr.zoo.imdtn_arch import IMDTN, IMDTNConfig
from amsr.zoo.swinir_arch import strip_swin_buffers

_SWIN = "IMDTB1.transformer.residual_group.blocks"


def detect(sd: StateDict) -> bool:
    """IMDN skeleton (``fea_conv``, ``IMDTB1.c1``, ``LR_conv``) with a Swin group inside each block."""
    return all(k in sd for k in ("fea_conv.weight", "IMDTB1.c1.weight", "LR_conv.weight", "upsampler.0.weight",
                                 f"{_SWIN}.0.attn.relative_position_bias_table"))


def infer_config(sd: StateDict, scale: int) -> IMDTNConfig:
    """IMDTN hyper-parameters from a canonical state dict; ``CheckpointError`` when they do not fit."""
    if not detect(sd):
        raise CheckpointError("not an IMDTN checkpoint (expected fea_conv, IMDTB1.c1, LR_conv, upsampler.0 and "
                              f"{_SWIN}.0.attn.relative_position_bias_table keys)")
    if scale < 1:
        raise UnsupportedModelError(f"IMDTN: invalid scale x{scale}")
    nf, in_nc = sd["fea_conv.weight"].shape[:2]
    blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"IMDTB(\d+)\.", k))})
    if blocks != list(range(1, len(blocks) + 1)):
        raise CheckpointError(f"IMDTN: block indices {blocks} are not 1..N")
    rows = sd["upsampler.0.weight"].shape[0]
    found = math.isqrt(rows // in_nc)
    if found * found * in_nc != rows:
        raise CheckpointError(f"IMDTN: upsampler.0 has {rows} output channels, not {in_nc}·scale²")
    if found != scale:
        raise CheckpointError(f"this IMDTN checkpoint is x{found}, not x{scale}")
    table_rows, heads = sd[f"{_SWIN}.0.attn.relative_position_bias_table"].shape
    side = math.isqrt(table_rows)
    if side * side != table_rows or side % 2 == 0:
        raise CheckpointError(f"IMDTN: relative_position_bias_table has {table_rows} rows, not (2·ws−1)²")
    depth = len({int(m.group(1)) for k in sd if (m := re.match(rf"{re.escape(_SWIN)}\.(\d+)\.", k))})
    fc1 = sd.get(f"{_SWIN}.0.mlp.fc1.weight")
    if fc1 is None:
        raise CheckpointError(f"IMDTN: missing {_SWIN}.0.mlp.fc1.weight")
    return IMDTNConfig(upscale=scale, in_nc=in_nc, out_nc=in_nc, nf=nf, num_modules=len(blocks),
                       window_size=(side + 1) // 2, num_heads=heads, depth=depth, mlp_ratio=fc1.shape[0] / nf)


def build(sd: StateDict, scale: int) -> IMDTN:
    """An IMDTN with the checkpoint's weights loaded strictly (official Swin buffers checked, then rebuilt)."""
    net = IMDTN(infer_config(sd, scale))
    source = "IMDTN checkpoint"
    load_strict(net, strip_swin_buffers(sd, net, source), source)
    return net.eval()


ARCH = Architecture(
    id="imdtn",
    description="IMDTN (NTIRE 2022 ESR team 09): IMDN blocks with SwinIR residual Swin groups; "
                "github.com/ofsoundof/NTIRE2022_ESR",
    scales=(4,),
    weights=(WeightFile(scale=4, filename="imdtn_x4.pth",
                        url="https://github.com/ofsoundof/NTIRE2022_ESR/raw/main/model_zoo/team09_imdtn.pth",
                        sha256="2eec5fc0276b6a9a68287ca57c66ae42f9ff182e7401d938ad381d03f4b1b4e7"),),
    detect=detect,
    build=build,
    # The Swin window of the released model is 6 (not 8): feature maps must be multiples of 6.
    size=SizeRequirements(multiple_of=6, pad_mode="reflect"),
    rules=SparseRules(
        # No conv rule on purpose. The two in==out 3×3 convs are poor identity candidates because each feeds
        # a residual sum (c1: shuffle(c1(x) + x); LR_conv: LR_conv(b) + fea), so passing the input through
        # where the mask is 0 does not approximate them. Measured on Set5 x4 with the default mask (50 %
        # density; dense 32.18 dB): IMDTB*.c1 → 13.3 dB, LR_conv → 29.5 dB (IMDN's c1 rule: 32.21 → 31.18).
        windows=("IMDTB*.transformer.residual_group.blocks.*",),
        # Its blend needs a wider output mask than the CNNs': on flat photos IMDTN beats bicubic where the mask
        # is 0 (CARN-M does not), so the bicubic region costs. Photos2K x4, 12 photos (scripts/
        # photos_margin_study.py, results/eval/photos/imdtn_x4_photos2k_margin.txt), d_net/d_out: 6/3 −0.104 dB
        # mean, worst −0.282; 10/5 −0.032 / −0.105; 10/6 −0.032 / −0.098; 12/6 −0.025 / −0.076. On 4 of them
        # 9/3 = 12/3 and 10/5 ≈ 12/5: past a 4-px margin d_out sets the loss (9/6, margin 3, not measured).
        # The calibration crops are textured and show none of it (6/3: 0.041 dB there). Photos2K chose this
        # floor, so it is not a held-out test of it; Set14 is (−0.013 dB).
        min_blend_margin=4,
        min_output_dilation=6,
        tail=lambda s: [("upsampler.0", 1)],
    ),
    # Small activations: the released file scores the same Set5 PSNR in fp16 as in fp32 (32.177 dB, CPU).
    supports_half=True,
)

"""HiT-SRF: hierarchical-window transformer on a SwinIR-light skeleton; the official ×4 lightweight model as
shipped in the NTIRE 2025 ESR model zoo (team 54)."""

from __future__ import annotations

import re

from amsr.core.checkpoint import load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules, StateDict, WeightFile
from amsr.zoo.hit_srf_arch import UPSAMPLERS, WINDOW_RATIOS, HiTSRF, HiTSRFConfig

_URL = "https://github.com/Amazingren/NTIRE2025_ESR/raw/main/model_zoo/team54_HITSR.pth"
_SHA256 = "dffb47c5a7e1e28755cde32d9fa4c19f14e965d6c63491da39419bf3699ec456"
_BLOCK = "layers.{}.residual_group.blocks.{}."
# Only HiT-SR's SCC has a spatial_linear, and only HiT-SRF (not HiT-SIR/-SNG) has the depthwise-conv FFN;
# SwinIR blocks carry attn.* instead.
_SIGNATURE = ("conv_first.weight",
              "layers.0.residual_group.blocks.0.correlation.spatial_linear.weight",
              "layers.0.residual_group.blocks.0.mlp.dwconv.depthwise_conv.0.weight")


def detect(sd: StateDict) -> bool:
    """True for the HiT-SRF key layout (not SwinIR, HiT-SIR or HiT-SNG)."""
    return all(k in sd for k in _SIGNATURE)


def _count(sd: StateDict, pattern: str) -> int:
    """Number of consecutive indices i = 0, 1, … for which some key starts with ``pattern.format(i)``."""
    n = 0
    while any(k.startswith(pattern.format(n)) for k in sd):
        n += 1
    return n


def infer_config(sd: StateDict, scale: int) -> HiTSRFConfig:
    """Hyper-parameters from key names and shapes (see the module docstring of ``hit_srf_arch``)."""
    if not detect(sd):
        raise CheckpointError("not a HiT-SRF state dict (no correlation.spatial_linear / mlp.dwconv keys)")
    in_chans = sd["conv_first.weight"].shape[1]
    embed_dim = sd["conv_first.weight"].shape[0]
    n_layers = _count(sd, "layers.{}.")
    depths = tuple(_count(sd, _BLOCK.format(i, "{}")) for i in range(n_layers))
    if not depths or min(depths) < 1 or max(depths) > len(WINDOW_RATIOS):
        raise CheckpointError(f"HiT-SRF: blocks per group {depths}; the published window ratios allow "
                              f"1 to {len(WINDOW_RATIOS)}")
    try:
        # the last Linear of the position-bias MLP emits one value per head
        heads = tuple(sd[_BLOCK.format(i, 0) + "correlation.pos.pos3.2.weight"].shape[0] for i in range(n_layers))
        mlp_hidden = sd[_BLOCK.format(0, 0) + "mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"HiT-SRF state dict lacks {e.args[0]}") from None
    if scale < 1:
        raise UnsupportedModelError(f"HiT-SRF: invalid scale x{scale}")
    if "conv_before_upsample.0.weight" in sd:
        upsampler = "pixelshuffle"
        n_convs = len([k for k in sd if re.fullmatch(r"upsample\.\d+\.weight", k)])
        feats = sd["conv_before_upsample.0.weight"].shape[0]
        # one conv emitting 9·feats is the ×3 head; otherwise one conv per factor 2
        triple = n_convs == 1 and sd["upsample.0.weight"].shape[0] == 9 * feats
        trained = 3 if triple else 2 ** n_convs
    elif "upsample.0.weight" in sd:
        upsampler = "pixelshuffledirect"
        trained = round((sd["upsample.0.weight"].shape[0] / in_chans) ** 0.5)
    else:
        raise CheckpointError(f"HiT-SRF: no supported upsampler found ({', '.join(UPSAMPLERS)})")
    if trained != scale:
        raise CheckpointError(f"HiT-SRF checkpoint upsamples x{trained}, not x{scale}")
    return HiTSRFConfig(scale=scale, in_chans=in_chans, embed_dim=embed_dim, depths=depths, num_heads=heads,
                        mlp_hidden=mlp_hidden, upsampler=upsampler, patch_norm="patch_embed.norm.weight" in sd)


def build(sd: StateDict, scale: int) -> HiTSRF:
    """Infer the config, build and load strictly. HiT-SRF has no buffers in its checkpoints: the position
    bias is an MLP over offsets evaluated each call and the RGB mean is a non-persistent buffer."""
    net = HiTSRF(infer_config(sd, scale))
    load_strict(net, sd, "HiT-SRF checkpoint")
    return net.eval()


ARCH = Architecture(
    id="hit_srf",
    description="HiT-SRF (Zhang et al., ECCV 2024), lightweight x4; XiangZ-0/HiT-SR via NTIRE2025_ESR team54",
    scales=(4,),
    weights=(WeightFile(4, "hit_srf_x4.pth", _URL, _SHA256),),
    detect=detect,
    build=build,
    # No outer constraint: each block reflect-pads to its own window (4…64) and crops back, so the net runs on
    # any size, and the authors score the whole LR image unpadded (Set5 32.558 here; 32.555 padded to 8).
    size=SizeRequirements(multiple_of=1, pad_mode="reflect"),
    supports_half=False,
    # The hierarchical blocks themselves (not their sub-modules): ≤ 6 per group, so one digit.
    rules=SparseRules(windows=("layers.*.residual_group.blocks.[0-9]",), window_export=False),
)

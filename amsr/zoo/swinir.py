"""SwinIR descriptor: classical, lightweight and real-world SR from the official release files.

Every hyper-parameter is read off the state dict (key presence and tensor shapes), so any SwinIR SR file in
the official layout loads, not only the released configurations:

* variant / upsampler: ``conv_up1`` → real (``nearest+conv``); ``conv_before_upsample`` → classical
  (``pixelshuffle``); ``upsample.0`` alone → lightweight (``pixelshuffledirect``); none → not an SR model;
* ``in_chans`` = ``conv_first.weight.shape[1]``; ``embed_dim`` = ``conv_first.weight.shape[0]``;
* ``depths`` = number of ``layers.i.residual_group.blocks.j`` per layer; ``num_heads`` = columns of each
  layer's ``relative_position_bias_table``; ``window_size`` from its ``(2ws−1)²`` rows;
* ``mlp_ratio`` = ``mlp.fc1`` rows / ``embed_dim``; ``qkv_bias`` = ``attn.qkv.bias`` present;
  ``patch_norm`` = ``patch_embed.norm`` present; ``resi_connection`` = ``conv_after_body.weight`` ('1conv')
  or ``conv_after_body.0.weight`` ('3conv'); ``num_feat`` = ``conv_before_upsample.0`` rows;
* scale: classical from the number and width of ``upsample.{0,2,..}`` convs, lightweight from
  ``upsample.0`` rows = scale²·in_chans, real from ``conv_up2`` (x4) or its absence (x2);
* ``img_size`` (training patch) from the ``attn_mask`` of a shifted block: nW windows → √nW·ws; when the file
  carries ``relative_position_index`` but no mask at all, the official model had a patch ≤ window (one
  unshifted window, img_size = ws); otherwise the official default 64. ``img_range`` is 1.0 (all SR releases).
"""

from __future__ import annotations

import math
import re

from amsr.core.checkpoint import load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules, StateDict, WeightFile
from amsr.zoo.swinir_arch import SwinIR, SwinIRConfig, strip_swin_buffers

_RELEASE = "https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
_VARIANT_UPSAMPLER = {"classical": "pixelshuffle", "lightweight": "pixelshuffledirect", "real": "nearest+conv"}
_VARIANT_SCALES = {"classical": (2, 3, 4, 8), "lightweight": (2, 3, 4, 8), "real": (2, 4)}
_BLOCK = re.compile(r"^layers\.(\d+)\.residual_group\.blocks\.(\d+)\.")


def _release(scale: int, name: str, variant: str) -> WeightFile:
    # The authors publish no checksums and the files are not mirrored here, so the digest is unknown:
    # sha256 "" tells the downloader to skip verification for these files.
    return WeightFile(scale=scale, filename=name, url=_RELEASE + name, sha256="", variant=variant)


WEIGHTS = (
    *(_release(s, f"001_classicalSR_DF2K_s64w8_SwinIR-M_x{s}.pth", "classical") for s in (2, 3, 4)),
    *(_release(s, f"002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{s}.pth", "lightweight") for s in (2, 3, 4)),
    _release(4, "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth", "real"),
)


def detect(sd: StateDict) -> bool:
    """SwinIR layout: shallow conv, window-attention RSTBs with a bias table, final norm, body conv."""
    return (all(k in sd for k in ("conv_first.weight", "norm.weight",
                                  "layers.0.residual_group.blocks.0.attn.relative_position_bias_table",
                                  "layers.0.residual_group.blocks.0.attn.qkv.weight"))
            and ("conv_after_body.weight" in sd or "conv_after_body.0.weight" in sd))


def detect_variant(sd: StateDict) -> str:
    """``"classical"``, ``"lightweight"`` or ``"real"`` from the reconstruction keys (as spandrel does)."""
    if "conv_up1.weight" in sd:
        return "real"
    if "conv_before_upsample.0.weight" in sd:
        return "classical"
    if "upsample.0.weight" in sd:
        return "lightweight"
    raise UnsupportedModelError("SwinIR checkpoint without an upsampler (denoising / JPEG artefact removal): "
                                "not a super-resolution model")


def _infer_scale(sd: StateDict, variant: str, in_chans: int, num_feat: int) -> int:
    if variant == "real":
        return 4 if "conv_up2.weight" in sd else 2
    if variant == "lightweight":
        rows = sd["upsample.0.weight"].shape[0]
        scale = math.isqrt(rows // in_chans)
        if scale * scale * in_chans != rows:
            raise CheckpointError(f"SwinIR: upsample.0 has {rows} output channels, not scale²·{in_chans}")
        return scale
    convs = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"upsample\.(\d+)\.weight", k)))
    if not convs:
        raise CheckpointError("SwinIR classical checkpoint without upsample convs (upsample.0.weight)")
    widths = [sd[f"upsample.{i}.weight"].shape[0] for i in convs]
    if convs == [0] and widths == [9 * num_feat]:
        return 3
    if convs == list(range(0, 2 * len(convs), 2)) and all(w == 4 * num_feat for w in widths):
        return 2 ** len(convs)
    raise CheckpointError(f"SwinIR: upsample convs {convs} with widths {widths} fit no pixelshuffle scale")


def _layer_shapes(sd: StateDict) -> tuple[list[int], list[int], int]:
    """Blocks per layer, heads per layer and window size from the bias tables."""
    blocks: dict[int, set[int]] = {}
    for k in sd:
        if m := _BLOCK.match(k):
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if sorted(blocks) != list(range(len(blocks))) or any(sorted(b) != list(range(len(b))) for b in blocks.values()):
        raise CheckpointError("SwinIR: layer/block indices are not contiguous")
    depths = [len(blocks[i]) for i in range(len(blocks))]
    heads, windows = [], set()
    for i, depth in enumerate(depths):
        for j in range(depth):
            key = f"layers.{i}.residual_group.blocks.{j}.attn.relative_position_bias_table"
            if key not in sd:
                raise CheckpointError(f"SwinIR: missing {key}")
            rows, h = sd[key].shape
            side = math.isqrt(rows)
            if side * side != rows or side % 2 == 0:
                raise CheckpointError(f"SwinIR: {key} has {rows} rows, not (2·ws−1)²")
            windows.add((side + 1) // 2)
            if j == 0:
                heads.append(h)
    if len(windows) != 1:
        raise CheckpointError(f"SwinIR: blocks use different window sizes {sorted(windows)}")
    return depths, heads, windows.pop()


def _infer_img_size(sd: StateDict, window_size: int, depths: list[int]) -> int:
    masks = [v for k, v in sd.items() if k.endswith(".attn_mask")]
    if masks:
        side = math.isqrt(masks[0].shape[0])
        # Non-square training patches cannot be told apart; img_size then only has to exceed the window.
        return side * window_size if side * side == masks[0].shape[0] else 64
    has_index = any(k.endswith(".attn.relative_position_index") for k in sd)
    if has_index and max(depths) >= 2:
        return window_size  # buffers saved but no shifted block: official patch ≤ window, shifting disabled
    return 64


def infer_config(sd: StateDict, scale: int) -> SwinIRConfig:
    """Every SwinIR hyper-parameter from a canonical state dict (see the module docstring for the rules).

    Raises:
        UnsupportedModelError: not an SR model, absolute position embedding, or a scale the variant lacks.
        CheckpointError: the keys or shapes are inconsistent, or the file is for another scale.
    """
    if not detect(sd):
        raise CheckpointError("not a SwinIR checkpoint (expected conv_first, layers.N.residual_group.blocks.M."
                              "attn.relative_position_bias_table, norm and conv_after_body keys)")
    variant = detect_variant(sd)
    if scale not in _VARIANT_SCALES[variant]:
        raise UnsupportedModelError(f"SwinIR {variant} supports x{', x'.join(map(str, _VARIANT_SCALES[variant]))}, "
                                    f"not x{scale}")
    if "absolute_pos_embed" in sd:
        raise UnsupportedModelError("SwinIR with absolute position embedding (ape=True) is not supported: "
                                    "it ties the model to one input size")
    in_chans, embed_dim = sd["conv_first.weight"].shape[1], sd["conv_first.weight"].shape[0]
    depths, heads, window_size = _layer_shapes(sd)
    fc1 = sd.get("layers.0.residual_group.blocks.0.mlp.fc1.weight")
    if fc1 is None:
        raise CheckpointError("SwinIR: missing layers.0.residual_group.blocks.0.mlp.fc1.weight")
    mlp_ratio = fc1.shape[0] / embed_dim
    if int(embed_dim * mlp_ratio) != fc1.shape[0]:
        raise CheckpointError(f"SwinIR: MLP width {fc1.shape[0]} is not int(embed_dim·ratio) for any ratio")
    if "conv_after_body.weight" in sd:
        resi = "1conv"
    elif "conv_after_body.0.weight" in sd and "conv_after_body.4.weight" in sd:
        resi = "3conv"
    else:
        raise CheckpointError("SwinIR: conv_after_body is neither '1conv' nor '3conv'")
    num_feat = sd["conv_before_upsample.0.weight"].shape[0] if variant != "lightweight" else 64
    found = _infer_scale(sd, variant, in_chans, num_feat)
    if found != scale:
        raise CheckpointError(f"this SwinIR {variant} checkpoint is x{found}, not x{scale}")
    return SwinIRConfig(
        upscale=scale, in_chans=in_chans, img_size=_infer_img_size(sd, window_size, depths), embed_dim=embed_dim,
        depths=tuple(depths), num_heads=tuple(heads), window_size=window_size, mlp_ratio=mlp_ratio,
        qkv_bias="layers.0.residual_group.blocks.0.attn.qkv.bias" in sd,
        patch_norm="patch_embed.norm.weight" in sd, img_range=1.0, upsampler=_VARIANT_UPSAMPLER[variant],
        resi_connection=resi, num_feat=num_feat)


def build(sd: StateDict, scale: int) -> SwinIR:
    """A SwinIR with the checkpoint's weights loaded strictly (official buffers checked, then rebuilt)."""
    net = SwinIR(infer_config(sd, scale))
    source = "SwinIR checkpoint"
    load_strict(net, strip_swin_buffers(sd, net, source), source)
    return net.eval()


ARCH = Architecture(
    id="swinir",
    description="SwinIR (Liang et al., ICCVW 2021): Swin-Transformer SR, classical/lightweight/real-world; "
                "github.com/JingyunLiang/SwinIR",
    scales=(2, 3, 4),
    weights=WEIGHTS,
    detect=detect,
    build=build,
    # Official window size 8; the forward also pads itself (check_image_size), so this is a no-op there.
    size=SizeRequirements(multiple_of=8, pad_mode="reflect"),
    # Every SwinTransformerBlock (fnmatch's * also matches their children: select by type).
    rules=SparseRules(windows=("layers.*.residual_group.blocks.*",)),
    # fp16 overflows in attention logits / LayerNorm of the large models.
    supports_half=False,
    variants=("classical", "lightweight", "real"),
)

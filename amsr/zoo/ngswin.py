"""NGswin descriptor: the official lightweight x2/x3 models (rami0205/NGramSwin, ``pretrain/NGswin_x*.pth``).

Every hyper-parameter is read off the state dict:

* ``in_chans``, ``embed_dim`` from ``shallow_extract.conv1.weight``; encoder stages = ``encoder_layer{1..}``;
  depth of a stage = its number of ``blocks.N``;
* per stage: heads = rows of block 0's ``attn.logit_scale``; channels per head = ``attn.qkv`` rows / (3·heads);
  window size from ``ngram_context.unigram_embed`` (kernel = stride = ws); N-gram size from the
  ``ngram_attn.relative_position_bias_table`` rows (2n−1)²; FFN width = ``ffn.fc1`` rows;
* ``qkv_bias`` = ``attn.qkv.bias`` present; scale from ``to_target.before_shuffle`` rows = in_chans·scale².

The normalisation constants (mean/std per scale) are not in the file: they are the official ones.
"""

from __future__ import annotations

import math
import re

from amsr.core.checkpoint import load_strict
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.zoo.descriptor import Architecture, SparseRules, StateDict, WeightFile
from amsr.zoo.ngswin_arch import IMG_STD, NGswin, NGswinConfig, StageConfig, strip_ngswin_buffers

_RAW = "https://github.com/rami0205/NGramSwin/raw/main/pretrain/"
WEIGHTS = (
    WeightFile(scale=2, filename="ngswin_x2.pth", url=_RAW + "NGswin_x2.pth",
               sha256="99b8c315a6135f03e2c9b062b100e2601dc7b6bdc20d9a723fec7b3ef97619bb"),
    WeightFile(scale=3, filename="ngswin_x3.pth", url=_RAW + "NGswin_x3.pth",
               sha256="8ebf328a540461477f30495da6d5303df18cd6db06b853640024951ed0e128ac"),
)

_NGRAM = "ngram_window_partition.ngram_context."
# Keys only NGswin has: the U-Net-like stage names, the N-gram context and the SCDP bottleneck.
_SIGNATURE = ("shallow_extract.conv1.weight",
              f"encoder_layer1.blocks.0.{_NGRAM}unigram_embed.weight",
              "encoder_layer1.blocks.0.attn.logit_scale",
              "bottleneck.pointwise.weight",
              "decoder_layer1.blocks.0.attn.qkv.weight",
              "to_target.before_shuffle.weight")


def detect(sd: StateDict) -> bool:
    """NGswin layout: shallow conv, N-gram encoder/decoder stages, SCDP bottleneck, ``to_target`` head."""
    return all(k in sd for k in _SIGNATURE)


def _shape(sd: StateDict, key: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"NGswin checkpoint lacks {key}")
    return tuple(sd[key].shape)


def _depth(sd: StateDict, prefix: str) -> int:
    indices = sorted({int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k))})
    if not indices or indices != list(range(len(indices))):
        raise CheckpointError(f"NGswin: block indices of {prefix.rstrip('.')} are {indices}, not 0..N-1")
    return len(indices)


def _stage(sd: StateDict, prefix: str) -> tuple[StageConfig, int]:
    """The stage under ``prefix`` (e.g. ``"encoder_layer2."``) and its window size, from block 0's shapes."""
    block = prefix + "blocks.0."
    heads = _shape(sd, block + "attn.logit_scale")[0]
    qkv_rows = _shape(sd, block + "attn.qkv.weight")[0]
    if qkv_rows % (3 * heads):
        raise CheckpointError(f"NGswin: {block}attn.qkv has {qkv_rows} rows, not 3·{heads} heads·head_dim")
    kernel = _shape(sd, block + _NGRAM + "unigram_embed.weight")
    window = kernel[-1]
    rows = _shape(sd, block + _NGRAM + "ngram_attn.relative_position_bias_table")[0]
    side = math.isqrt(rows)
    if side * side != rows or side % 2 == 0 or kernel[-2] != window:
        raise CheckpointError(f"NGswin: {block}{_NGRAM}ngram_attn bias table has {rows} rows, not (2n−1)²")
    stage = StageConfig(depth=_depth(sd, prefix), num_heads=heads, head_dim=qkv_rows // (3 * heads),
                        ngram=(side + 1) // 2, mlp_hidden=_shape(sd, block + "ffn.fc1.weight")[0])
    return stage, window


def infer_config(sd: StateDict, scale: int) -> NGswinConfig:
    """NGswin hyper-parameters from a canonical state dict (see the module docstring).

    Raises:
        CheckpointError: not an NGswin layout, inconsistent shapes, or a file for another scale.
        UnsupportedModelError: a scale or channel count the official normalisation constants do not cover.
    """
    if not detect(sd):
        raise CheckpointError("not an NGswin checkpoint (expected " + ", ".join(_SIGNATURE) + ")")
    embed_dim, in_chans = _shape(sd, "shallow_extract.conv1.weight")[:2]
    rows = _shape(sd, "to_target.before_shuffle.weight")[0]
    found = math.isqrt(rows // in_chans)
    if found * found * in_chans != rows:
        raise CheckpointError(f"NGswin: to_target.before_shuffle has {rows} output channels, not {in_chans}·scale²")
    if found != scale:
        raise CheckpointError(f"this NGswin checkpoint is x{found}, not x{scale}")
    if scale not in IMG_STD or in_chans != 3:
        raise UnsupportedModelError(f"NGswin: the official normalisation covers RGB at x2/x3/x4, not "
                                    f"{in_chans} channels at x{scale}")
    n_stages = 0
    while any(k.startswith(f"encoder_layer{n_stages + 1}.") for k in sd):
        n_stages += 1
    stages = [_stage(sd, f"encoder_layer{i + 1}.") for i in range(n_stages)]
    decoder, dec_window = _stage(sd, "decoder_layer1.")
    windows = {w for _, w in stages} | {dec_window}
    if len(windows) != 1:
        raise CheckpointError(f"NGswin: stages use different window sizes {sorted(windows)}")
    return NGswinConfig(scale=scale, in_chans=in_chans, embed_dim=embed_dim, window_size=windows.pop(),
                        encoder=tuple(s for s, _ in stages), decoder=decoder,
                        qkv_bias="encoder_layer1.blocks.0.attn.qkv.bias" in sd)


def build(sd: StateDict, scale: int) -> NGswin:
    """An NGswin with the checkpoint's weights loaded strictly (constant buffers checked, then rebuilt)."""
    cfg = infer_config(sd, scale)
    try:
        net = NGswin(cfg)
    except ValueError as e:  # shapes that fit no NGswin (e.g. channels the pixel shuffles cannot split)
        raise CheckpointError(f"NGswin checkpoint: {e}") from None
    source = "NGswin checkpoint"
    load_strict(net, strip_ngswin_buffers(sd, net, source), source)
    return net.eval()


ARCH = Architecture(
    id="ngswin",
    description="NGswin (Choi et al., CVPR 2023): N-gram shifted-window transformer, lightweight x2/x3; "
                "github.com/rami0205/NGramSwin",
    scales=(2, 3),
    weights=WEIGHTS,
    detect=detect,
    build=build,
    # Window 8 × 2² downsamplings = 32 (official unit 4·ws); ≥ 64 so that the 1/4-resolution stage holds the
    # 2 windows per axis its 2-gram padding needs (the official code fails below that).
    size=NGswinConfig(scale=2).size_requirements(),
    # Only the LR-resolution stages: encoder_layer2/3 run on 2×/4× merged maps (≈ 9 % of block MACs).
    rules=SparseRules(windows=("encoder_layer1.blocks.*", "decoder_layer1.blocks.*"), window_export=False),
    # Not measured in fp16 (cosine attention, LayerNorms on un-normalised branches).
    supports_half=False,
)

"""One masked 3×3 conv on a GPU: the ``amsr::MaskedConv3x3`` Triton kernel, PyTorch's pixel and tile paths and
the dense cuDNN conv they replace, on the same feature map under real masks (needs CUDA and Triton).

The feature map is C×(LR size) of a real image (features = the image's channels repeated with noise, so the
values are of the right scale; only the mask's layout matters for speed). Masks: the amsr mask of that image
at dilation 0/1/3, plus all-zero and all-one. Each row: median ms (``triton.testing.do_bench``), ratio to the
dense conv in the same run, and the largest deviation from the fp32 reference (``masked_conv3x3_torch``,
TF32 off). Usage::

    python scripts/bench_kernel_gpu.py --image LR.png --json kernel.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from amsr.cli.common import write_json
from amsr.io.images import read_rgb8, to_tensor
from amsr.masking.mask import MaskConfig, MaskGenerator
from amsr.plugins.masked_conv3x3 import masked_conv3x3_torch
from amsr.plugins.masked_conv3x3_triton import launch
from amsr.sparse.pixel import MaskContext, MaskedConv2d
from amsr.sparse.tiles import TileIndices, tile_conv


def _bench_fn(dev: torch.device):  # type: ignore[no-untyped-def]
    if dev.type == "cuda":
        from triton.testing import do_bench

        return do_bench

    def once(fn):  # type: ignore[no-untyped-def]
        import time

        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return once


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--image", type=Path, required=True, help="an LR image (its size and mask are used)")
    p.add_argument("--channels", type=int, nargs="+", default=[64])
    p.add_argument("--groups", type=int, nargs="+", default=[1, 4])
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--device", default="cuda", help="cuda (default); cpu only to check this script (TRITON_INTERPRET=1)")
    args = p.parse_args()
    dev = torch.device(args.device)
    do_bench = _bench_fn(dev)
    img = to_tensor(read_rgb8(args.image)).to(dev)
    h, w = img.shape[-2:]
    masks = {"zeros": torch.zeros(1, 1, h, w, device=dev), "ones": torch.ones(1, 1, h, w, device=dev)}
    for d in (0, 1, 3):
        masks[f"amsr_d{d}"] = MaskGenerator(MaskConfig(dilation=d)).to(dev)(img)
    rows = []
    # The mask itself: torch ops vs the Triton 2-means, each eager and replayed from a CUDA graph.
    mask_ms: dict[str, object] = {}
    with torch.no_grad():
        ref_mask = MaskGenerator(MaskConfig(dilation=1), triton_kmeans=False).to(dev).eager(img)
        for kind, tri in (("torch", False), ("triton", True)):
            gen = MaskGenerator(MaskConfig(dilation=1), triton_kmeans=tri).to(dev)
            for _ in range(3):
                gen(img)  # the second call captures the graph
            mask_ms[f"{kind}_eager_ms"] = round(do_bench(lambda: gen.eager(img)), 4)
            mask_ms[f"{kind}_graph_ms"] = round(do_bench(lambda: gen(img)), 4)
            mask_ms[f"{kind}_graph_equals_eager"] = bool(torch.equal(gen(img), gen.eager(img)))
            mask_ms[f"{kind}_pixels_differing_from_torch"] = int((gen(img) != ref_mask).sum())
    print(json.dumps(mask_ms), flush=True)
    g = torch.Generator(device=dev).manual_seed(0)
    for c in args.channels:
        x = img.repeat(1, (c + 2) // 3, 1, 1)[:, :c] + 0.1 * torch.randn(1, c, h, w, device=dev, generator=g)
        for groups in args.groups:
            conv = torch.nn.Conv2d(c, c, 3, padding=1, groups=groups).to(dev)
            wt, b = conv.weight.detach(), conv.bias.detach()
            dense_ms = do_bench(lambda: F.conv2d(x, wt, b, padding=1, groups=groups))
            for name, m in masks.items():
                ctx = MaskContext()
                ctx.mask = m
                pixel = MaskedConv2d(conv, ctx)
                # Values first, in full fp32 (TF32 off); tile paths compute whole tiles, so they are compared
                # with the conv on the masked pixels only.
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
                with torch.no_grad():
                    ref = masked_conv3x3_torch(x, m, wt, b, groups)
                    conv_all = masked_conv3x3_torch(x, torch.ones_like(m), wt, b, groups)
                    err = {"triton": (launch(x, m, wt, b, groups) - ref).abs().max().item(),
                           "pixel": (pixel(x) - ref).abs().max().item()}
                    for t in (8, 16):
                        y = tile_conv(x, TileIndices().of(m, t), conv, t)
                        err[f"tile{t}"] = ((y - conv_all) * m).abs().max().item()
                torch.backends.cudnn.allow_tf32 = True  # PyTorch's default for convs: timings as users get them
                torch.backends.cuda.matmul.allow_tf32 = False
                calls = {"triton": lambda: launch(x, m, wt, b, groups), "pixel": lambda: pixel(x)}
                for t in (8, 16):
                    idx = TileIndices().of(m, t)
                    calls[f"tile{t}"] = lambda idx=idx, t=t: tile_conv(x, idx, conv, t)
                with torch.no_grad():
                    for k, fn in calls.items():
                        ms = do_bench(fn)
                        rows.append({"channels": c, "groups": groups, "size": [h, w], "mask": name,
                                     "density": round(float(m.mean()), 4), "path": k, "ms": round(ms, 4),
                                     "dense_ms": round(dense_ms, 4), "ratio": round(ms / dense_ms, 3),
                                     "max_abs_err": err[k]})
                        print(json.dumps(rows[-1]), flush=True)
    doc = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "image": args.image.name, "mask": mask_ms, "note": "dense = F.conv2d (cuDNN, TF32 allowed for convs as in PyTorch's default); "
           "max_abs_err against the fp32 reference, every path run with TF32 off", "rows": rows}
    write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

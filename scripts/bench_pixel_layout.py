"""One masked 3×3 conv in onnxruntime CPU, three ways, on the same map and mask (a layout experiment for #7):

- ``dense``: the Conv it replaces;
- ``nhwc``: amsr's exported pixel stage (Pad → NHWC Transpose → GatherND of the 9 taps → MatMul → ScatterND
  into the NHWC map → NCHW Transpose), as ``export.exportable.GatherScatterConv2d`` writes it;
- ``channel_major``: the same values with the map kept channel-major: a C×(N·H·W) view, Gather on axis 1 of
  the 9·P tap columns (tap-major, so the weights need no permute), MatMul, ScatterElements on axis 1 — no
  transpose of the whole map (only of the N axis, a copy when N = 1).

Prints and writes per-call medians and ratios to dense. Usage::

    python scripts/bench_pixel_layout.py --size 256 --channels 64 --density 0.25 0.5 0.75 --json out.json
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amsr.cli.common import write_json
from amsr.export.exportable import GatherScatterConv2d, SparseIndices
from amsr.runtime.onnxrt import session_options
from amsr.sparse.pixel import MaskContext, MaskedConv2d


class ChannelMajorConv(nn.Module):
    """The masked conv's sparse path with the map kept channel-major (see the module docstring)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g, o = self.conv.groups, self.conv.out_channels
        pix = torch.nonzero(mask[:, 0] > 0.5)  # P × 3 (n, i, j)
        p = pix.shape[0]
        hp, wp = h + 2, w + 2
        xp = F.pad(x, (1, 1, 1, 1)).transpose(0, 1).reshape(c, n * hp * wp)
        base = (pix[:, 0] * hp + pix[:, 1]) * wp + pix[:, 2]
        offs = torch.tensor([dy * wp + dx for dy in range(3) for dx in range(3)])
        cols = (offs[:, None] + base[None, :]).reshape(9 * p)  # tap-major: column t·P + p
        patches = xp.index_select(1, cols).reshape(g, (c // g) * 9, p)  # rows c·9 + t per group
        y = torch.matmul(self.conv.weight.reshape(g, o // g, (c // g) * 9), patches).reshape(o, p)
        y = y + self.conv.bias[:, None]
        flat = x.transpose(0, 1).reshape(c, n * h * w)
        at = ((pix[:, 0] * h + pix[:, 1]) * w + pix[:, 2])[None, :].expand(c, p)
        return flat.scatter(1, at, y).reshape(c, n, h, w).transpose(0, 1)


class PixelStage(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.context = MaskContext()
        self.stage = GatherScatterConv2d(MaskedConv2d(conv, self.context), SparseIndices())

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.context.mask = mask
        return self.stage(x)


class Dense(nn.Module):
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + 0 * mask.sum()  # same inputs as the others


def _session(module: nn.Module, x: torch.Tensor, m: torch.Tensor, folder: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    path = folder / f"{type(module).__name__}.onnx"
    torch.onnx.export(module, (x, m), str(path), input_names=["x", "mask"], output_names=["y"], dynamo=True)
    return ort.InferenceSession(str(path), sess_options=session_options(ort, threads),
                                providers=["CPUExecutionProvider"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--groups", type=int, default=1)
    ap.add_argument("--density", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    conv = nn.Conv2d(args.channels, args.channels, 3, padding=1, groups=args.groups).eval()
    x = torch.rand(1, args.channels, args.size, args.size)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        m0 = (torch.rand(1, 1, args.size, args.size) < 0.5).float()
        mods = {"dense": Dense(conv), "nhwc": PixelStage(conv), "channel_major": ChannelMajorConv(conv)}
        sessions = {k: _session(v, x, m0, Path(tmp), args.threads) for k, v in mods.items()}
        for density in args.density:
            m = (torch.rand(1, 1, args.size, args.size) < density).float()
            feeds = {"x": x.numpy(), "mask": m.numpy()}
            ref = sessions["nhwc"].run(None, feeds)[0]
            assert np.abs(sessions["channel_major"].run(None, feeds)[0] - ref).max() < 1e-4
            times: dict[str, list[float]] = {k: [] for k in sessions}
            for _ in range(3):
                for s in sessions.values():
                    s.run(None, feeds)
            for _ in range(args.repeats):
                for k, s in sessions.items():
                    t0 = time.perf_counter()
                    s.run(None, feeds)
                    times[k].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            row = {"density": density, **{f"{k}_ms": round(v, 3) for k, v in med.items()},
                   "nhwc_ratio": round(med["nhwc"] / med["dense"], 3),
                   "channel_major_ratio": round(med["channel_major"] / med["dense"], 3)}
            rows.append(row)
            print(row, flush=True)
    if args.json:
        write_json(args.json, {"size": args.size, "channels": args.channels, "groups": args.groups,
                               "threads": args.threads, "repeats": args.repeats, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

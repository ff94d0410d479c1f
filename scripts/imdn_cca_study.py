"""Why IMDN's training-free skip breaks on photos: its contrast-aware channel attention (CCA) gates every
channel by the mean + std of that channel over the *whole image*, so the features the skip passes through on
the flat majority of a photo move the gate of every computed pixel too. This runs each photo three ways at
one mask setting, against the dense network: the skip as shipped, and the skip with every CCA gate replaced by
the dense network's gate on the same image (hooks; nothing else changes). If the second loses far less, the
CCA's global statistics carry the loss.

    python scripts/imdn_cca_study.py --sets ../shared/data/Photos2K/x4 > results/quality/imdn_x4_cca.txt

One line per image (ΔPSNR-Y of both runs, the largest change of any CCA gate), then the means and worst.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from amsr.io.images import to_tensor, to_uint8
from amsr.io.metrics import psnr_y
from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.tools.evaluate import find_pairs, load_pair


def _gates(model: nn.Module) -> list[nn.Module]:
    """The CCA gate modules (``…cca.conv_du``: 1×1 convs and a sigmoid over the channel statistics), in order."""
    return [m for name, m in model.named_modules() if name.endswith("cca.conv_du")]


def _capture(modules: list[nn.Module], store: list[torch.Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    def hook(_m: nn.Module, _i: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        store.append(out.detach().clone())
    return [m.register_forward_hook(hook) for m in modules]


def _replace(modules: list[nn.Module], gates: Callable[[int], torch.Tensor]) -> list[torch.utils.hooks.RemovableHandle]:
    def make(i: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]:
        return lambda _m, _i, _out: gates(i)
    return [m.register_forward_hook(make(i)) for i, m in enumerate(modules)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=4)
    # The point calibration picked for IMDN x4 in session 17 before photos showed it unsafe.
    ap.add_argument("--dilation", type=int, default=6)
    ap.add_argument("--output-dilation", type=int, default=3)
    ap.add_argument("--hf-floor", type=float, default=0.04)
    ap.add_argument("--sets", nargs="+", required=True, help="folders with HR/ and LR/")
    a = ap.parse_args()
    torch.set_num_threads(2)
    config = MaskConfig(dilation=a.dilation, output_dilation=a.output_dilation, hf_floor=a.hf_floor)
    base = load_model("imdn", a.scale)
    dense, acc = base.dense(), base.accelerated(config)
    dense_gates, acc_gates = _gates(dense), _gates(acc)
    assert dense_gates and len(dense_gates) == len(acc_gates), "expected IMDN's CCA modules in both models"
    print(f"imdn x{a.scale} {config.to_json()}: ΔPSNR-Y vs dense, the skip as shipped / with the dense CCA gates; "
          "largest |Δ gate|")
    for folder in a.sets:
        shipped, fixed = [], []
        for p in find_pairs(folder):
            lr, hr = load_pair(p, a.scale)
            x = to_tensor(lr)
            with torch.no_grad():
                ref_gates: list[torch.Tensor] = []
                handles = _capture(dense_gates, ref_gates)
                ref = psnr_y(to_uint8(dense(x)), hr, a.scale)
                for h in handles:
                    h.remove()
                own_gates: list[torch.Tensor] = []
                handles = _capture(acc_gates, own_gates)
                plain = psnr_y(to_uint8(acc(x)), hr, a.scale) - ref
                for h in handles:
                    h.remove()
                handles = _replace(acc_gates, lambda i: ref_gates[i])
                with_dense = psnr_y(to_uint8(acc(x)), hr, a.scale) - ref
                for h in handles:
                    h.remove()
            moved = max(float((g - r).abs().max()) for g, r in zip(own_gates, ref_gates, strict=True))
            shipped.append(plain)
            fixed.append(with_dense)
            print(f"{Path(folder).parent.name}/{p.name:14s} skip {plain:+.3f}  dense gates {with_dense:+.3f}  "
                  f"max |Δ gate| {moved:.3f}", flush=True)
        print(f"{Path(folder).parent.name}: skip mean {statistics.mean(shipped):+.3f} dB, worst {min(shipped):+.3f}; "
              f"with the dense CCA gates mean {statistics.mean(fixed):+.3f}, worst {min(fixed):+.3f} "
              f"({len(shipped)} images)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

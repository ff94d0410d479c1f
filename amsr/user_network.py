"""Your own network as a ``LoadedModel``, so that every tool takes it as it takes a zoo model: the accelerated
form with the output blend, calibration of an operating point (``amsr.tools.calibrate``), effective-MAC
counting (``amsr.core.cost``), ONNX export and parity (``amsr.export``, ``amsr.runtime``)::

    model, plan = amsr.user_model(net, scale=4, input_range=255)
    print(plan.summary())                 # what was made sparse, what was not, and why
    fast = model.accelerated(amsr.MaskConfig(dilation=4, output_dilation=1))

``plan_acceleration`` finds what the method can reach by one probe forward: every 3×3 identity-shaped conv
(``find_identity_convs``) that runs at the input's resolution (the mask's; a conv of a downsampled branch or
at HR would get a resized mask, which cost 17–18 dB on two user networks in issue #16), and every window
block amsr has a masked layer for (``surgery.WINDOW_LAYERS``), plus the window-local blocks the caller names
with a ``WindowAdapter`` (``amsr.sparse.window_batch``: e.g. ``{"body.*.attn_stack": BatchedWindows()}``),
checked on the probe to tile the mask. Everything else is listed with its reason.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from amsr.core.checkpoint import load_checkpoint
from amsr.core.errors import CheckpointError, UnsupportedModelError
from amsr.models import LoadedModel
from amsr.sparse.pixel import check_maskable_conv
from amsr.core.window_adapter import WindowAdapter
from amsr.surgery import WINDOW_LAYERS, match_modules
from amsr.zoo.descriptor import Architecture, SizeRequirements, SparseRules
from amsr.zoo.padding import padded_size

# Probe input side: large enough for typical window sizes (8, 16) and downsampling branches to show their
# own resolution, small enough to run in well under a second on a CPU.
PROBE_PX = 48
# Side of the receptive-radius probe: radii up to 46 LR px are measured (CARN-M x4: 21; the two user networks
# of issue #16: IMDN baseline 23, DITN_Real 43), beyond that — or for a global op — the plan says "more than".
RADIUS_PROBE_PX = 96


class InputRange(nn.Module):
    """A network that takes [0, ``value_range``] (e.g. 255) as one that takes and returns [0, 1], which is what
    the mask and the output blend expect."""

    def __init__(self, net: nn.Module, value_range: float) -> None:
        super().__init__()
        if not value_range > 0:
            raise ValueError(f"input_range must be > 0, got {value_range}")
        self.net = net
        self.value_range = float(value_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * self.value_range) / self.value_range


@dataclass(frozen=True)
class AccelerationPlan:
    """What ``plan_acceleration`` found: the layers to make sparse and the ones left dense, with reasons.

    Attributes:
        convs: qualified names of the body convs that become masked convs.
        windows: qualified names of the window blocks that get window selection (amsr's own layers).
        adapted: (name, adapter) of the window-local blocks selected through a ``WindowAdapter``.
        refused: (name, reason) of every conv or block not taken.
        receptive_radius: LR px from a changed input pixel to the farthest output pixel it changes: the
            overlap at which tiled output equals untiled (``amsr-upscale --overlap``). ``None``: more than
            ``radius_limit`` — a wide receptive field or a global op (pooling over the map, image statistics),
            for which no overlap makes tiles equal the whole image.
    """

    convs: tuple[str, ...] = ()
    windows: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = field(default=())
    adapted: tuple[tuple[str, WindowAdapter], ...] = ()
    receptive_radius: int | None = None
    radius_limit: int = 0  # the largest radius the probe could measure (``receptive_radius`` None: beyond it)
    prefix: str = ""  # where the user's network sits in the module that runs it (``InputRange``: "net.")

    @property
    def rules(self) -> SparseRules:
        """The plan as surgery rules on the module that runs it (exact names, no patterns)."""
        return SparseRules(convs=self.convs, windows=self.windows, window_adapters=self.adapted).prefixed(self.prefix)

    def summary(self) -> str:
        """A few lines: counts, the sparse layers, and each refused layer with its reason."""
        windows = list(self.windows) + [f"{n} ({type(a).__name__})" for n, a in self.adapted]
        lines = [f"{len(self.convs)} masked conv(s), {len(windows)} window block(s), "
                 f"{len(self.refused)} layer(s) left dense"]
        if self.convs:
            lines.append("masked convs: " + ", ".join(self.convs))
        if windows:
            lines.append("window blocks: " + ", ".join(windows))
        lines += [f"dense: {name}: {reason}" for name, reason in self.refused]
        if self.radius_limit:
            lines.append(f"receptive radius: {self.receptive_radius} LR px (tile overlap for tiled = untiled)"
                         if self.receptive_radius is not None else
                         f"receptive radius: more than {self.radius_limit} LR px, or a global op (pooling, image "
                         "statistics): tiled output will differ from untiled")
        return "\n".join(lines)


def receptive_radius(net: nn.Module, side: int = RADIUS_PROBE_PX) -> int | None:
    """LR px from the centre pixel of a ``side``² probe to the farthest output pixel that changes when it
    changes (two forwards); ``None`` when the change reaches the probe's edge (see ``AccelerationPlan``)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, side, side, generator=gen)
    c = side // 2
    x2 = x.clone()
    x2[..., c, c] = 1 - x2[..., c, c]
    with torch.no_grad():
        y, y2 = net.eval()(x), net(x2)
    scale = y.shape[-1] // side
    diff = (y - y2).abs().amax(dim=1)[0]  # sH × sW
    changed = (diff > 1e-6 * float(y.abs().amax())).nonzero()
    if changed.numel() == 0:
        return 0
    lr = changed // max(scale, 1)
    radius = int((lr - c).abs().max())
    return None if radius >= c - 1 else radius


def plan_acceleration(net: nn.Module, size: SizeRequirements | None = None, probe_px: int = PROBE_PX,
                      prefix: str = "", windows: Mapping[str, WindowAdapter] | None = None) -> AccelerationPlan:
    """Find what AMSR can make sparse in ``net`` (forward: N×3×H×W [0, 1] → SR) by one forward on a random
    ``probe_px``² input (padded to ``size``), recording the resolution every conv runs at and the input of
    every block named in ``windows`` (pattern in the user's names → its ``WindowAdapter``). ``prefix``: names
    under it are reported without it (the user's own names inside a wrapper).

    Raises:
        UnsupportedModelError: a ``windows`` pattern matches no module.
    """
    side = padded_size(probe_px, size or SizeRequirements())
    adapters = {name: adapter for pattern, adapter in (windows or {}).items()
                for name in match_modules(net, prefix + pattern)}
    seen: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(_module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:  # None: the input is unchanged
            seen.setdefault(name, args[0])
        return hook

    hooks = [m.register_forward_pre_hook(record(n)) for n, m in net.named_modules()
             if isinstance(m, nn.Conv2d) or n in adapters]
    try:
        with torch.no_grad():
            net.eval()(torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0)))
    finally:
        for h in hooks:
            h.remove()
    blocks = [n for n, m in net.named_modules() if n and type(m) in WINDOW_LAYERS]
    refused: list[tuple[str, str]] = []
    adapted: list[tuple[str, WindowAdapter]] = []
    for name, adapter in adapters.items():
        if name not in seen:
            refused.append((name, "not called by forward"))
            continue
        try:
            adapter.window_means(torch.ones(1, 1, side, side), seen[name])
        except UnsupportedModelError as e:
            refused.append((name, str(e)))
            continue
        adapted.append((name, adapter))
    whole = blocks + [n for n, _ in adapted]
    convs: list[str] = []
    for name, m in net.named_modules():
        if not isinstance(m, nn.Conv2d):
            continue
        if any(name.startswith(w + ".") for w in whole):
            continue  # a window block is masked as a whole
        try:
            check_maskable_conv(m, name)
        except UnsupportedModelError as e:
            if m.kernel_size != (1, 1):  # 1×1 convs are cheap and never identity-skippable: not worth a line
                refused.append((name, str(e).split(": ", 1)[-1]))
            continue
        if m.groups == m.in_channels > 1:
            # 9 MACs per channel and pixel: gathering a pixel's 3×3 neighbourhood costs as much as computing it.
            refused.append((name, "depth-wise (groups = channels): skipping it saves less than its gather costs"))
            continue
        if name not in seen:
            refused.append((name, "not called by forward"))
            continue
        at = tuple(int(d) for d in seen[name].shape[-2:])
        if at != (side, side):
            refused.append((name, f"runs at {at[0]}×{at[1]}, not the input's {side}×{side} (the mask's resolution)"))
        else:
            convs.append(name)
    radius_side = padded_size(RADIUS_PROBE_PX, size or SizeRequirements())
    cut = len(prefix)
    return AccelerationPlan(tuple(c[cut:] for c in convs), tuple(w[cut:] for w in blocks),
                            tuple((n[cut:], r) for n, r in refused), tuple((n[cut:], a) for n, a in adapted),
                            receptive_radius(net, radius_side), radius_side // 2 - 2, prefix)


def user_model(net: nn.Module, scale: int, *, input_range: float = 1.0, size: SizeRequirements | None = None,
               rules: SparseRules | None = None, name: str = "user", weights: str | Path | None = None,
               windows: Mapping[str, WindowAdapter] | None = None) -> tuple[LoadedModel, AccelerationPlan]:
    """Your network as a ``LoadedModel`` and the plan of what its ``accelerated(config)`` makes sparse.

    Args:
        net: a pretrained SR network, forward N×3×H×W RGB → N×3×sH×sW; put in eval mode with its parameters
            frozen, as ``load_model`` leaves a zoo network (``accelerated`` works on copies).
        scale: its upscaling factor.
        input_range: the value of white in its input and output (1 for [0, 1], 255 for [0, 255]).
        size: the input sizes it needs (``SizeRequirements``: multiple of its window size × downsampling);
            amsr pads to them and crops back, so the mask is computed at the size the network runs at.
        rules: the layers to make sparse (``SparseRules``: conv and window-block patterns, tail convs, in
            ``net``'s own names); ``None``: the plan's.
        name: the id reports and exports carry.
        weights: the checkpoint file, for provenance in reports (nothing is read from it).
        windows: window-local blocks amsr has no masked layer for, as pattern (``net``'s names) → adapter
            (``amsr.sparse.window_batch``; ``BatchedWindows()`` for a module called on a batch of windows).

    Raises:
        UnsupportedModelError: nothing to make sparse, or ``rules`` naming a layer that cannot be.
    """
    if scale < 1:
        raise ValueError(f"scale must be ≥ 1, got {scale}")
    wrapped = net.eval() if input_range == 1 else InputRange(net, input_range).eval()
    prefix = "" if wrapped is net else "net."
    for p in wrapped.parameters():
        p.requires_grad_(False)
    size = size or SizeRequirements()
    plan = plan_acceleration(wrapped, size, prefix=prefix, windows=windows)
    if rules is None:
        if not plan.convs and not plan.windows and not plan.adapted:
            raise UnsupportedModelError(f"{name}: nothing amsr can make sparse ({len(plan.refused)} conv(s) left "
                                        "dense: plan_acceleration(net).summary() says why)")
        rules = plan.rules
    else:
        rules = rules.prefixed(prefix)
    arch = Architecture(id=name, description=f"user model {type(net).__name__}", scales=(scale,), weights=(),
                        detect=lambda sd: False, build=lambda sd, s: wrapped, size=size, rules=rules)
    return LoadedModel(arch=arch, scale=scale, net=wrapped, weights=Path(weights or "<in memory>")), plan


def network_from_factory(spec: str, weights: str | os.PathLike[str] | None = None) -> nn.Module:
    """The network ``PKG.MOD:FACTORY`` builds (``FACTORY()`` → ``nn.Module``; the module importable from the
    current directory or ``sys.path``), with ``weights`` (a checkpoint, unwrapped as ``load_checkpoint`` does)
    loaded strictly.

    Raises:
        UnsupportedModelError: a malformed spec, a module that does not import, a missing or failing factory,
            or a factory that returns no ``nn.Module``.
        CheckpointError: the checkpoint is unreadable or does not fit the network (missing/unexpected keys).
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UnsupportedModelError(f"--module wants PKG.MOD:FACTORY (e.g. mynets.edsr:build), got {spec!r}")
    if os.getcwd() not in sys.path:  # ``python -m``'s rule: the current directory is importable
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or anything the user's module raises at import
        raise UnsupportedModelError(f"cannot import {module_name}: {type(e).__name__}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UnsupportedModelError(f"{module_name} has no callable {attr!r}")
    try:
        net = factory()
    except Exception as e:
        raise UnsupportedModelError(f"{spec}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise UnsupportedModelError(f"{spec}() returned {type(net).__name__}, not a torch nn.Module")
    if weights is not None:
        state = load_checkpoint(weights)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:  # torch lists every key over many lines: keep the first
            what = " ".join(line.strip() for line in str(e).splitlines()[1:2])[:300]
            raise CheckpointError(f"{weights} does not fit {spec}(): {what}") from e
    return net.eval()

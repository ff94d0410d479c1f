"""Argument groups shared by the amsr CLIs, and the error boundary every ``main`` goes through.

Only the standard library and ``amsr.core.errors`` are imported here and by each tool's parser: ``--help`` must not
wait for torch (2 s). What a tool needs to run is imported in its body, after the arguments are parsed.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amsr.core.errors import AmsrError, did_you_mean

if TYPE_CHECKING:
    from amsr.masking.mask import MaskConfig
    from amsr.models import LoadedModel

log = logging.getLogger("amsr.cli")

# Light copies of values that live in modules importing torch, for the parsers and --help;
# tests/cli/test_help.py checks that they equal the originals.
MODEL_NAMES = ("carn", "carn_m", "imdn", "pan", "fsrcnn", "imdtn", "hit_srf", "swinir", "ngswin")  # amsr.zoo
MASK_DEFAULTS = {"dilation": 1, "blur_size": 5, "blur_sigma": 1.5, "window_threshold": 0.5}  # amsr.masking.mask.MaskConfig
DEFAULT_BUDGET_DB = 0.05  # amsr.operating_point.DEFAULT_BUDGET_DB

# The epilog of every tool's --help, pre-wrapped (the tools print it with RawDescriptionHelpFormatter).
DEFAULTS_EPILOG = textwrap.fill(
    "Defaults: a zoo model given to amsr-export, amsr-eval, amsr-bench or amsr-upscale without mask "
    "options or --operating-point runs its shipped quality operating point (calibrated on T91+BSD200 to lose "
    "≤ 0.05 dB mean Y-PSNR against dense), or the dense network where none is calibrated or none saves compute "
    "(amsr-eval and amsr-bench then have nothing to compare), and says which. Mask options without "
    "--output-dilation (e.g. --dilation alone) run the paper's raw in-network skip, which is lossy on pretrained "
    "checkpoints (CARN-M x4 Set5, --dilation 1: -3.86 dB) and is warned about. amsr-parity checks a graph as "
    "exported; amsr-calibrate writes operating points for --operating-point FILE.", width=100,
    break_on_hyphens=False)

VERBOSE_HELP = "also log what each step does (amsr's INFO messages) on stderr"


def epilog(*examples: str) -> str:
    """A tool's --help epilog: its example command lines (``  # comment`` allowed), then ``DEFAULTS_EPILOG``."""
    return "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + DEFAULTS_EPILOG


def parser(prog: str, description: str | None, *examples: str) -> argparse.ArgumentParser:
    """The ``ArgumentParser`` of a tool: ``description`` (its module docstring), ``epilog(*examples)``."""
    return argparse.ArgumentParser(prog=prog, description=description, epilog=epilog(*examples),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_verbose_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)


class UsageError(AmsrError):
    """Options that do not go together, found after parsing: one line and exit status 2 (as argparse's)."""


class ModelName(argparse.Action):
    """``--model NAME``: a zoo name; a near miss is one line with the closest name (``did_you_mean``), exit 2."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, value: Any,
                 option_string: str | None = None) -> None:
        if value not in MODEL_NAMES:
            guess = did_you_mean(value, MODEL_NAMES)
            why = (f"unknown model {value!r}; did you mean {guess!r}?" if guess else
                   f"invalid choice: {value!r} (choose from {', '.join(MODEL_NAMES)})")
            parser.exit(2, f"{parser.prog}: error: argument {'/'.join(self.option_strings)}: {why}\n")
        setattr(namespace, self.dest, value)


def add_model_args(p: argparse.ArgumentParser, required: bool = True, user_module: bool = False) -> None:
    """``--model``, ``--scale``, ``--variant``, ``--weights``; with ``user_module`` also ``--module`` (your own
    network instead of a zoo model: ``model_from_args``), ``--input-range`` and ``--multiple-of``."""
    g = p.add_argument_group("model")
    alternative = " (or --module)" if user_module else "" if required else " (or --onnx FILE)"
    g.add_argument("--model", required=required and not user_module, action=ModelName, metavar="NAME",
                   help=f"zoo model{alternative}: {', '.join(MODEL_NAMES)}")
    g.add_argument("--scale", type=int, required=required,
                   help=f"upscaling factor: 2, 3 or 4{'' if required else ' (with --model)'}")
    if user_module:
        g.add_argument("--module", metavar="PKG.MOD:FACTORY",
                       help="your own network instead of a zoo model: FACTORY() returns the nn.Module (importable "
                            "from the current directory); --weights is loaded into it strictly (default: none, --model)")
        g.add_argument("--input-range", type=float, default=1.0, metavar="WHITE",
                       help="--module: the value of white in its input and output (default 1; 255 for [0, 255])")
        g.add_argument("--multiple-of", type=int, default=1, metavar="PX",
                       help="--module: its input H and W must be a multiple of this (amsr pads and crops back; default 1)")
        g.add_argument("--windows", action="append", default=[], metavar="PATTERN[:tokens]",
                       help="--module: window-local blocks called on a batch of windows, selected by window "
                            "(amsr.BatchedWindows; ':tokens' for N×ws²×C windows, default N×C×ws×ws); repeatable")
    g.add_argument("--variant", default="", help="model variant: swinir classical (default), lightweight or real; "
                                                 "the other models have one")
    g.add_argument("--weights", type=Path, metavar="FILE",
                   help="checkpoint file (default: $AMSR_WEIGHTS_DIR, else the cache, else downloaded)")


def add_mask_args(p: argparse.ArgumentParser) -> None:
    """The mask options. Each defaults to ``None`` (not given), so that ``config_and_source`` can tell a command
    line that names no setting, which runs the shipped quality operating point, from one that asks for one."""
    d = MASK_DEFAULTS
    g = p.add_argument_group("mask (give none of these to run the shipped 0.05 dB operating point)",
                             "The defaults below apply once one of these is given.")
    g.add_argument("--dilation", type=int, metavar="D_NET",
                   help=f"network mask dilation radius in LR px (default {d['dilation']})")
    g.add_argument("--blur-size", type=int, metavar="PX", help=f"Gaussian kernel size (default {d['blur_size']})")
    g.add_argument("--blur-sigma", type=float, metavar="PX", help=f"Gaussian sigma (default {d['blur_sigma']})")
    g.add_argument("--window-threshold", type=float, metavar="T",
                   help="transformer blocks compute a window when its mean mask is ≥ T "
                        f"(0: all windows; default {d['window_threshold']})")
    g.add_argument("--output-dilation", type=int, metavar="D_OUT",
                   help="output blend: network output where the mask dilated by D_OUT is 1, bicubic elsewhere "
                        "(D_OUT > D_NET only for weights fine-tuned so; default: no blend, the in-network "
                        "skip alone, which is lossy on pretrained checkpoints: results/README.md §1)")
    g.add_argument("--hf-floor", type=float, metavar="TAU",
                   help="also compute every pixel whose high-frequency value mean|x − G(x)| (on [0, 1]) is above "
                        "TAU, whatever the 2-means says: keeps the weaker half of an image textured everywhere "
                        "(default: none, the paper's mask)")


_MASK_OPTIONS = ("dilation", "blur_size", "blur_sigma", "window_threshold", "output_dilation", "hf_floor")


def mask_options_given(args: argparse.Namespace) -> list[str]:
    """The mask options a command line sets explicitly, as ``--flag`` names."""
    return ["--" + k.replace("_", "-") for k in _MASK_OPTIONS if getattr(args, k, None) is not None]


def mask_config_from(args: argparse.Namespace) -> MaskConfig:
    """The mask options as a ``MaskConfig`` (``MaskConfig``'s defaults for those not given)."""
    from amsr.masking.mask import MaskConfig

    given = {k: getattr(args, k) for k in _MASK_OPTIONS if getattr(args, k, None) is not None}
    try:
        return MaskConfig(**given)
    except (TypeError, ValueError) as e:
        raise AmsrError(str(e)) from None


OPERATING_POINT_HELP = ("'default' or 'default:DB': the shipped operating point of --model at --scale for a "
                        "budget of DB dB mean Y-PSNR loss (DB 0.05 when omitted; the largest shipped budget ≤ DB "
                        "is used: 0.05 or 0.1); or FILE, written by amsr-calibrate --json. Default (neither this "
                        "nor mask options): the 0.05 dB shipped point, or the dense model where none is calibrated")

RAW_SKIP_WARNING = ("the in-network skip without --output-dilation is lossy on pretrained checkpoints (CARN-M x4 "
                    "Set5, --dilation 1: -3.86 dB; results/README.md §1): add --output-dilation, or use --operating-point "
                    "default")


def add_operating_point_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--operating-point", metavar="FILE|default[:DB]", help=OPERATING_POINT_HELP)


def config_and_source(args: argparse.Namespace) -> tuple[MaskConfig | None, dict[str, object] | None]:
    """The mask settings of a command line and where they came from.

    - ``--operating-point`` → its settings and source;
    - mask options → those settings and ``None`` (a one-line warning when they are the lossy raw skip);
    - neither → the shipped default for ``--model`` x``--scale`` at the 0.05 dB budget, or ``(None, source)``
      where none is calibrated or the default is the dense model: run the dense network.

    Raises:
        AmsrError: both ``--operating-point`` and mask options; a bad operating point or bad settings; an
            unknown ``--model`` or one without a model at ``--scale``.
    """
    given = mask_options_given(args)
    if getattr(args, "operating_point", None) is not None:
        if given:
            raise AmsrError(f"--operating-point replaces the mask options: drop {', '.join(given)}")
        from amsr.operating_point import resolve_operating_point

        model_id = args.model or getattr(args, "module", None)  # --module: the spec is the id calibration wrote
        return resolve_operating_point(args.operating_point, str(model_id), args.scale, getattr(args, "weights", None))
    if given:
        config = mask_config_from(args)
        if config.output_dilation is None:
            log.warning("warning: %s", RAW_SKIP_WARNING)
        elif getattr(args, "model", None) and not getattr(args, "weights", None):
            from amsr.operating_point import no_default_reason
            from amsr.zoo import get_architecture

            unsafe = no_default_reason(get_architecture(args.model).rules)  # of the published weights
            if unsafe:
                log.warning("warning: %s: %s", args.model, unsafe)
        return config, None
    if getattr(args, "model", None) is None:
        from amsr.masking.mask import MaskConfig

        return MaskConfig(), None
    from amsr.operating_point import shipped_default_or_dense
    from amsr.zoo import architecture_at

    architecture_at(args.model, args.scale)  # "no x5 model", not "no calibrated operating point for x5"
    return shipped_default_or_dense(args.model, args.scale)


def describe_settings(config: MaskConfig | None, source: Mapping[str, object] | None) -> str:
    """One line for a report: which settings ran and where they came from."""
    if config is None:
        return f"dense model ({(source or {}).get('reason', 'no mask')})"
    parts = [f"d_net {config.dilation}"]
    parts.append("no blend (raw skip)" if config.output_dilation is None else f"d_out {config.output_dilation}")
    parts.append(f"window threshold {config.window_threshold:g}")
    if config.hf_floor is not None:
        parts.append(f"hf floor {config.hf_floor:g}")
    where = "mask options" if source is None else str(source.get("source", "operating point"))
    if source is not None and "budget_db" in source:
        where += f", {source['budget_db']} dB budget"
    return f"{', '.join(parts)} ({where})"


def graph_model(onnx: Path, meta: Mapping[str, str], *, name: str | None = None, scale: int | None = None,
                variant: str | None = None, weights: Path | None = None,
                hint: str = "pass --model and --scale") -> LoadedModel:
    """The zoo model an exported graph was made from: the identity in its metadata (``amsr.model``, ``amsr.scale``,
    ``amsr.variant``; ``name``/``scale``/``variant`` override them) loaded with ``weights`` (default: as
    ``load_model``), refused when the file records another checkpoint.

    Raises:
        AmsrError: the file names no model (``hint`` says what to do). CheckpointError: another checkpoint than
            the recorded one; and as ``load_model``.
    """
    from amsr.export.metadata import int_field
    from amsr.models import load_model

    name = name or meta.get("amsr.model")
    scale = scale or int_field(meta, "amsr.scale", str(onnx))
    if not name or not scale:
        raise AmsrError(f"{onnx} does not say which model it is (not written by amsr-export?): {hint}")
    if name == meta.get("amsr.model") and "amsr.user_network" in meta:  # amsr-export --module
        if meta.get("amsr.weights_sha256") and weights is None:
            raise AmsrError(f"{onnx} was exported from {name} with a weights file: pass it with --weights")
        model = user_module_model(name, scale, weights, json.loads(meta["amsr.user_network"]))
        if weights is not None:
            _check_weights_sha(onnx, meta, model.weights)
        return model
    model = load_model(name, scale, weights=weights, variant=variant if variant is not None else
                       meta.get("amsr.variant", ""))
    if name == meta.get("amsr.model"):
        _check_weights_sha(onnx, meta, model.weights)
    return model


def _check_weights_sha(onnx: Path, meta: Mapping[str, str], weights: Path) -> None:
    """Refuse a checkpoint other than the one the file records: its outputs differ by design, so a comparison
    would say nothing about the export. Skipped when the file records none (not written by amsr-export)."""
    from amsr.core.errors import CheckpointError
    from amsr.weights import sha256_of

    recorded = meta.get("amsr.weights_sha256")
    if not recorded:
        return
    got = sha256_of(weights)
    if got != recorded:
        raise CheckpointError(f"{weights} (sha256 {got[:12]}…) is not the checkpoint {onnx.name} was exported "
                              f"from (sha256 {recorded[:12]}…): pass that file with --weights")


def model_from_args(args: argparse.Namespace, load: Callable[..., LoadedModel] | None = None) -> LoadedModel:
    """The model a command line names: ``--model`` (zoo, through ``load``: the tool's own ``load_model``) or
    ``--module`` (``amsr.user_network``: the plan of what is made sparse goes to stderr); exactly one of them."""
    module = getattr(args, "module", None)
    if (args.model is None) == (module is None):
        raise UsageError("give --model NAME (a zoo model) or --module PKG.MOD:FACTORY (your own), not both")
    if module is None:
        return (load or load_model)(args.model, args.scale, weights=args.weights, variant=args.variant)
    return user_module_model(module, args.scale, args.weights, user_network_args(args))


def user_network_args(args: argparse.Namespace) -> dict[str, object]:
    """What ``--module`` needs besides the factory and its weights (``--input-range``, ``--multiple-of``,
    ``--windows``): recorded by amsr-export as ``amsr.user_network`` so that amsr-parity rebuilds the same model."""
    return {"input_range": args.input_range, "multiple_of": args.multiple_of, "windows": list(args.windows)}


def user_module_model(module: str, scale: int, weights: Path | None, settings: Mapping[str, Any]) -> LoadedModel:
    """``FACTORY()`` of ``module`` (``PKG.MOD:FACTORY``) with ``weights``, as a ``LoadedModel`` under
    ``settings`` (``user_network_args``); the plan of what is made sparse goes to stderr."""
    from amsr.sparse.window_batch import BatchedWindows
    from amsr.user_network import network_from_factory, user_model
    from amsr.zoo.descriptor import SizeRequirements

    multiple_of = int(settings.get("multiple_of", 1))
    if multiple_of < 1:
        raise UsageError(f"--multiple-of must be ≥ 1, got {multiple_of}")
    windows = {}
    for spec in settings.get("windows", []):
        pattern, _, layout = str(spec).partition(":")
        if layout not in ("", "tokens", "nchw") or not pattern:
            raise UsageError(f"--windows wants PATTERN or PATTERN:tokens, got {spec!r}")
        windows[pattern] = BatchedWindows("tokens" if layout == "tokens" else "nchw")
    net = network_from_factory(module, weights)
    try:
        model, plan = user_model(net, scale, input_range=float(settings.get("input_range", 1.0)), name=module,
                                 size=SizeRequirements(multiple_of=multiple_of), weights=weights, windows=windows)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(plan.summary(), file=sys.stderr)
    return model


def load_model(name: str, scale: int, **kwargs: Any) -> LoadedModel:
    """``amsr.models.load_model``, imported when first called (a tool's parser imports no torch). The tools
    import this name, so tests can replace it per tool."""
    from amsr.models import load_model as load

    return load(name, scale, **kwargs)


# Third-party log lines an export prints although nothing is wrong: dropped (``quiet_export_noise``).
_EXPORT_NOISE = {
    # torch.onnx registers translations of torchvision ops when it is imported and logs one line per op when
    # torchvision is not installed; amsr's graphs use none of them.
    "torch.onnx._internal.exporter._registration": ("torchvision is not installed. Skipping",),
    # onnx_ir, building the exported graph, types an empty list attribute as INTS and says so; the graph is then
    # checked by onnx.checker and, unless --no-verify, against PyTorch (amsr-export says the result).
    "onnx_ir._convenience": ("Attribute type is ambiguous because it is an empty sequence",),
}


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_export_noise() -> None:
    """Drop the log lines of ``_EXPORT_NOISE`` and ``torch.export``'s warning about assigned tensor attributes;
    only those: other warnings, of the same loggers too, still show. Nothing is imported here."""
    for name, prefixes in _EXPORT_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
    # An accelerated model keeps ``last_mask`` / ``last_output_mask`` for its callers; torch.export warns that a
    # forward assigned tensor attributes, which changes nothing in the graph. export/onnx_export.py ignores the
    # singular form ("was assigned"); two attributes give the plural ("were assigned", amsr-bench's exports).
    warnings.filterwarnings("ignore", message=r"The tensor attributes? .* (was|were) assigned during export",
                            category=UserWarning)


def write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    import json

    from amsr.core.files import save_bytes

    save_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def run_main(prog: str, body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
             argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run ``body``; an ``AmsrError`` becomes one line on stderr and exit status 1 (2 for a
    ``UsageError``)."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format=f"{prog}: %(message)s")
    quiet_export_noise()
    exit_on_sigterm()
    try:
        return body(args)
    except AmsrError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit(143)`` (128 + 15, the shell's code for it) so that ``finally`` blocks and
    ``amsr.core.files.atomic_path`` remove their temporary ``.part`` files; the default action kills the process with
    them left behind. Only from the main thread (the only one Python delivers signals to) and only over the
    default handler, so a host that installed its own (Ray, a server) keeps it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)

"""Row execution: an accelerated network run on the rows of its active pixels (``amsr.rows.grid``), with
work that follows the mask end to end. One program per architecture family; ``row_program`` picks it.

Exact: a row program computes the same SR output as the ``AcceleratedSR`` it is built from (float rounding:
≤ 1e-6 on Photos2K, tests/rows). It needs the output blend — without it every LR pixel's network output is
kept, and the body would have to run everywhere.
"""

from __future__ import annotations

from torch import nn

from amsr.core.errors import UnsupportedModelError
from amsr.surgery import AcceleratedSR
from amsr.zoo.carn_arch import CARN


def row_program(acc: AcceleratedSR) -> nn.Module | None:
    """The row execution of ``acc``, or ``None`` where there is none (not a CARN / CARN-M, no output blend,
    or a body 3×3 conv left unmasked)."""
    from amsr.rows.carn import RowCARN

    net = acc.net
    if not isinstance(net, CARN) or net.scale is None or acc.config.output_dilation is None:
        return None
    try:
        return RowCARN(acc.mask_generator, net, net.scale).eval()
    except UnsupportedModelError:
        return None


def is_row_program(module: nn.Module) -> bool:
    """Whether ``module`` is a row program (the exporter records ``amsr.execution = rows``)."""
    from amsr.rows.carn import RowCARN

    return isinstance(module, RowCARN)

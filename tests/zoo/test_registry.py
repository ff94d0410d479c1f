"""Every registered architecture's facts agree with its network: the descriptor is their one home
(``SparseRules``: body convs, window blocks, tail convs), so a renamed layer fails here, not in a tool."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from amsr.core.errors import ExportError
from amsr.masking.mask import MaskConfig
from amsr.models import load_model
from amsr.sparse.tail import tail_layers
from amsr.surgery import match_modules
from amsr.zoo import architecture_names, get_architecture


@pytest.mark.parametrize("name", architecture_names())
def test_descriptor_rules_name_layers_of_the_network(name: str, weights_dir: Path) -> None:
    arch = get_architecture(name)
    assert arch.id == name and arch.scales and all(w.scale in arch.scales for w in arch.weights)
    present = [w for w in arch.weights if (weights_dir / w.filename).is_file()]
    if not present:
        pytest.skip(f"{name}: no official checkpoint in {weights_dir} (layouts are tested with random weights "
                    f"in tests/zoo/test_{name}.py)")
    w = present[0]
    net = load_model(name, w.scale, weights=weights_dir / w.filename, variant=w.variant).net
    if arch.rules.convs:
        assert match_modules(net, list(arch.rules.convs), (nn.Conv2d,)), f"{name}: conv rules match nothing"
    if arch.rules.tail is not None:
        layers = arch.rules.tail(w.scale)
        assert all(isinstance(net.get_submodule(n), nn.Conv2d) for n, _ in layers)
        assert len(tail_layers(net, layers)) == len(layers)
    if arch.rules.windows:  # the descriptor's window_export is what the exporter does
        pytest.importorskip("onnx", reason="the exporter needs the [onnx] extra")
        from amsr.export.exportable import prepare_for_export, window_exporting_architectures

        acc = load_model(name, w.scale, weights=weights_dir / w.filename, variant=w.variant).accelerated(
            MaskConfig(window_threshold=0.5))
        if arch.rules.window_export:
            assert name in window_exporting_architectures()
            prepare_for_export(acc)
        else:
            with pytest.raises(ExportError, match="imdtn, swinir|swinir, imdtn"):
                prepare_for_export(acc)

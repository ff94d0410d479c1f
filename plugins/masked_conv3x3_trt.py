"""TensorRT definition of ``amsr::MaskedConv3x3`` with TensorRT's Python plugin API (``tensorrt.plugin``).

Importing this module registers the plugin (``@trtp.register``) with an ahead-of-time implementation
(``@trtp.aot_impl``): the Triton kernel of ``masked_conv3x3_triton.py`` compiled to PTX at build time, so the
engine embeds the kernel and runs without Python (needs TensorRT ≥ 10.10 for ``aot_impl``). An
``@trtp.autotune`` lists the supported type/format combinations (float32 or float16, linear NCHW).

Not verified on a GPU here (see plugins/README.md); the kernel's math is tested on CPU with
``TRITON_INTERPRET=1`` and the op's semantics through the onnx.reference twin.
"""

# No ``from __future__ import annotations``: tensorrt.plugin validates the decorated functions' annotations
# as real classes (a string annotation is rejected).
from amsr.core.errors import BackendUnavailableError
from amsr.plugins.masked_conv3x3 import PLUGIN_ID

try:
    import tensorrt.plugin as trtp
except ImportError:
    raise BackendUnavailableError("the amsr::MaskedConv3x3 TensorRT plugin needs TensorRT ≥ 10.10 with its Python "
                                  "plugin API: pip install 'tensorrt>=10.10'") from None
try:
    from amsr.plugins import masked_conv3x3_triton as kernel_mod
except ImportError:
    raise BackendUnavailableError("the amsr::MaskedConv3x3 TensorRT plugin compiles a Triton kernel: "
                                  "pip install triton") from None


@trtp.register(PLUGIN_ID)
def masked_conv3x3_desc(features: trtp.TensorDesc, mask: trtp.TensorDesc, weight: trtp.TensorDesc,
                        bias: trtp.TensorDesc, groups: int) -> trtp.TensorDesc:
    """Output: same shape and dtype as ``features`` (N×C×H×W)."""
    return features.like()


@trtp.autotune(PLUGIN_ID)
def masked_conv3x3_autotune(features: trtp.TensorDesc, mask: trtp.TensorDesc, weight: trtp.TensorDesc,
                            bias: trtp.TensorDesc, groups: int, outputs: tuple[trtp.TensorDesc]):
    # 5 I/O tensors (4 inputs, 1 output), all of one float type, linear layout.
    return [trtp.AutoTuneCombination("FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16, FP32|FP16", "LINEAR")]


@trtp.aot_impl(PLUGIN_ID)
def masked_conv3x3_aot(features: trtp.TensorDesc, mask: trtp.TensorDesc, weight: trtp.TensorDesc,
                       bias: trtp.TensorDesc, groups: int, outputs: tuple[trtp.TensorDesc],
                       tactic: int):
    """PTX of the Triton kernel, its launch grid and the scalar arguments, as symbolic shape expressions."""
    import tensorrt as trt

    compiled = kernel_mod.compile_ptx("fp16" if features.dtype == trt.float16 else "fp32")
    n, c, h, w = (features.shape_expr[i] for i in range(4))
    launch = trtp.KernelLaunchParams()
    launch.grid_x = trtp.cdiv(h * w, kernel_mod.BLOCK_P)
    launch.grid_y = trtp.cdiv(c, kernel_mod.BLOCK_O)
    launch.grid_z = n
    launch.block_x = compiled.num_warps * 32
    launch.shared_mem = compiled.shared
    extra = trtp.SymIntExprs(4)
    extra[0], extra[1], extra[2] = trtp.SymInt32(c), trtp.SymInt32(h), trtp.SymInt32(w)
    extra[3] = trtp.SymInt32(c // groups)
    return compiled.name, compiled.ptx, launch, extra

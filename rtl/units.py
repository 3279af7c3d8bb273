"""The catalogue of RTL units and the configurations that ``make verilog`` and ``make synth`` build.

Each entry maps a configuration name to a constructor, so tools and reports
share one list instead of repeating parameters.
"""

from .compute.attention import AttentionConfig, AttentionKernel
from .compute.gelu import GeluUnit
from .compute.layernorm import LayerNormUnit
from .compute.linear import LinearConfig, LinearKernel
from .compute.softmax import SoftmaxUnit
from .compute.systolic import SystolicArray
from .config import PRESETS
from .moe.combine import Combiner
from .moe.gating import Gating
from .top.accelerator import Accelerator

__all__ = ["UNITS"]

#: name -> zero-argument constructor of a ``wiring.Component``.
UNITS = {
    "systolic_4x4": lambda: SystolicArray(4, 4),
    "systolic_8x8": lambda: SystolicArray(8, 8),
    "systolic_8x8_k2": lambda: SystolicArray(8, 8, k_lanes=2),
    "systolic_8x8_packed": lambda: SystolicArray(8, 8, row_broadcast=True, dsp_packing=True),
    # Larger than an ECP5-85F's 156 multipliers: the over-capacity case of make synth-report.
    "systolic_16x16": lambda: SystolicArray(16, 16),
    # Linear kernels sized for M3ViT-tiny: d_in, d_out <= 768, largest matrix 192 x 768.
    "linear_8x8x2": lambda: LinearKernel(LinearConfig(
        pi=8, po=8, t=2, max_in=768, max_out=768, max_weight_words=24 * 96)),
    "linear_4x8x2": lambda: LinearKernel(LinearConfig(
        pi=4, po=8, t=2, max_in=768, max_out=768, max_weight_words=48 * 96)),
    "linear_8x16x1": lambda: LinearKernel(LinearConfig(
        pi=8, po=16, t=1, max_in=768, max_out=768, max_weight_words=24 * 48)),
    "linear_16x16x3": lambda: LinearKernel(LinearConfig(
        pi=16, po=16, t=3, max_in=768, max_out=768, max_weight_words=12 * 48)),
    "linear_16x16x3_packed": lambda: LinearKernel(LinearConfig(
        pi=16, po=16, t=3, max_in=768, max_out=768, max_weight_words=12 * 48, dsp_packing=True)),
    # MoE combine for M3ViT-tiny: 129 token rows of 192, fed by a PO = 16 kernel.
    "combine_129x192_po16": lambda: Combiner(129, 192, 16),
    # Nonlinear units and gating at M3ViT-tiny sizes.
    "softmax_codes_129x3": lambda: SoftmaxUnit(129, 3, "codes"),
    "softmax_codes_129x4": lambda: SoftmaxUnit(129, 4, "codes"),
    "softmax_probs_16x1": lambda: SoftmaxUnit(16, 1, "probs"),
    "softmax_probs_129x2": lambda: SoftmaxUnit(129, 2, "probs"),
    "layernorm_192x4": lambda: LayerNormUnit(192, 4),
    "layernorm_384x8": lambda: LayerNormUnit(384, 8),
    "gelu_x4": lambda: GeluUnit(4),
    "gelu_x16": lambda: GeluUnit(16),
    "gating_e16_k2": lambda: Gating(16, 2, 129),
    # Attention for M3ViT-tiny (N <= 129, head dim 64): R query rows x Dp dims x H heads.
    "attention_4x8x1": lambda: AttentionKernel(AttentionConfig(r=4, dp=8, h=1, max_tokens=129)),
    "attention_8x8x1": lambda: AttentionKernel(AttentionConfig(r=8, dp=8, h=1, max_tokens=129)),
    "attention_8x16x3": lambda: AttentionKernel(AttentionConfig(r=8, dp=16, h=3, max_tokens=129)),
    "attention_16x16x3": lambda: AttentionKernel(AttentionConfig(r=16, dp=16, h=3, max_tokens=129)),
    # The same with the reference's log-sqrt2 codes (second numerator, sqrt(2) at the output).
    "attention_8x16x3_sqrt2": lambda: AttentionKernel(AttentionConfig(
        r=8, dp=16, h=3, max_tokens=129, codes="sqrt2")),
    # And with mant4 codes (an 8 x 5-bit product per P.V lane, wider accumulators).
    "attention_8x16x3_mant4": lambda: AttentionKernel(AttentionConfig(
        r=8, dp=16, h=3, max_tokens=129, codes="mant4")),
}

# The kernels of every accelerator preset, built from its AcceleratorConfig, and the whole
# accelerator top (its RTL is long to synthesize: name it on the command line).
for _name, _preset in PRESETS.items():
    UNITS[f"accelerator_{_name}"] = lambda p=_preset: Accelerator(p())
    UNITS[f"linear_{_name}"] = lambda p=_preset: LinearKernel(p().linear_config())
    UNITS[f"attention_{_name}"] = lambda p=_preset: AttentionKernel(p().attention_config())
    UNITS[f"layernorm_{_name}"] = lambda p=_preset: LayerNormUnit(p().capacity.dim,
                                                                  p().norm_lanes)

"""Export-friendly forwards for Hugging Face mixture-of-experts modules (`compiler.hf_rewrites`).

Routers become one ``wafer::moe_router``; experts modules (any ``use_experts_implementation``
class, whichever of ``eager``, ``batched_mm`` or ``grouped_mm`` its config selects) become
``wafer::moe_dispatch``, two ``wafer::grouped_matmul`` and ``wafer::moe_combine`` with capacity T
(every expert can take every token: no drops, eager's numbers). HF's eager loop needs
data-dependent ``nonzero``; its ``grouped_mm`` path ``sort``/``histc``; both export badly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from core.moe import grouped_matmul, moe_combine, moe_dispatch, moe_router


def experts_forward(
    experts: Any,  # a transformers experts module: attributes mypy cannot see
    original: Callable[..., Tensor],
    hidden_states: Tensor,
    top_k_index: Tensor,
    top_k_weights: Tensor,
) -> Tensor:
    """Run the experts as ``moe_dispatch`` (capacity = tokens: nothing dropped), the up (or
    gate-up) ``grouped_matmul``, the module's own gate or activation, the down
    ``grouped_matmul`` and ``moe_combine``, whatever ``experts_implementation`` says."""
    if experts.training or getattr(experts, "_is_expert_parallel", False):
        return original(hidden_states, top_k_index, top_k_weights)
    tokens = hidden_states.shape[0]
    xs, gates, slots = moe_dispatch(
        hidden_states, top_k_index, top_k_weights, experts.num_experts, tokens
    )
    transpose = not experts.is_transposed
    bias = experts.has_bias
    name = "gate_up_proj" if experts.has_gate else "up_proj"
    up = grouped_matmul(
        xs, getattr(experts, name), getattr(experts, f"{name}_bias") if bias else None, transpose
    )
    hidden = experts._apply_gate(up) if experts.has_gate else experts.act_fn(up)
    down_bias = experts.down_proj_bias if bias else None
    ys = grouped_matmul(hidden.to(xs.dtype), experts.down_proj, down_bias, transpose)
    if experts.has_post_expert_norm:
        ys = experts.post_expert_norm(ys)
    return moe_combine(ys, gates, slots, tokens).to(hidden_states.dtype)


def _router(
    scoring: str, normalize: bool | None, *, cast: str = "", bias: bool = False
) -> Callable[..., object]:
    """A router forward returning ``(logits, top_k_weights, top_k_index)`` as HF's does.
    ``normalize``: None reads the router's ``norm_topk_prob``. ``cast``: the weights' dtype,
    "" (float32), "logits" or "input"."""

    def forward(router: Any, original: Callable[..., object], hidden_states: Tensor):
        hidden_states = hidden_states.reshape(-1, router.weight.shape[1])
        logits = F.linear(hidden_states, router.weight, router.bias if bias else None)
        norm = router.norm_topk_prob if normalize is None else normalize
        weights, indices = moe_router(logits, None, router.top_k, scoring, bool(norm))
        if cast:
            weights = weights.to((logits if cast == "logits" else hidden_states).dtype)
        return logits, weights, indices

    forward.__doc__ = (
        f"Route with one ``wafer::moe_router`` (scoring {scoring!r}) instead of ``torch.topk``."
    )
    return forward


def _deepseek_router(router: Any, original: Callable[..., object], hidden_states: Tensor):
    """DeepSeek-V3 routing (sigmoid scores, correction bias, group-limited top-k, scaling) as
    one ``wafer::moe_router``."""
    hidden_states = hidden_states.reshape(-1, router.hidden_dim)
    logits = F.linear(hidden_states.float(), router.weight.float())
    weights, indices = moe_router(
        logits,
        router.e_score_correction_bias,
        router.top_k,
        "sigmoid",
        bool(router.norm_topk_prob),
        router.num_group,
        router.topk_group,
        float(router.routed_scaling_factor),
    )
    return logits, weights, indices


def _afmoe_router(
    router: Any, original: Callable[..., object], hidden_states: Tensor, expert_bias: Tensor
):
    """AFMoE routing (sigmoid scores, experts chosen with the block's ``expert_bias``, weights
    normalised, times ``route_scale``) as one ``wafer::moe_router``."""
    hidden_states = hidden_states.reshape(-1, hidden_states.shape[-1])
    logits = router.gate(hidden_states).float()
    weights, indices = moe_router(
        logits, expert_bias, router.top_k, "sigmoid", True, scale=float(router.route_scale)
    )
    return logits, weights, indices


# (module path under transformers.models, class) -> forward
_MODELS = "transformers.models"
_MIXTRAL = "mixtral.modeling_mixtral"
_QWEN2 = "qwen2_moe.modeling_qwen2_moe"
_QWEN3 = "qwen3_moe.modeling_qwen3_moe"
EXPERTS = tuple(
    f"{_MODELS}.{path}"
    for path in (
        f"{_MIXTRAL}.MixtralExperts",
        f"{_QWEN2}.Qwen2MoeExperts",
        f"{_QWEN3}.Qwen3MoeExperts",
        "gpt_oss.modeling_gpt_oss.GptOssExperts",
        "jamba.modeling_jamba.JambaExperts",
        "granitemoe.modeling_granitemoe.GraniteMoeExperts",
        "deepseek_v3.modeling_deepseek_v3.DeepseekV3Experts",
        # with the family's own router (`torch.topk` lowers as a sort), each checked against
        # eager from a tiny config (tests/families.py); a class joins this list only once it
        # matches eager
        "olmoe.modeling_olmoe.OlmoeExperts",
        "nemotron_h.modeling_nemotron_h.NemotronHExperts",
        "cohere2_moe.modeling_cohere2_moe.Cohere2MoeExperts",
        "ernie4_5_moe.modeling_ernie4_5_moe.Ernie4_5_MoeExperts",
        "exaone_moe.modeling_exaone_moe.ExaoneMoeExperts",
        "flex_olmo.modeling_flex_olmo.FlexOlmoExperts",
        "glm4_moe.modeling_glm4_moe.Glm4MoeExperts",
        "granitemoehybrid.modeling_granitemoehybrid.GraniteMoeHybridExperts",
        "granitemoeshared.modeling_granitemoeshared.GraniteMoeSharedExperts",
        "hunyuan_v1_moe.modeling_hunyuan_v1_moe.HunYuanMoEV1Experts",
        "minimax.modeling_minimax.MiniMaxExperts",
        "phimoe.modeling_phimoe.PhimoeExperts",
        "afmoe.modeling_afmoe.AfmoeExperts",
        "aria.modeling_aria.AriaExperts",
        "axk1.modeling_axk1.AXK1Experts",
        "axk2.modeling_axk2.AXK2Experts",
        "bailing_hybrid.modeling_bailing_hybrid.BailingHybridExperts",
        "beam.modeling_beam.BeamExperts",
        "deepseek_v2.modeling_deepseek_v2.DeepseekV2Experts",
        "deepseek_v32.modeling_deepseek_v32.DeepseekV32Experts",
        "deepseek_v4.modeling_deepseek_v4.DeepseekV4Experts",
        "dots1.modeling_dots1.Dots1Experts",
        "dots3_note.modeling_dots3_note.Dots3NoteExperts",
        "flint.modeling_flint.FlintExperts",
        "glm4_moe_lite.modeling_glm4_moe_lite.Glm4MoeLiteExperts",
        "glm_moe_dsa.modeling_glm_moe_dsa.GlmMoeDsaExperts",
        "granitemoe_swa.modeling_granitemoe_swa.GraniteMoeSWAExperts",
        "hy_v3.modeling_hy_v3.HYV3Experts",
        "hy_v4.modeling_hy_v4.HYV4Experts",
        "inkling.modeling_inkling.InklingExperts",
        "inkling2.modeling_inkling2.Inkling2Experts",
        "inkling2_loop.modeling_inkling2_loop.Inkling2LoopExperts",
        "kimi_linear.modeling_kimi_linear.KimiLinearExperts",
        "kolibri1.modeling_kolibri1.Kolibri1Experts",
        "laguna.modeling_laguna.LagunaExperts",
        "lara_mini.modeling_lara_mini.LaraMiniExperts",
        "lfm2_moe.modeling_lfm2_moe.Lfm2MoeExperts",
        "mellum.modeling_mellum.MellumExperts",
        "mimo_v2_flash.modeling_mimo_v2_flash.MiMoV2FlashExperts",
        "minimax_m2.modeling_minimax_m2.MiniMaxM2Experts",
        "minimax_m3_vl.modeling_minimax_m3_vl.MiniMaxM3VLExperts",
        "qwen3_5_moe.modeling_qwen3_5_moe.Qwen3_5MoeExperts",
        "qwen3_next.modeling_qwen3_next.Qwen3NextExperts",
        "qwen4_exp.modeling_qwen4_exp.Qwen4ExpTextExperts",
        "solar_open.modeling_solar_open.SolarOpenExperts",
        "zaya.modeling_zaya.ZayaExperts",
    )
)
ROUTERS: dict[str, Callable[..., object]] = {
    f"{_MODELS}.{_MIXTRAL}.MixtralTopKRouter": _router("softmax", True),
    f"{_MODELS}.{_QWEN2}.Qwen2MoeTopKRouter": _router("softmax", None, cast="logits"),
    f"{_MODELS}.{_QWEN3}.Qwen3MoeTopKRouter": _router("softmax", None, cast="logits"),
    f"{_MODELS}.qwen4_exp.modeling_qwen4_exp.Qwen4ExpTextTopKRouter": _router(
        "softmax", None, cast="logits"
    ),
    f"{_MODELS}.gpt_oss.modeling_gpt_oss.GptOssTopKRouter": _router(
        "topk_softmax", False, cast="logits", bias=True
    ),
    f"{_MODELS}.jamba.modeling_jamba.JambaTopKRouter": _router("softmax", False, cast="input"),
    f"{_MODELS}.granitemoe.modeling_granitemoe.GraniteMoeTopKRouter": _router(
        "topk_softmax", False, cast="input"
    ),
    f"{_MODELS}.deepseek_v3.modeling_deepseek_v3.DeepseekV3TopkRouter": _deepseek_router,
    f"{_MODELS}.afmoe.modeling_afmoe.AfmoeTokenChoiceRouter": _afmoe_router,
}

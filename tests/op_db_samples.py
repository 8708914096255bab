"""PyTorch's operator database (`op_db` of `torch.testing._internal.common_methods_invocations`)
through the compiler: each float32 sample of an op is compiled with `compiler.compile` and its
result compared with eager. Shared by `tests/test_op_db.py` and `benchmarks/op_db.py`."""

from __future__ import annotations

import functools
import gc
import itertools
from collections import Counter
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree

import compiler
from core.errors import UnsupportedOperatorError, WaferError

# The op_db names (`name` or `name.variant`) of the ops transformer and SSM decoders use.
TRANSFORMER_OPS = (
    "add sub mul div.no_rounding_mode div.trunc_rounding div.floor_rounding pow neg exp log "
    "sqrt rsqrt reciprocal abs sin cos tanh erf sigmoid nn.functional.relu nn.functional.silu "
    "nn.functional.gelu nn.functional.softplus softmax log_softmax nn.functional.layer_norm "
    "nn.functional.rms_norm nn.functional.group_norm matmul mm bmm addmm nn.functional.linear "
    "nn.functional.scaled_dot_product_attention nn.functional.embedding sum mean amax amin "
    "max.reduction_with_dim min.reduction_with_dim argmax any cumsum cumprod var topk sort "
    "gather scatter scatter_add index_select index_put masked_fill where clamp cat stack split "
    "chunk view reshape permute transpose expand unsqueeze squeeze flatten repeat roll flip "
    "tril triu arange full zeros_like ones_like nn.functional.pad nn.functional.conv1d "
    "slice_scatter narrow select einsum outer baddbmm clone maximum minimum eq lt ge "
    "nn.functional.dropout triu_indices histc unfold"
).split()


# The op_db ops Wafer claims: every float32 sample `benchmarks/op_db.py` ran matched eager
# (measured; `tests/test_op_db.py` keeps them passing).
CLAIMED = frozenset(
    (
        "H T __getitem__ __radd__ __rdiv__ __rmatmul__ __rmod__ __rmul__ __rpow__ __rsub__ _chunk_cat "
        "_softmax_backward_data _unsafe_masked_index _unsafe_masked_index_put_accumulate abs acos "
        "acosh add addcdiv addcmul addmm addmm.decomposed addmv addr alias_copy all amax amin aminmax "
        "any arange argmax argmin argsort asin asinh atan atan2 atanh atleast_1d atleast_2d "
        "atleast_3d baddbmm bfloat16 block_diag bmm bmm.triton_optimized bool broadcast_shapes "
        "broadcast_tensors broadcast_to cartesian_prod cat ceil chunk clamp clamp_max clamp_min clone "
        "column_stack conj conj_physical constant_pad_nd contiguous cos cosh count_nonzero cross "
        "cumprod cumsum cumulative_trapezoid deg2rad diag diag_embed diagflat diagonal diagonal_copy "
        "diff div.floor_rounding div.no_rounding_mode div.trunc_rounding dot double dsplit dstack "
        "einsum empty empty_like empty_permuted empty_strided eq erf erfc erfinv exp exp2 expand expand_as "
        "expand_copy expm1 fft.fftshift fft.ifftshift fill flatten flip fliplr flipud float "
        "float_power floor floor_divide fmax fmin fmod frac full full_like gather ge gradient gt half "
        "heaviside hsplit hstack hypot index_add index_copy index_fill index_select inner int isclose "
        "isfinite isinf isnan isneginf isposinf isreal kron le lerp linalg.cross linalg.diagonal "
        "linalg.matrix_norm linalg.multi_dot linalg.norm linalg.norm.subgradients_at_zero "
        "linalg.vander linalg.vecdot linalg.vector_norm linspace linspace.tensor_overload log log10 "
        "log1p log2 log_softmax log_softmax.with_dtype logaddexp logaddexp2 logical_and logical_not "
        "logical_or logical_xor logit logspace logspace.tensor_overload logsumexp long lt mH mT "
        "masked.amax masked.amin masked.argmax masked.argmin masked.cumprod masked.cumsum "
        "masked.log_softmax masked.logaddexp masked.logsumexp masked.mean masked.norm "
        "masked.normalize masked.prod masked.softmax masked.softmin masked.std masked.sum masked.var "
        "masked_fill matmul max.binary max.reduction_no_dim max.reduction_with_dim maximum mean "
        "meshgrid.list_of_tensors meshgrid.variadic_tensors min.binary min.reduction_no_dim "
        "min.reduction_with_dim minimum mm movedim msort mul mv nan_to_num nanmean nanquantile nansum "
        "native_dropout_backward ne neg new_empty new_full new_ones new_zeros "
        "nn.functional.alpha_dropout nn.functional.binary_cross_entropy "
        "nn.functional.binary_cross_entropy_with_logits nn.functional.celu "
        "nn.functional.channel_shuffle nn.functional.conv1d nn.functional.cosine_embedding_loss "
        "nn.functional.cosine_similarity nn.functional.cross_entropy nn.functional.dropout "
        "nn.functional.dropout2d nn.functional.dropout3d nn.functional.elu nn.functional.embedding "
        "nn.functional.feature_alpha_dropout.without_train nn.functional.gelu nn.functional.glu "
        "nn.functional.group_norm nn.functional.hardshrink nn.functional.hardsigmoid "
        "nn.functional.hardswish nn.functional.hardtanh nn.functional.hinge_embedding_loss "
        "nn.functional.huber_loss nn.functional.interpolate.bicubic nn.functional.interpolate.linear "
        "nn.functional.interpolate.nearest nn.functional.interpolate.nearest-exact "
        "nn.functional.interpolate.trilinear nn.functional.kl_div nn.functional.l1_loss "
        "nn.functional.layer_norm nn.functional.leaky_relu nn.functional.linear "
        "nn.functional.linear_cross_entropy nn.functional.logsigmoid "
        "nn.functional.margin_ranking_loss nn.functional.max_unpool1d nn.functional.max_unpool1d.grad "
        "nn.functional.max_unpool2d nn.functional.max_unpool2d.grad nn.functional.max_unpool3d "
        "nn.functional.max_unpool3d.grad nn.functional.mish nn.functional.mse_loss "
        "nn.functional.multi_margin_loss nn.functional.multilabel_margin_loss "
        "nn.functional.multilabel_soft_margin_loss nn.functional.nll_loss nn.functional.normalize "
        "nn.functional.pad.circular nn.functional.pad.constant nn.functional.pad.reflect "
        "nn.functional.pad.replicate nn.functional.pad.replicate_negative "
        "nn.functional.pairwise_distance nn.functional.pixel_shuffle nn.functional.pixel_unshuffle "
        "nn.functional.poisson_nll_loss nn.functional.prelu nn.functional.relu nn.functional.relu6 "
        "nn.functional.rms_norm nn.functional.scaled_dot_product_attention nn.functional.selu "
        "nn.functional.silu nn.functional.smooth_l1_loss nn.functional.soft_margin_loss "
        "nn.functional.softmin nn.functional.softmin.with_dtype nn.functional.softplus "
        "nn.functional.softshrink nn.functional.softsign nn.functional.tanhshrink "
        "nn.functional.threshold nn.functional.triplet_margin_loss "
        "nn.functional.triplet_margin_with_distance_loss nn.functional.unfold "
        "nn.functional.upsample_nearest norm norm.fro norm.inf ones ones_like outer permute positive "
        "pow prod quantile rad2deg ravel real reciprocal remainder renorm repeat repeat_interleave "
        "reshape reshape_as resolve_conj resolve_neg roll rot90 round rsqrt rsub scalar_tensor "
        "scatter_add select select_scatter sgn sigmoid sign signal.windows.bartlett "
        "signal.windows.blackman signal.windows.cosine signal.windows.exponential "
        "signal.windows.gaussian signal.windows.general_cosine signal.windows.general_hamming "
        "signal.windows.hamming signal.windows.hann signal.windows.kaiser signal.windows.nuttall sin "
        "sinc sinh slice slice_scatter softmax softmax.with_dtype sort special.entr special.ndtr "
        "special.xlog1py split split.list_args split_with_sizes split_with_sizes_copy sqrt square "
        "squeeze squeeze.multiple squeeze_copy stack std std.unbiased std_mean std_mean.unbiased sub "
        "sum sum_to_size t t_copy take take_along_dim tan tanh tensordot tile to topk "
        "torch.ops.aten._safe_softmax.default trace transpose transpose_copy trapezoid trapz tril "
        "triu true_divide trunc unbind unflatten unfold unfold_copy unsafe_chunk unsafe_split "
        "unsqueeze unsqueeze_copy "
        "var var.unbiased var_mean var_mean.unbiased vdot view view_as vsplit vstack where xlogy "
        "zero_ zeros zeros_like "
    ).split()
)


def op_id(op) -> str:
    """`name` or `name.variant`, as op_db's tests name an OpInfo."""
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


@functools.cache
def float32_ops() -> dict[str, object]:
    """Every OpInfo of `op_db` defined for float32 on the CPU, by `op_id`."""
    from torch.testing._internal.common_methods_invocations import op_db

    return {op_id(o): o for o in op_db if torch.float32 in o.supported_dtypes("cpu")}


@dataclass(frozen=True)
class Outcome:
    """One sample's result: `pass`, `mismatch`, `named` (a `WaferError`, `detail` its class)
    or `crash` (any other exception, `detail` its type and message)."""

    status: str
    detail: str = ""


class _Call(torch.nn.Module):
    """`op(*args, **kwargs)` with the sample's tensors as the module's inputs."""

    def __init__(self, op, spec, leaves: list):
        super().__init__()

        def call(*tensors):
            it = iter(tensors)
            values = [next(it) if isinstance(v, torch.Tensor) else v for v in leaves]
            args, kwargs = pytree.tree_unflatten(values, spec)
            return op(*args, **kwargs)

        self.call = call

    def forward(self, *tensors):
        return self.call(*tensors)


# Ops whose results are uninitialised memory in eager: only shapes and dtypes compare.
UNINITIALISED = {"empty", "empty_like", "empty_permuted", "empty_strided", "new_empty"}
UNINITIALISED |= {"new_empty_strided"}


def _close(actual, expected, values: bool = True) -> bool:
    a_leaves, e_leaves = pytree.tree_leaves(actual), pytree.tree_leaves(expected)
    if len(a_leaves) != len(e_leaves):
        return False
    for a, e in zip(a_leaves, e_leaves, strict=True):
        if isinstance(e, torch.Tensor):
            if not isinstance(a, torch.Tensor) or a.shape != e.shape or a.dtype != e.dtype:
                return False
            if values and not torch.allclose(a, e, rtol=1e-4, atol=1e-5, equal_nan=True):
                return False
        elif a != e:
            return False
    return True


def run_sample(op, sample, runtime: str = "reference") -> Outcome | None:
    """Compile one sample on `runtime` and compare it with eager; None when eager fails."""
    args, kwargs = (sample.input, *sample.args), dict(sample.kwargs)
    leaves, spec = pytree.tree_flatten((args, kwargs))
    module = _Call(op.op, spec, leaves)
    inputs = tuple(v for v in leaves if isinstance(v, torch.Tensor))
    try:
        with torch.no_grad():
            expected = module(*inputs)
    except Exception:  # op_db holds samples eager itself refuses
        return None
    try:
        compiled = compiler.compile(module, inputs, target=None, runtime=runtime)
        actual = compiled(*inputs)
    except UnsupportedOperatorError as exc:
        ops = sorted({p.op for p in exc.problems})
        return Outcome("named", f"UnsupportedOperatorError {' '.join(ops)}")
    except WaferError as exc:
        return Outcome("named", type(exc).__name__)
    except Exception as exc:  # what the test exists to catch
        return Outcome("crash", f"{type(exc).__name__}: {str(exc)[:200]}")
    values = op.name not in UNINITIALISED
    return Outcome("pass") if _close(actual, expected, values) else Outcome("mismatch")


def samples(op, limit: int) -> list:
    """The first `limit` float32 CPU samples of `op` (none if op_db cannot make them)."""
    generator = None
    try:
        generator = op.sample_inputs("cpu", torch.float32)
        return list(itertools.islice(generator, limit))
    except Exception:
        return []
    finally:  # close it now, not when collected (which may happen inside a later export)
        getattr(generator, "close", lambda: None)()
        gc.collect()


_RANK = {"crash": 3, "mismatch": 2, "named": 1, "pass": 0}


def run_op(op, limit: int, runtime: str = "reference") -> tuple[Outcome, Counter]:
    """The worst outcome over `op`'s first `limit` samples, and the count of each status."""
    counts: Counter = Counter()
    worst = Outcome("named", "no sample eager runs")
    seen = False
    for sample in samples(op, limit):
        outcome = run_sample(op, sample, runtime)
        if outcome is None:
            continue
        counts[outcome.status] += 1
        if not seen or _RANK[outcome.status] > _RANK[worst.status]:
            worst, seen = outcome, True
    return worst, counts

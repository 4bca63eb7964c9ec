"""Per-sample gradients of one layer from what a forward hook recorded: one handler class per layer kind.

From a layer's input a and output gradient g (summed over the positions t of any extra dimensions):

    Linear     dW_n = sum_t g_nt a_nt^T
    Conv2d     dW_n = sum_t g_nt a_nt^T          (a_nt: the unfolded receptive field at output position t)
    BatchNorm  dgamma_n = sum_t g_nt * xhat_nt,  dbeta_n = sum_t g_nt   (xhat from the running statistics)

and any other parameterised module through `torch.func` (vmap of a vjp of the module alone), the
fallback, so no selected parameter is ever skipped. Linear and Conv2d gradients can be kept factored:
`Factors(A, G)` with the bias folded into A as a constant-one input, so that dW_n = sum_t G[n, :, t]^T A[n, :, t].

A new layer kind is one class, here or anywhere, decorated with @register: subclass LayerKind, set
`name` and `module_type`, override `record` if the hook should keep something other than the input
tensor (BatchNorm keeps xhat), and implement `call_flat`. A layer whose weight gradient is sum_t g_t a_t^T
subclasses FactorableKind instead and implements `d_out`, `inputs` and `output_grads`: it then gets the
factored and Kronecker-projected paths of tracin.engine.plans too. tracin.engine.grads finds a kind
through `kind_of` and reaches it through `Target.handler`; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_leaves, tree_unflatten

from tracin.engine.projection import Projector
from tracin.errors import TracinError

if TYPE_CHECKING:  # grads imports this module; a Target is only ever passed in
    from tracin.engine.grads import CallDims, Target

LINEAR, CONV, BATCHNORM, GENERIC = "linear", "conv", "batchnorm", "generic"
GROUPED, PATCHES = "grouped", "patches"
CONV_METHODS = ("auto", GROUPED, PATCHES)
RECOMPUTE_RTOL = 1e-3  # torch.func's one-example recomputation vs the batched output, relative to its max
RECOMPUTE_ATOL = 1e-12


@dataclass
class Call:
    """One forward call of a target module: what its per-sample gradient needs, and its outputs.

    outputs: its floating-point output tensors, as the hook saw them (the model got copies); grads: the
    gradient of the summed loss with respect to each; inputs: what the kind's `record` kept (Linear/Conv2d:
    (input,), BatchNorm: (xhat,), torch.func modules: the leaves of their flattened (args, kwargs),
    rebuilt with `spec`); state: a torch.func module's parameters and buffers (detached, sharing storage:
    an eval-mode forward does not change them); positions: where the outputs sit among the leaves of the
    module's output; watched: (tensor, version) of inputs and uncopied outputs that must not change.
    """

    outputs: list[Tensor]
    inputs: tuple[Any, ...]
    grads: list[Tensor] = field(default_factory=list)
    state: dict[str, Tensor] = field(default_factory=dict)
    spec: Any = None
    positions: list[int] = field(default_factory=list)
    watched: list[tuple[Tensor, int]] = field(default_factory=list)

    @property
    def grad(self) -> Tensor:
        """The output gradient of a single-output (closed-form) call."""
        return self.grads[0]

    def changed(self) -> bool:
        """A recorded input, or an output handed on uncopied, was changed in place during the pass."""
        return any(tensor._version != version for tensor, version in self.watched)


@dataclass
class Factors:
    """Per-sample gradient of one Linear/Conv2d layer in factored form.

    A: Tensor[n, groups, positions, d_in] layer inputs (d_in = 0 when only the bias is selected);
    G: Tensor[n, groups, positions, d_out] output gradients; bias: the bias is selected, which acts as
    a constant input 1. dW_n[g] = G[n, g]^T A[n, g], db_n[g] = sum over positions of G[n, g].
    """

    A: Tensor
    G: Tensor
    bias: bool = False

    def materialize(self) -> Tensor:
        """Tensor[n, groups * d_out * (d_in + bias)]: [weight columns, bias column] per output row."""
        parts = [torch.einsum("ngto,ngti->ngoi", self.G, self.A)] if self.A.shape[-1] else []
        if self.bias:
            parts.append(self.G.sum(2).unsqueeze(-1))
        return torch.cat(parts, dim=-1).flatten(1) if len(parts) > 1 else parts[0].flatten(1)


def _detached(leaves: Sequence[Any], copy: bool) -> list[Any]:
    """Tensor leaves detached (copied when `copy`), one detached tensor per distinct input tensor."""
    memo: dict[int, Tensor] = {}
    out = []
    for leaf in leaves:
        if isinstance(leaf, Tensor):
            if id(leaf) not in memo:
                memo[id(leaf)] = leaf.detach().clone() if copy else leaf.detach()
            leaf = memo[id(leaf)]
        out.append(leaf)
    return out


def _summed(flats: Sequence[Tensor]) -> Tensor:
    """Tensor[n, D]: the flat gradients of a module's calls, summed."""
    return flats[0] if len(flats) == 1 else torch.stack(flats).sum(0)


# --- the interface and the registry ------------------------------------------------------------------


class LayerKind:
    """How per-sample gradients of one kind of module are formed from its recorded calls.

    The defaults fit a closed form of one tensor input whose flat gradient lists each selected parameter
    in turn: a subclass sets `name` and `module_type` and implements `call_flat`.
    """

    name: str = ""
    module_type: type = nn.Module
    factorable = False  # has factors/output_grads/layer_inputs/projected_inputs (FactorableKind)

    def handles(self, module: nn.Module) -> bool:
        """A module of module_type whose forward is the stock one: a subclass that changes forward gets
        torch.func, which follows whatever it does."""
        return isinstance(module, self.module_type) and type(module).forward is self.module_type.forward

    def fits(self, params: Sequence[str], dims: Sequence[CallDims]) -> bool:
        """The closed form applies where the module holds only its own parameters, takes one tensor (by
        position or keyword) and keeps examples in dimension 0 (a Linear inside a batch_first=False
        transformer does not)."""
        return all("." not in p for p in params) and all(d.inputs == (0,) and d.outputs == (0,) for d in dims)

    def record(self, target: Target, leaves: Sequence[Any], spec: Any, outputs: list[Tensor], copy: bool) -> Call:
        """The Call of one forward from the leaves of its flattened (args, kwargs): the one input tensor,
        detached (copied when `copy`) and watched for in-place changes."""
        (x,) = _detached(leaves[:1], copy)
        return Call(outputs, (x,), watched=[(x, x._version)])

    def call_flat(self, target: Target, call: Call) -> Tensor:
        """Tensor[n, D]: the flattened per-sample gradient of one call's selected parameters."""
        raise NotImplementedError(f"{type(self).__name__} does not implement call_flat")

    def flat(self, target: Target, calls: Sequence[Call], conv_method: str = "auto", verify: bool = False) -> Tensor:
        """Tensor[n, D] summed over the target's calls. conv_method and verify concern the kinds that
        read them (Conv2d, torch.func)."""
        return _summed([self.call_flat(target, call) for call in calls])

    def unflatten(self, target: Target, flat: Tensor) -> dict[str, Tensor]:
        """Split a flat per-sample gradient Tensor[n, D] into {param: Tensor[n, *param.shape]}."""
        n, module = flat.shape[0], target.module
        shapes = [module.get_parameter(p).shape for p in target.params]
        parts = flat.split([s.numel() for s in shapes], dim=1)
        return {p: part.reshape(n, *s) for p, s, part in zip(target.params, shapes, parts)}


KINDS: dict[str, LayerKind] = {}  # the closed forms, in order of precedence: the first that handles a module wins


def register(cls: type[LayerKind]) -> type[LayerKind]:
    """Class decorator: add a LayerKind to KINDS under its name (remove it with KINDS.pop(name))."""
    if not cls.name or cls.name in KINDS or cls.name == GENERIC:
        raise ValueError(f"layer kind {cls.__name__} needs a new name, got {cls.name!r}")
    KINDS[cls.name] = cls()
    return cls


def kind_of(module: nn.Module) -> str:
    """The name of the first registered kind that handles the module; GENERIC (torch.func) otherwise."""
    return next((name for name, kind in KINDS.items() if kind.handles(module)), GENERIC)


def handler_for(kind: str) -> LayerKind:
    """The LayerKind registered under `kind`, or the torch.func fallback for GENERIC."""
    return GENERIC_KIND if kind == GENERIC else KINDS[kind]


# --- Linear and Conv2d: factorable ---------------------------------------------------------------------


class FactorableKind(LayerKind):
    """A layer whose weight gradient is sum_t g_t a_t^T: `inputs` and `output_grads` give the two sides,
    [n, groups, positions, d]; the flat layout is [d_out, d_in + bias column], groups in output order."""

    factorable = True

    def groups(self, module: nn.Module) -> int:
        """Independent blocks of the weight (a grouped conv's groups)."""
        return 1

    def d_out(self, module: nn.Module) -> int:
        """Output features (channels), all groups together."""
        raise NotImplementedError

    def inputs(self, target: Target, call: Call) -> Tensor:
        """Tensor[n, groups, positions, d_in] of a call whose weight is selected."""
        raise NotImplementedError

    def output_grads(self, target: Target, call: Call) -> Tensor:
        """Tensor[n, groups, positions, d_out]."""
        raise NotImplementedError

    def layer_inputs(self, target: Target, call: Call) -> Tensor:
        """Tensor[n, groups, positions, d_in]; d_in = 0 when only the bias is selected."""
        if "weight" not in target.params:
            g = self.output_grads(target, call)
            return g.new_zeros(*g.shape[:3], 0)
        return self.inputs(target, call)

    def factors(self, target: Target, calls: Sequence[Call]) -> Factors:
        """Factors of the target; several calls of one module join along positions."""
        inputs = [self.layer_inputs(target, call) for call in calls]
        grads = [self.output_grads(target, call) for call in calls]
        return Factors(torch.cat(inputs, dim=2), torch.cat(grads, dim=2), "bias" in target.params)

    def projected_inputs(self, target: Target, call: Call, projector: Projector) -> Tensor:
        """Tensor[n, groups, positions, k]: layer inputs, with the bias's constant 1 as a last column when
        the bias is selected, projected [d_in (+1)] -> [k]."""
        bias, matrix = "bias" in target.params, projector.dense()
        if matrix is None:
            inputs = self.layer_inputs(target, call)
            if bias:
                inputs = torch.cat([inputs, inputs.new_ones(*inputs.shape[:3], 1)], dim=-1)
            return projector.project(inputs)
        weight_rows = matrix[:-1] if bias else matrix
        if "weight" not in target.params:
            g = self.output_grads(target, call)
            projected = g.new_zeros(*g.shape[:3], matrix.shape[1])
        else:
            projected = self.project_dense(target, call, weight_rows)
        return projected + matrix[-1] if bias else projected

    def project_dense(self, target: Target, call: Call, weight_rows: Tensor) -> Tensor:
        """Tensor[n, groups, positions, k]: the inputs times weight_rows Tensor[d_in, k]."""
        return self.inputs(target, call) @ weight_rows

    def flat(self, target: Target, calls: Sequence[Call], conv_method: str = "auto", verify: bool = False) -> Tensor:
        return self.factors(target, calls).materialize()

    def unflatten(self, target: Target, flat: Tensor) -> dict[str, Tensor]:
        n, module = flat.shape[0], target.module
        d_out = self.d_out(module)
        grid = flat.view(n, self.groups(module), d_out // self.groups(module), -1)
        out = {}
        if "weight" in target.params:
            d_in = module.weight[0].numel()
            out["weight"] = grid[..., :d_in].reshape(n, *module.weight.shape)
        if "bias" in target.params:
            out["bias"] = grid[..., -1].reshape(n, d_out)
        return out


@register
class LinearKind(FactorableKind):
    """nn.Linear; positions are the input's extra dimensions ([n, ..., d_in])."""

    name = LINEAR
    module_type = nn.Linear

    def d_out(self, module: nn.Module) -> int:
        return module.out_features

    def inputs(self, target: Target, call: Call) -> Tensor:
        a = call.inputs[0]
        return a.reshape(a.shape[0], 1, -1, a.shape[-1])

    def output_grads(self, target: Target, call: Call) -> Tensor:
        g = call.grad
        return g.reshape(g.shape[0], 1, -1, g.shape[-1])


def _positions_last(t: Tensor, groups: int) -> Tensor:
    """[n, groups * d, *spatial] -> [n, groups, positions, d]."""
    return t.reshape(t.shape[0], groups, t.shape[1] // groups, -1).transpose(2, 3)


def _padded(conv: nn.Conv2d, x: Tensor) -> tuple[Tensor, Any]:
    """The input with non-zero padding modes and 'same'/'valid' applied, and the padding left to do."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        return F.pad(x, conv._reversed_padding_repeated_twice, mode=mode), 0
    return x, conv.padding


def _receptive_fields(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Receptive fields Tensor[n, C_in * kh * kw, positions], in F.unfold's layout, gathered by one
    strided copy: F.unfold on CUDA launches a kernel per example."""
    x, padding = _padded(conv, x)
    if padding != 0 and any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    windows = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
    n, c, h, w = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, h * w)


def conv_grad_method(conv: nn.Conv2d, device: torch.device) -> str:
    """How per-sample conv weight gradients are formed; both are exact. On CUDA, cuDNN's float32 grouped
    weight-gradient kernel (the batch folded into the groups) is several times slower than one batched
    product over receptive fields gathered by a strided copy, so "patches". On a CPU, oneDNN's grouped
    kernel is the faster one except with few input channels per group (a 3-channel stem), where the
    patches win. `scripts/gpu_check.py` times both on the device at hand; the figures are not kept here,
    where they would go stale."""
    return GROUPED if device.type == "cpu" and conv.in_channels // conv.groups >= 8 else PATCHES


@register
class ConvKind(FactorableKind):
    """nn.Conv2d; positions are output pixels, inputs their receptive fields [C_in/groups * kh * kw]."""

    name = CONV
    module_type = nn.Conv2d

    def groups(self, module: nn.Module) -> int:
        return module.groups

    def d_out(self, module: nn.Module) -> int:
        return module.out_channels

    def inputs(self, target: Target, call: Call) -> Tensor:
        return _positions_last(_receptive_fields(target.module, call.inputs[0]), target.module.groups)

    def output_grads(self, target: Target, call: Call) -> Tensor:
        return _positions_last(call.grad, target.module.groups)

    def project_dense(self, target: Target, call: Call, weight_rows: Tensor) -> Tensor:
        """An ungrouped conv projects as a convolution with the projected kernel, so the receptive fields
        are never unfolded."""
        conv = target.module
        if conv.groups != 1:
            return super().project_dense(target, call, weight_rows)
        x, padding = _padded(conv, call.inputs[0])
        kernel = weight_rows.T.reshape(-1, *conv.weight.shape[1:])
        projected = F.conv2d(x, kernel, stride=conv.stride, padding=padding, dilation=conv.dilation)
        return _positions_last(projected, 1)

    def flat(self, target: Target, calls: Sequence[Call], conv_method: str = "auto", verify: bool = False) -> Tensor:
        """conv_method: "grouped", "patches" (products of output gradients with gathered receptive fields,
        as for Linear) or "auto" (conv_grad_method)."""
        if conv_method == "auto":
            conv_method = conv_grad_method(target.module, calls[0].grad.device)
        if conv_method == PATCHES:
            return super().flat(target, calls)
        return _summed([self.grouped_flat(target, call) for call in calls])

    def grouped_flat(self, target: Target, call: Call) -> Tensor:
        """Per-sample conv gradients, [weight columns, bias column] per output channel, the weight part as
        one grouped weight-gradient convolution with the batch folded into the channels (n * groups groups)."""
        conv, g = target.module, call.grad
        n = g.shape[0]
        parts = []
        if "weight" in target.params:
            x, padding = _padded(conv, call.inputs[0])
            weight = torch.nn.grad.conv2d_weight(
                x.reshape(1, -1, *x.shape[2:]),
                (n * conv.out_channels, *conv.weight.shape[1:]),
                g.reshape(1, -1, *g.shape[2:]),
                stride=conv.stride,
                padding=padding,
                dilation=conv.dilation,
                groups=n * conv.groups,
            )
            parts.append(weight.view(n, conv.out_channels, -1))
        if "bias" in target.params:
            parts.append(g.sum((2, 3)).unsqueeze(-1))
        return torch.cat(parts, dim=-1).flatten(1) if len(parts) > 1 else parts[0].flatten(1)


# --- BatchNorm ---------------------------------------------------------------------------------------------


@register
class BatchNormKind(LayerKind):
    """BatchNorm1d/2d/3d in eval mode: an affine map of xhat, recorded in place of the input."""

    name = BATCHNORM
    module_type = nn.modules.batchnorm._BatchNorm

    def record(self, target: Target, leaves: Sequence[Any], spec: Any, outputs: list[Tensor], copy: bool) -> Call:
        """xhat = (x - running_mean) / sqrt(running_var + eps), by BatchNorm's own eval-mode kernel (one
        fused pass) without its affine part: a new tensor, so nothing downstream can change it."""
        bn, x = target.module, leaves[0].detach()
        if bn.training or bn.running_mean is None:
            raise TracinError(
                "BatchNorm without running statistics (or in training mode) mixes examples; "
                "per-sample gradients need eval mode with track_running_stats=True"
            )
        return Call(outputs, (F.batch_norm(x, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps),))

    def call_flat(self, target: Target, call: Call) -> Tensor:
        """Tensor[n, C (weight) + C (bias)]."""
        xhat, g = call.inputs[0], call.grad
        n, c = g.shape[:2]
        g_rows, xhat_rows = g.reshape(n * c, 1, -1), xhat.reshape(n * c, -1, 1)
        pieces = {
            "weight": lambda: torch.bmm(g_rows, xhat_rows).view(n, c),  # sum over positions of g * xhat
            "bias": lambda: g.reshape(n, c, -1).sum(2),
        }
        return torch.cat([pieces[p]() for p in target.params], dim=1)


# --- anything else: torch.func ------------------------------------------------------------------------------


class GenericKind(LayerKind):
    """Any module, through torch.func: vmap over examples of the vjp of the module alone, at the state it
    had in the forward pass, with examples along the dimensions the probe found (target.dims)."""

    name = GENERIC

    def handles(self, module: nn.Module) -> bool:
        return True

    def fits(self, params: Sequence[str], dims: Sequence[CallDims]) -> bool:
        return True

    def record(self, target: Target, leaves: Sequence[Any], spec: Any, outputs: list[Tensor], copy: bool) -> Call:
        """Every leaf of the arguments (detached, copied when `copy`, tensors watched) and the state."""
        inputs = _detached(leaves, copy)
        module = target.module
        state = {k: v.detach() for k, v in [*module.named_parameters(), *module.named_buffers()]}
        watched = [(t, t._version) for t in inputs if isinstance(t, Tensor)]
        return Call(outputs, tuple(inputs), state=state, spec=spec, watched=watched)

    def flat(self, target: Target, calls: Sequence[Call], conv_method: str = "auto", verify: bool = False) -> Tensor:
        """verify: check once that the one-example recomputation reproduces the batched output, which
        fails if examples interact inside the module (a wrong number otherwise)."""
        return _summed([self.indexed_flat(target, call, i, verify) for i, call in enumerate(calls)])

    def indexed_flat(self, target: Target, call: Call, index: int, verify: bool) -> Tensor:
        """Tensor[n, D] of the target's call number `index` (whose dims are target.dims[index])."""
        dims = target.dims[index]
        batched = [i for i, d in enumerate(dims.inputs) if d is not None]
        one_example = self._one_example(target, call, dims, batched)
        in_dims = (tuple(dims.inputs[i] for i in batched), dims.outputs)
        try:
            grads, primal = vmap(one_example, in_dims=in_dims, out_dims=(0, dims.outputs))(
                tuple(call.inputs[i] for i in batched), tuple(call.grads)
            )
        except (RuntimeError, ValueError, NotImplementedError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TracinError(
                f"module {target.name!r}: torch.func cannot form per-example gradients through it ({reason})"
            ) from None
        if verify:
            _check_recomputation(target, primal, call.outputs)
        n = call.grads[0].shape[dims.outputs[0]]
        return torch.cat([grads[p].reshape(n, -1) for p in target.params], dim=1)

    @staticmethod
    def _one_example(target: Target, call: Call, dims: CallDims, batched: list[int]):
        """(one example's batched leaves, its output gradients) -> ({param: gradient}, its outputs)."""
        params = {k: call.state[k] for k in target.params}
        fixed = {k: v for k, v in call.state.items() if k not in params}

        def one_example(example_leaves: tuple, grads_out: tuple) -> tuple[dict[str, Tensor], tuple]:
            leaves = list(call.inputs)
            for i, leaf in zip(batched, example_leaves):
                leaves[i] = leaf.unsqueeze(dims.inputs[i])
            args, kwargs = tree_unflatten(leaves, call.spec)

            def forward(p: dict) -> tuple:
                out = tree_leaves(functional_call(target.module, (p, fixed), args, kwargs))
                return tuple(out[i] for i in call.positions)

            primal, pullback = vjp(forward, params)
            cotangents = tuple(g.unsqueeze(d) for g, d in zip(grads_out, dims.outputs))
            return pullback(cotangents)[0], tuple(p.squeeze(d) for p, d in zip(primal, dims.outputs))

        return one_example


GENERIC_KIND = GenericKind()


def _check_recomputation(target: Target, primal: Sequence[Tensor], outputs: Sequence[Tensor]) -> None:
    """torch.func's one-example-at-a-time outputs against the batched ones the hook recorded."""
    for mine, recorded in zip(primal, outputs):
        if mine.shape != recorded.shape:
            raise TracinError(
                f"module {target.name!r}: run one example at a time its output has shape {tuple(mine.shape)}, batched {tuple(recorded.shape)}"
            )
        scale = float(recorded.abs().max()) if recorded.numel() else 0.0
        gap = float((mine - recorded).abs().max()) if recorded.numel() else 0.0
        if gap > RECOMPUTE_RTOL * scale + RECOMPUTE_ATOL:
            raise TracinError(
                f"module {target.name!r}: run one example at a time it does not reproduce its batched output "
                f"(max difference {gap:.3g} of {scale:.3g}); its examples interact, so their gradients are not separable"
            )

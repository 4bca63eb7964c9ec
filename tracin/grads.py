"""Batched per-sample gradients of selected parameters, from one forward and one backward pass.

Forward hooks record each selected module's input and output; `torch.autograd.grad` of the summed
per-example loss with respect to those outputs gives every example's output gradient at once (an
example's loss depends only on its own row in eval mode). From a layer's input a and output gradient g:

    Linear     dW_n = sum_t g_nt a_nt^T          (t: positions of any extra input dims)
    Conv2d     dW_n = sum_t g_nt a_nt^T          (a_nt: the unfolded receptive field at output position t)
    BatchNorm  dgamma_n = sum_t g_nt * xhat_nt,  dbeta_n = sum_t g_nt   (xhat from the running statistics)

and any other parameterised module through `torch.func` (vmap of a vjp of the module alone), so no
selected parameter is ever skipped. Linear and Conv2d gradients can be kept factored: `Factors(A, G)`
with the bias folded into A as a constant-one input, so that dW_n = sum_t G[n, :, t]^T A[n, :, t].
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from tracin.errors import NonFiniteError, TracinError

LINEAR, CONV, BATCHNORM, GENERIC = "linear", "conv", "batchnorm", "generic"
FACTORABLE = (LINEAR, CONV)
GROUPED, PATCHES = "grouped", "patches"
CONV_METHODS = ("auto", GROUPED, PATCHES)

# loss_fn(logits [n, classes], labels [n], inputs [n, ...]) -> per-example losses [n]
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def cross_entropy_loss(logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


@dataclass(frozen=True)
class Target:
    """A module whose own parameters are selected.

    name: the module's name in the model ("" for the root); params: selected local parameter names, in
    the module's order; kind: how its per-sample gradients are computed.
    """

    name: str
    module: nn.Module
    kind: str
    params: tuple[str, ...]

    @property
    def param_names(self) -> list[str]:
        return [f"{self.name}.{p}" if self.name else p for p in self.params]


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return LINEAR
    if isinstance(module, nn.Conv2d):
        return CONV
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return BATCHNORM
    return GENERIC


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def select_targets(model: nn.Module, layers: Optional[Sequence[str]] = None) -> list[Target]:
    """Targets owning the trainable parameters whose names start with one of `layers` (module-name
    prefixes on dot boundaries: "layer1" selects "layer1.0.conv1.weight", not "layer10..."). None or
    empty selects every trainable parameter. A prefix that selects nothing is a TracinError."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    prefixes = list(layers) if layers else [""]
    for prefix in prefixes:
        if not any(_matches(n, prefix) for n, _ in named):
            top = sorted({n.split(".")[0] for n, _ in named})
            raise TracinError(f"layer {prefix!r} selects no trainable parameter; top-level names: {', '.join(top)}")
    chosen = {n for n, _ in named if any(_matches(n, p) for p in prefixes)}
    targets = []
    for module_name, module in model.named_modules():
        own = [p for p, _ in module.named_parameters(recurse=False)]
        full = [f"{module_name}.{p}" if module_name else p for p in own]
        picked = tuple(p for p, f in zip(own, full) if f in chosen)
        if picked:
            targets.append(Target(module_name, module, _kind(module), picked))
    return targets


def last_linear_target(model: nn.Module) -> Target:
    """The weight of the model's final nn.Linear (captum's TracInCPFast uses the same, without bias)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TracinError("last-layer mode needs an nn.Linear layer; the model has none")
    name, module = linears[-1]
    return Target(name, module, LINEAR, ("weight",))


# --- recording -------------------------------------------------------------------------------------


@dataclass
class Call:
    """One forward call of a target module: what its per-sample gradient needs, and its output."""

    output: Tensor
    inputs: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Tensor] = field(default_factory=dict)
    grad: Optional[Tensor] = None


def _record(target: Target, args: tuple, kwargs: dict, output: Any) -> Call:
    if not isinstance(output, Tensor):
        raise TracinError(f"module {target.name!r} returns {type(output).__name__}; per-sample gradients need a tensor")
    if not output.requires_grad:
        # Parameters need not require grad (the engine's copy has none that do, so autograd never forms
        # summed weight gradients nobody uses); the earliest selected layer's output then starts the graph.
        output.requires_grad_(True)
    detached = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
    if target.kind == BATCHNORM:
        return Call(output, (_normalized_input(target.module, detached[0]),))
    if target.kind == GENERIC:
        module = target.module
        state = {k: v.detach() for k, v in [*module.named_parameters(), *module.named_buffers()]}
        return Call(output, detached, dict(kwargs), state)
    return Call(output, detached[:1])


def _normalized_input(bn: nn.Module, x: Tensor) -> Tensor:
    """xhat = (x - running_mean) / sqrt(running_var + eps), by BatchNorm's own eval-mode kernel (one
    fused pass) without its affine part."""
    if bn.training or bn.running_mean is None:
        raise TracinError(
            "BatchNorm without running statistics (or in training mode) mixes examples; "
            "per-sample gradients need eval mode with track_running_stats=True"
        )
    return F.batch_norm(x, bn.running_mean, bn.running_var, None, None, False, 0.0, bn.eps)


@contextmanager
def recording(targets: Sequence[Target]) -> Iterator[list[list[Call]]]:
    """Forward hooks that append a Call per forward call of each target (list per target)."""
    calls: list[list[Call]] = [[] for _ in targets]
    handles = []
    for i, target in enumerate(targets):

        def hook(module, args, kwargs, output, i=i, target=target):
            calls[i].append(_record(target, args, kwargs, output))

        handles.append(target.module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def record_output_grads(
    model: nn.Module,
    targets: Sequence[Target],
    inputs: Tensor,
    labels: Tensor,
    loss_fn: LossFn = cross_entropy_loss,
    check_finite: bool = True,
) -> list[list[Call]]:
    """One forward and one backward pass; each Call gets `.grad`, the gradient of the summed
    per-example loss with respect to its output (a module that did not reach the loss gets zeros).
    check_finite=False leaves the loss check to the caller: the check waits for the device, and the
    engine checks its score sums instead, which any non-finite gradient makes non-finite."""
    with recording(targets) as calls:
        losses = loss_fn(model(inputs), labels, inputs)
    if losses.shape != (len(inputs),):
        raise TracinError(f"the loss must give one value per example, shape ({len(inputs)},); got {tuple(losses.shape)}")
    if check_finite and not torch.isfinite(losses).all():
        raise NonFiniteError(f"non-finite loss for {int((~torch.isfinite(losses)).sum())} example(s)")
    flat = [call for per_target in calls for call in per_target]
    if not flat:
        raise TracinError("no selected layer was called in the forward pass")
    grads = torch.autograd.grad(losses.sum(), [c.output for c in flat], allow_unused=True)
    for call, grad in zip(flat, grads):
        call.grad = torch.zeros_like(call.output) if grad is None else grad.detach()
        call.output = call.output.detach()
    return calls


# --- factors of Linear and Conv2d --------------------------------------------------------------------


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


def _positions_last(t: Tensor, groups: int) -> Tensor:
    """[n, groups * d, *spatial] -> [n, groups, positions, d]."""
    return t.reshape(t.shape[0], groups, t.shape[1] // groups, -1).transpose(2, 3)


def _linear_inputs(call: Call) -> Tensor:
    a = call.inputs[0]
    return a.reshape(a.shape[0], 1, -1, a.shape[-1])


def output_grads(target: Target, call: Call) -> Tensor:
    """Tensor[n, groups, positions, d_out] of a Linear or Conv2d call."""
    g = call.grad
    if target.kind == LINEAR:
        return g.reshape(g.shape[0], 1, -1, g.shape[-1])
    return _positions_last(g, target.module.groups)


def _padded(conv: nn.Conv2d, x: Tensor) -> tuple[Tensor, Any]:
    """The input with non-zero padding modes and 'same'/'valid' applied, and the padding left to do."""
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        return F.pad(x, conv._reversed_padding_repeated_twice, mode=mode), 0
    return x, conv.padding


def _receptive_fields(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """Receptive fields Tensor[n, C_in * kh * kw, positions], in F.unfold's layout, gathered by one
    strided copy: F.unfold on CUDA launches a kernel per example (~0.85 ms a batch on an H100)."""
    x, padding = _padded(conv, x)
    if padding != 0 and any(padding):
        x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    windows = x.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
    n, c, h, w = windows.shape[:4]
    return windows.permute(0, 1, 4, 5, 2, 3).reshape(n, c * kh * kw, h * w)


def layer_inputs(target: Target, call: Call) -> Tensor:
    """Tensor[n, groups, positions, d_in] of a Linear or Conv2d call (receptive fields for a conv)."""
    if "weight" not in target.params:
        g = output_grads(target, call)
        return g.new_zeros(*g.shape[:3], 0)
    if target.kind == LINEAR:
        return _linear_inputs(call)
    return _positions_last(_receptive_fields(target.module, call.inputs[0]), target.module.groups)


def layer_factors(target: Target, calls: Sequence[Call]) -> Factors:
    """Factors of a Linear or Conv2d target; several calls of one module join along positions."""
    inputs = [layer_inputs(target, call) for call in calls]
    grads = [output_grads(target, call) for call in calls]
    return Factors(torch.cat(inputs, dim=2), torch.cat(grads, dim=2), "bias" in target.params)


def projected_inputs(target: Target, call: Call, matrix: Tensor) -> Tensor:
    """Tensor[n, groups, positions, k]: layer inputs (with the bias's constant 1 when selected) times
    matrix [d_in (+1), k]. An ungrouped conv does this as a convolution with the projected kernel, so
    the receptive fields are never unfolded."""
    weight_rows = matrix[:-1] if "bias" in target.params else matrix
    module = target.module
    if "weight" not in target.params:
        g = output_grads(target, call)
        projected = g.new_zeros(*g.shape[:3], matrix.shape[1])
    elif target.kind == CONV and module.groups == 1:
        x, padding = _padded(module, call.inputs[0])
        kernel = weight_rows.T.reshape(-1, *module.weight.shape[1:])
        projected = F.conv2d(x, kernel, stride=module.stride, padding=padding, dilation=module.dilation)
        projected = _positions_last(projected, 1)
    else:
        projected = layer_inputs(target, call) @ weight_rows
    return projected + matrix[-1] if "bias" in target.params else projected


# --- flat gradients of every kind ---------------------------------------------------------------------


def _batchnorm_flat(target: Target, call: Call) -> Tensor:
    xhat, g = call.inputs[0], call.grad
    n, c = g.shape[:2]
    g_rows, xhat_rows = g.reshape(n * c, 1, -1), xhat.reshape(n * c, -1, 1)
    pieces = {
        "weight": lambda: torch.bmm(g_rows, xhat_rows).view(n, c),  # sum over positions of g * xhat
        "bias": lambda: g.reshape(n, c, -1).sum(2),
    }
    return torch.cat([pieces[p]() for p in target.params], dim=1)


def _generic_flat(target: Target, call: Call) -> Tensor:
    """Per-sample gradients of a module's own selected parameters: vmap over examples of the vjp of
    the module alone, at the state it had in the forward pass. Assumes examples do not interact inside
    the module (true in eval mode for the usual layers)."""
    module, selected = target.module, set(target.params)
    params = {k: v for k, v in call.state.items() if k in selected}
    fixed = {k: v for k, v in call.state.items() if k not in selected}
    batched = [isinstance(a, Tensor) and a.dim() > 0 for a in call.inputs]

    def one_example(example_args: tuple, grad_out: Tensor) -> dict[str, Tensor]:
        args = tuple(a.unsqueeze(0) if b else a for a, b in zip(example_args, batched))
        _, pullback = vjp(lambda p: functional_call(module, (p, fixed), args, call.kwargs), params)
        return pullback(grad_out.unsqueeze(0))[0]

    in_dims = (tuple(0 if b else None for b in batched), 0)
    grads = vmap(one_example, in_dims=in_dims)(call.inputs, call.grad)
    n = call.grad.shape[0]
    return torch.cat([grads[p].reshape(n, -1) for p in target.params], dim=1)


def conv_grad_method(conv: nn.Conv2d, device: torch.device) -> str:
    """How per-sample conv weight gradients are formed; both are exact. Measured per layer and batch of
    128 on the width-16 student: cuDNN's float32 grouped weight-gradient kernel takes up to 0.7 ms on an
    H100 (3x3 layers: 0.4-0.7 ms, ~10x the summed gradient), while the batched product itself takes
    0.02-0.06 ms after one strided copy gathers the receptive fields (the engine's exact run fell from
    0.77 s to 0.43 s with it). oneDNN's grouped kernel on
    a CPU matches the summed gradient except with few input channels per group (the 3-channel stem:
    15 ms grouped, 4 ms from patches)."""
    return GROUPED if device.type == "cpu" and conv.in_channels // conv.groups >= 8 else PATCHES


def _grouped_conv_flat(target: Target, call: Call) -> Tensor:
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


def layer_flat(target: Target, calls: Sequence[Call], conv_method: str = "auto") -> Tensor:
    """Tensor[n, D]: the flattened per-sample gradient of the target's selected parameters, summed
    over its calls. Linear/Conv2d layout: [d_out, d_in + bias column] (groups in output order).
    conv_method: "grouped", "patches" (products of output gradients with gathered receptive fields, as
    for Linear) or "auto" (conv_grad_method)."""
    if target.kind == CONV and conv_method == "auto":
        conv_method = conv_grad_method(target.module, calls[0].grad.device)
    if target.kind == LINEAR or (target.kind == CONV and conv_method == PATCHES):
        return layer_factors(target, calls).materialize()
    build = {CONV: _grouped_conv_flat, BATCHNORM: _batchnorm_flat, GENERIC: _generic_flat}[target.kind]
    flats = [build(target, call) for call in calls]
    return flats[0] if len(flats) == 1 else torch.stack(flats).sum(0)


def _unflatten(target: Target, flat: Tensor) -> dict[str, Tensor]:
    """Split a target's flat per-sample gradient into its parameters' shapes, Tensor[n, *param.shape]."""
    n, module = flat.shape[0], target.module
    if target.kind not in FACTORABLE:
        sizes = [getattr(module, p).numel() for p in target.params]
        parts = flat.split(sizes, dim=1)
        return {p: part.reshape(n, *getattr(module, p).shape) for p, part in zip(target.params, parts)}
    groups = module.groups if target.kind == CONV else 1
    d_out = module.out_features if target.kind == LINEAR else module.out_channels
    grid = flat.view(n, groups, d_out // groups, -1)
    out = {}
    if "weight" in target.params:
        d_in = module.weight[0].numel()
        out["weight"] = grid[..., :d_in].reshape(n, *module.weight.shape)
    if "bias" in target.params:
        out["bias"] = grid[..., -1].reshape(n, d_out)
    return out


def per_sample_grads(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    layers: Optional[Sequence[str]] = None,
    loss_fn: LossFn = cross_entropy_loss,
    conv_method: str = "auto",
) -> dict[str, Tensor]:
    """{parameter name: Tensor[n, *parameter.shape]}, the gradient of each example's own loss, for
    the parameters selected by `layers` (module-name prefixes; None = all trainable). The model is
    used as it is: put it in eval mode first if it has BatchNorm or dropout. conv_method: how conv
    weight gradients are formed ("auto", "grouped" or "patches"; see conv_grad_method)."""
    if conv_method not in CONV_METHODS:
        raise TracinError(f"conv_method must be one of {', '.join(CONV_METHODS)}, got {conv_method!r}")
    targets = select_targets(model, layers)
    calls = record_output_grads(model, targets, inputs, labels, loss_fn)
    grads = {}
    for target, target_calls in zip(targets, calls):
        for local, tensor in _unflatten(target, layer_flat(target, target_calls, conv_method)).items():
            grads[f"{target.name}.{local}" if target.name else local] = tensor
    return grads

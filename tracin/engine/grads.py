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

What users' models do, and how the recording stays exact (`resolve_targets`, `recording`):
- In-place operations after a module (ReLU(inplace=True), `out += identity`) would change the tensor a
  hook recorded: every hook hands the model a copy of the output and keeps the original, and inputs
  changed in place after their module ran are detected by their version counter and the pass is redone
  with copies of them.
- A parameter whose module's forward never runs (nn.MultiheadAttention uses out_proj's tensors directly),
  a parameter shared by several modules, and a parameter held on a container (a ViT's class token) belong
  to the nearest module that is called and holds every use: torch.func differentiates it there.
- Which dimension of each recorded tensor holds the examples is found by two probe passes of 2 and 3
  examples (a batch_first=False attention layer has them in dim 1), and a torch.func recomputation is
  checked once against the batched output, so examples that interact are an error, not a wrong number.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten

from tracin.engine.projection import Projector
from tracin.errors import NonFiniteError, TracinError

LINEAR, CONV, BATCHNORM, GENERIC = "linear", "conv", "batchnorm", "generic"
FACTORABLE = (LINEAR, CONV)
GROUPED, PATCHES = "grouped", "patches"
CONV_METHODS = ("auto", GROUPED, PATCHES)
UNKNOWN = -1  # a tensor whose shape changes with the batch size other than in one dimension
RECOMPUTE_RTOL = 1e-3  # torch.func's one-example recomputation vs the batched output, relative to its max
RECOMPUTE_ATOL = 1e-12
SUM_RTOL = 1e-4  # summed per-example gradients vs the batch gradient, relative to its largest entry

# loss_fn(logits [n, classes], labels [n], inputs [n, ...]) -> per-example losses [n]
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def cross_entropy_loss(logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


@dataclass(frozen=True)
class CallDims:
    """Where one forward call of a module keeps its examples: the batch dimension of each leaf of its
    flattened (args, kwargs) and of each floating-point leaf of its output (None: not batched)."""

    inputs: tuple[Optional[int], ...]
    outputs: tuple[Optional[int], ...]


@dataclass(frozen=True)
class Target:
    """A module whose selected parameters get per-sample gradients.

    name: the module's name in the model ("" for the root); params: selected parameter names relative
    to the module, in its named_parameters order ("out_proj.weight" when a child's parameter is
    differentiated here); kind: how its per-sample gradients are computed; dims: per forward call,
    where the examples are (set by resolve_targets; the closed forms need none); copy_output: hand the
    model a copy of the output, because the probe saw it changed in place downstream (resolve_targets).
    """

    name: str
    module: nn.Module
    kind: str
    params: tuple[str, ...]
    dims: tuple[CallDims, ...] = ()
    copy_output: bool = True

    @property
    def param_names(self) -> list[str]:
        return [f"{self.name}.{p}" if self.name else p for p in self.params]


_STOCK_FORWARD = {
    LINEAR: (nn.Linear, nn.Linear.forward),
    CONV: (nn.Conv2d, nn.Conv2d.forward),
    BATCHNORM: (nn.modules.batchnorm._BatchNorm, nn.modules.batchnorm._BatchNorm.forward),
}


def _kind(module: nn.Module) -> str:
    """The closed form for a module of a standard type with its standard forward; anything else, a
    subclass that changes forward included, goes through torch.func."""
    for kind, (cls, forward) in _STOCK_FORWARD.items():
        if isinstance(module, cls) and type(module).forward is forward:
            return kind
    return GENERIC


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def select_targets(model: nn.Module, layers: Optional[Sequence[str]] = None) -> list[Target]:
    """Targets owning the trainable parameters whose names start with one of `layers` (module-name
    prefixes on dot boundaries: "layer1" selects "layer1.0.conv1.weight", not "layer10..."). None or
    empty selects every trainable parameter. A prefix that selects nothing is a TracinError. Where each
    parameter is differentiated is settled by resolve_targets."""
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
    return Target(name, module, _kind(module), ("weight",))


# --- where examples are, and which module differentiates each parameter ------------------------------


def _float_positions(leaves: Sequence[Any]) -> list[int]:
    """Positions of a module output's floating-point tensor leaves, each distinct tensor once (a tensor
    returned twice, as in `return h, (h, c)`, is one output, not two)."""
    seen, positions = set(), []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, Tensor) and leaf.is_floating_point() and id(leaf) not in seen:
            seen.add(id(leaf))
            positions.append(i)
    return positions


def _leaf_shapes(leaves: Sequence[Any]) -> tuple[Optional[tuple[int, ...]], ...]:
    """The shape of each tensor leaf; None for other leaves."""
    return tuple(tuple(leaf.shape) if isinstance(leaf, Tensor) else None for leaf in leaves)


@torch.no_grad()
def _probe_shapes(model: nn.Module, inputs: Tensor) -> tuple[dict[str, list[tuple]], set[str]]:
    """One forward pass: {module name: per forward call, (shapes of its (args, kwargs) leaves, shapes of
    its float output leaves)}, and the names of the modules whose outputs were changed in place later."""
    seen: dict[str, list[tuple]] = {}
    watched: list[tuple[str, Tensor, int]] = []
    handles = []
    for name, module in model.named_modules():

        def hook(module, args, kwargs, output, name=name):
            outputs = tree_leaves(output)
            floats = [outputs[i] for i in _float_positions(outputs)]
            seen.setdefault(name, []).append((_leaf_shapes(tree_leaves((args, kwargs))), _leaf_shapes(floats)))
            watched.extend((name, t, t._version) for t in floats)

        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return seen, {name for name, t, version in watched if t._version != version}


def _find_batch_dim(two: Optional[tuple[int, ...]], three: Optional[tuple[int, ...]]) -> Optional[int]:
    """The one dimension that holds 2 and then 3 examples; None if the shape does not change (or the leaf
    is no tensor); UNKNOWN if it changes otherwise."""
    if two is None or two == three:
        return None
    if len(two) != len(three):
        return UNKNOWN
    changed = [d for d, (a, b) in enumerate(zip(two, three)) if a != b]
    return changed[0] if len(changed) == 1 and (two[changed[0]], three[changed[0]]) == (2, 3) else UNKNOWN


def _find_call_dims(two: list[tuple], three: list[tuple]) -> Optional[tuple[CallDims, ...]]:
    """Batch dimensions of every call of a module, or None when they cannot be told: the module is
    called a different number of times, its output has a leaf with no example dimension, or a leaf
    mixes examples with other dimensions."""
    if len(two) != len(three):
        return None
    dims = []
    for (in2, out2), (in3, out3) in zip(two, three):
        inputs = tuple(_find_batch_dim(a, b) for a, b in zip(in2, in3))
        outputs = tuple(_find_batch_dim(a, b) for a, b in zip(out2, out3))
        if not outputs or UNKNOWN in inputs or any(d is None or d == UNKNOWN for d in outputs):
            return None
        dims.append(CallDims(inputs, outputs))
    return tuple(dims)


def resolve_targets(model: nn.Module, targets: Sequence[Target], inputs: Tensor, at_root: Sequence[str] = ()) -> list[Target]:
    """The targets moved to where their parameters can be differentiated, with the batch dimensions of
    every call. Two probe passes (2 and 3 examples, rows repeated if needed) show which modules run and
    where their examples are. A parameter goes to its module if that module is called and keeps its
    examples apart along one dimension; otherwise (never called, shared with another module, output with
    no example dimension) to the nearest enclosing module that is, through torch.func. Parameters named
    in `at_root` go to the root module (see settle_targets)."""
    if len(inputs) == 0:
        raise TracinError("cannot probe the model with no examples")
    (two, changed_two), (three, changed_three) = (_probe_shapes(model, inputs[torch.arange(n) % len(inputs)]) for n in (2, 3))
    dims = {name: _find_call_dims(two[name], three[name]) for name in two if name in three}
    changed = changed_two | changed_three
    placed: dict[str, list[str]] = {}
    for name, home in _find_homes(model, targets):
        home = "" if name in at_root else home
        while dims.get(home) is None:
            if home == "":
                raise TracinError(f"cannot tell which dimension of the model's output holds the examples (needed for {name})")
            home = _parent(home)
        placed.setdefault(home, []).append(name)
    modules = dict(model.named_modules())
    return [
        replace(_make_target(home, modules[home], placed[home], dims[home]), copy_output=home in changed)
        for home in modules
        if home in placed
    ]


def _find_homes(model: nn.Module, targets: Sequence[Target]) -> list[tuple[str, str]]:
    """(parameter name, the deepest module holding every use of it) per selected parameter: its own
    module, or for a parameter shared by several modules their common enclosing module."""
    owners: dict[int, list[str]] = {}
    for module_name, module in model.named_modules(remove_duplicate=False):
        for local, param in module.named_parameters(recurse=False):
            owners.setdefault(id(param), []).append(f"{module_name}.{local}" if module_name else local)
    return [(name, _owner(owners[id(model.get_parameter(name))])) for t in targets for name in t.param_names]


def _owner(names: Sequence[str]) -> str:
    """The deepest module name holding every parameter name (their common dotted prefix)."""
    common = []
    for level in zip(*(n.split(".")[:-1] for n in names)):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return ".".join(common)


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _make_target(home: str, module: nn.Module, names: Sequence[str], dims: tuple[CallDims, ...]) -> Target:
    """One module's target: its closed form when it holds only its own parameters, takes one tensor (by
    position or keyword) and keeps examples in dimension 0 (a Linear inside a batch_first=False
    transformer does not), else torch.func."""
    local = {n[len(home) + 1 :] if home else n for n in names}
    params = tuple(p for p, _ in module.named_parameters() if p in local)
    if len(params) != len(local):
        raise TracinError(f"module {home!r} does not list parameters {sorted(local - set(params))} as its own")
    kind = _kind(module)
    closed = all("." not in p for p in params) and all(d.inputs == (0,) and d.outputs == (0,) for d in dims)
    return Target(home, module, kind if closed else GENERIC, params, dims)


# --- recording -------------------------------------------------------------------------------------


@dataclass
class Call:
    """One forward call of a target module: what its per-sample gradient needs, and its outputs.

    outputs: its floating-point output tensors, as the hook saw them (the model got copies); grads: the
    gradient of the summed loss with respect to each; inputs: Linear/Conv2d: (input,), BatchNorm: (xhat,),
    other modules: the leaves of their flattened (args, kwargs), rebuilt with `spec`; state: a torch.func
    module's parameters and buffers (detached, sharing storage: an eval-mode forward does not change them);
    positions: where the outputs sit among the leaves of the module's output; watched: (tensor, version)
    of inputs and uncopied outputs that must not change.
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
        """The output gradient of a single-output (Linear, Conv2d, BatchNorm) call."""
        return self.grads[0]

    def changed(self) -> bool:
        """A recorded input, or an output handed on uncopied, was changed in place during the pass."""
        return any(tensor._version != version for tensor, version in self.watched)


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


def _record(target: Target, args: tuple, kwargs: dict, output: Any, copy_all: bool) -> tuple[Call, Any]:
    """The Call of one forward, and the output to hand on. Where in-place operations downstream
    (ReLU(inplace=True), `out += identity`) change an output (target.copy_output, or copy_all), the model
    gets a copy and the original is recorded; otherwise the output itself is handed on and watched, and a
    change is caught after the pass (see _forward). A new leaf (the first selected layer's output) is
    always copied: autograd forbids in-place operations on a leaf that requires grad."""
    leaves, spec = tree_flatten(output)
    positions = _float_positions(leaves)
    if not positions:
        raise TracinError(f"module {target.name!r} returns no floating-point tensor, so no gradient reaches its parameters")
    outputs, copies, kept = [], {}, []
    for i in positions:
        # The engine's copy of the model has no parameter that requires grad (autograd then never forms
        # summed weight gradients nobody uses); the earliest selected layer's output starts the graph.
        recorded = leaves[i] if leaves[i].requires_grad else leaves[i].detach().requires_grad_(True)
        outputs.append(recorded)
        if copy_all or target.copy_output or recorded is not leaves[i]:
            copies[id(leaves[i])] = recorded.clone()
        else:
            kept.append((recorded, recorded._version))
    handed_on = [copies.get(id(leaf), leaf) if isinstance(leaf, Tensor) else leaf for leaf in leaves]
    call = _make_call(target, args, kwargs, outputs, copy_all)
    call.positions = positions
    call.watched.extend(kept)
    return call, tree_unflatten(handed_on, spec)


def _make_call(target: Target, args: tuple, kwargs: dict, outputs: list[Tensor], copy_inputs: bool) -> Call:
    """The Call of one forward: the closed forms keep their one input tensor (BatchNorm its xhat), a
    torch.func module every leaf of its arguments and its state."""
    leaves, spec = tree_flatten((args, kwargs))
    if target.kind == BATCHNORM:
        return Call(outputs, (_normalized_input(target.module, leaves[0].detach()),))
    if target.kind == GENERIC:
        inputs = _detached(leaves, copy_inputs)
        module = target.module
        state = {k: v.detach() for k, v in [*module.named_parameters(), *module.named_buffers()]}
        watched = [(t, t._version) for t in inputs if isinstance(t, Tensor)]
        return Call(outputs, tuple(inputs), state=state, spec=spec, watched=watched)
    (x,) = _detached(leaves[:1], copy_inputs)
    return Call(outputs, (x,), watched=[(x, x._version)])


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
def recording(targets: Sequence[Target], copy_all: bool = False) -> Iterator[list[list[Call]]]:
    """Forward hooks that append a Call per forward call of each target (list per target) and hand the
    model copies of the outputs that are changed in place downstream (see _record). copy_all: copy every
    output and record copies of the inputs (after a pass in which something recorded changed)."""
    calls: list[list[Call]] = [[] for _ in targets]
    handles = []
    for i, target in enumerate(targets):

        def hook(module, args, kwargs, output, i=i, target=target):
            call, handed_on = _record(target, args, kwargs, output, copy_all)
            calls[i].append(call)
            return handed_on

        handles.append(target.module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield calls
    finally:
        for handle in handles:
            handle.remove()


def _forward(model, targets, inputs, labels, loss_fn) -> tuple[Tensor, list[list[Call]]]:
    """Per-example losses and the recorded calls; redone with every output and input copied if the model
    changed something recorded in place (an input after its module ran, an uncopied output downstream)."""
    for copy_all in (False, True):
        with recording(targets, copy_all) as calls:
            losses = loss_fn(model(inputs), labels, inputs)
        if not any(call.changed() for per_target in calls for call in per_target):
            return losses, calls
    changed = [t.name for t, per_target in zip(targets, calls) if any(c.changed() for c in per_target)]
    raise TracinError(f"what {', '.join(map(repr, changed))} recorded changes in place even when copied")


def record_output_grads(
    model: nn.Module,
    targets: Sequence[Target],
    inputs: Tensor,
    labels: Tensor,
    loss_fn: LossFn = cross_entropy_loss,
    check_finite: bool = True,
) -> list[list[Call]]:
    """One forward (two if the model changes a recorded input in place) and one backward pass; each Call
    gets `.grads`, the gradient of the summed per-example loss with respect to each output (an output that
    did not reach the loss gets zeros).
    check_finite=False leaves the loss check to the caller: the check waits for the device, and the
    engine checks its score sums instead, which any non-finite gradient makes non-finite."""
    losses, calls = _forward(model, targets, inputs, labels, loss_fn)
    if losses.shape != (len(inputs),):
        raise TracinError(f"the loss must give one value per example, shape ({len(inputs)},); got {tuple(losses.shape)}")
    if check_finite and not torch.isfinite(losses).all():
        raise NonFiniteError(f"non-finite loss for {int((~torch.isfinite(losses)).sum())} example(s)")
    for target, per_target in zip(targets, calls):
        if not per_target or (target.dims and len(per_target) != len(target.dims)):
            ran = f"ran {len(per_target)} times" + (f", {len(target.dims)} when probed" if target.dims else "")
            raise TracinError(f"module {target.name!r} {ran}: its parameters cannot be attributed to calls")
    flat = [call for per_target in calls for call in per_target]
    outputs = [output for call in flat for output in call.outputs]
    grads = torch.autograd.grad(losses.sum(), outputs, allow_unused=True)
    start = 0
    for call in flat:
        mine = grads[start : start + len(call.outputs)]
        call.grads = [torch.zeros_like(o) if g is None else g.detach() for o, g in zip(call.outputs, mine)]
        call.outputs = [o.detach() for o in call.outputs]
        start += len(mine)
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


def projected_inputs(target: Target, call: Call, projector: Projector) -> Tensor:
    """Tensor[n, groups, positions, k]: layer inputs, with the bias's constant 1 as a last column when
    the bias is selected, projected [d_in (+1)] -> [k]. With a dense projector an ungrouped conv does this
    as a convolution with the projected kernel, so the receptive fields are never unfolded."""
    bias, matrix = "bias" in target.params, projector.dense()
    module = target.module
    if matrix is None:
        inputs = layer_inputs(target, call)
        if bias:
            inputs = torch.cat([inputs, inputs.new_ones(*inputs.shape[:3], 1)], dim=-1)
        return projector.project(inputs)
    weight_rows = matrix[:-1] if bias else matrix
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
    return projected + matrix[-1] if bias else projected


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


def _generic_flat(target: Target, call: Call, index: int, verify: bool = False) -> Tensor:
    """Per-sample gradients of a module's selected parameters: vmap over examples of the vjp of the
    module alone, at the state it had in the forward pass, with examples along the dimensions the probe
    found. verify: check once that the one-example recomputation reproduces the batched output, which
    fails if examples interact inside the module (a wrong number otherwise)."""
    module, dims = target.module, target.dims[index]
    params = {k: call.state[k] for k in target.params}
    fixed = {k: v for k, v in call.state.items() if k not in params}
    batched = [i for i, d in enumerate(dims.inputs) if d is not None]

    def one_example(example_leaves: tuple, grads_out: tuple) -> tuple[dict[str, Tensor], tuple]:
        leaves = list(call.inputs)
        for i, leaf in zip(batched, example_leaves):
            leaves[i] = leaf.unsqueeze(dims.inputs[i])
        args, kwargs = tree_unflatten(leaves, call.spec)

        def forward(p: dict) -> tuple:
            out = tree_leaves(functional_call(module, (p, fixed), args, kwargs))
            return tuple(out[i] for i in call.positions)

        primal, pullback = vjp(forward, params)
        cotangents = tuple(g.unsqueeze(d) for g, d in zip(grads_out, dims.outputs))
        return pullback(cotangents)[0], tuple(p.squeeze(d) for p, d in zip(primal, dims.outputs))

    in_dims = (tuple(dims.inputs[i] for i in batched), dims.outputs)
    try:
        grads, primal = vmap(one_example, in_dims=in_dims, out_dims=(0, dims.outputs))(
            tuple(call.inputs[i] for i in batched), tuple(call.grads)
        )
    except (RuntimeError, ValueError, NotImplementedError, TypeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TracinError(f"module {target.name!r}: torch.func cannot form per-example gradients through it ({reason})") from None
    if verify:
        _check_recomputation(target, primal, call.outputs)
    n = call.grads[0].shape[dims.outputs[0]]
    return torch.cat([grads[p].reshape(n, -1) for p in target.params], dim=1)


def _check_recomputation(target: Target, primal: Sequence[Tensor], outputs: Sequence[Tensor]) -> None:
    """torch.func's one-example-at-a-time outputs against the batched ones the hook recorded."""
    for mine, recorded in zip(primal, outputs):
        if mine.shape != recorded.shape:
            raise TracinError(f"module {target.name!r}: run one example at a time its output has shape {tuple(mine.shape)}, batched {tuple(recorded.shape)}")
        scale = float(recorded.abs().max()) if recorded.numel() else 0.0
        gap = float((mine - recorded).abs().max()) if recorded.numel() else 0.0
        if gap > RECOMPUTE_RTOL * scale + RECOMPUTE_ATOL:
            raise TracinError(
                f"module {target.name!r}: run one example at a time it does not reproduce its batched output "
                f"(max difference {gap:.3g} of {scale:.3g}); its examples interact, so their gradients are not separable"
            )


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


def layer_flat(target: Target, calls: Sequence[Call], conv_method: str = "auto", verify: bool = False) -> Tensor:
    """Tensor[n, D]: the flattened per-sample gradient of the target's selected parameters, summed
    over its calls. Linear/Conv2d layout: [d_out, d_in + bias column] (groups in output order).
    conv_method: "grouped", "patches" (products of output gradients with gathered receptive fields, as
    for Linear) or "auto" (conv_grad_method). verify: check torch.func's recomputation (see _generic_flat)."""
    if target.kind == CONV and conv_method == "auto":
        conv_method = conv_grad_method(target.module, calls[0].grad.device)
    if target.kind == LINEAR or (target.kind == CONV and conv_method == PATCHES):
        return layer_factors(target, calls).materialize()
    if target.kind == GENERIC:
        flats = [_generic_flat(target, call, i, verify) for i, call in enumerate(calls)]
    else:
        flats = [{CONV: _grouped_conv_flat, BATCHNORM: _batchnorm_flat}[target.kind](target, call) for call in calls]
    return flats[0] if len(flats) == 1 else torch.stack(flats).sum(0)


def _unflatten(target: Target, flat: Tensor) -> dict[str, Tensor]:
    """Split a target's flat per-sample gradient into its parameters' shapes, Tensor[n, *param.shape]."""
    n, module = flat.shape[0], target.module
    if target.kind not in FACTORABLE:
        shapes = [module.get_parameter(p).shape for p in target.params]
        parts = flat.split([s.numel() for s in shapes], dim=1)
        return {p: part.reshape(n, *s) for p, s, part in zip(target.params, shapes, parts)}
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


def settle_targets(
    model: nn.Module,
    targets: Sequence[Target],
    inputs: Tensor,
    labels: Tensor,
    loss_fn: LossFn = cross_entropy_loss,
    conv_method: str = "auto",
) -> tuple[list[Target], dict[str, Tensor]]:
    """resolve_targets, checked on the probe batch: each parameter's per-example gradients must sum to its
    gradient of the summed loss. A parameter also used outside the module that holds it (a tied weight
    read directly, `h @ self.embed.weight.T`) fails the check; it moves to the root module, where
    torch.func sees every use, and is checked again. Returns the targets and the probe batch's
    per-example gradients {name: Tensor[n, *param.shape]}."""
    resolved = resolve_targets(model, targets, inputs)
    grads = _per_example(model, resolved, inputs, labels, loss_fn, conv_method)
    wrong = _unsummed(model, grads, inputs, labels, loss_fn)
    if wrong:
        resolved = resolve_targets(model, targets, inputs, at_root=wrong)
        grads = _per_example(model, resolved, inputs, labels, loss_fn, conv_method)
        still = _unsummed(model, grads, inputs, labels, loss_fn)
        if still:
            raise TracinError(f"per-example gradients of {', '.join(still)} do not sum to the batch gradient: examples interact")
    return resolved, grads


def _per_example(model, targets, inputs, labels, loss_fn, conv_method: str = "auto") -> dict[str, Tensor]:
    """{parameter name: Tensor[n, *param.shape]} from one recorded pass over settled targets."""
    calls = record_output_grads(model, targets, inputs, labels, loss_fn)
    grads = {}
    for target, target_calls in zip(targets, calls):
        for local, tensor in _unflatten(target, layer_flat(target, target_calls, conv_method, verify=True)).items():
            grads[f"{target.name}.{local}" if target.name else local] = tensor
    return grads


def _unsummed(model: nn.Module, grads: dict[str, Tensor], inputs: Tensor, labels: Tensor, loss_fn: LossFn) -> list[str]:
    """Names whose per-example gradients do not sum to autograd's gradient of the summed loss. A model
    whose weights autograd cannot differentiate (one that changes a module's input in place after the
    module ran trains with no optimiser either) is not checked: there is no batch gradient to hold up."""
    params = [model.get_parameter(name) for name in grads]
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        losses = loss_fn(model(inputs), labels, inputs)
        batch = torch.autograd.grad(losses.sum(), params, allow_unused=True)
    except RuntimeError as error:
        if "modified by an inplace operation" in str(error):
            return []
        raise
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)
    wrong = []
    for (name, per_example), total in zip(grads.items(), batch):
        summed = per_example.sum(0)
        total = torch.zeros_like(summed) if total is None else total
        scale = max(float(total.abs().max()), float(summed.abs().max())) if total.numel() else 0.0
        if float((summed - total).abs().max()) > SUM_RTOL * scale + RECOMPUTE_ATOL:
            wrong.append(name)
    return wrong


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
    _, grads = settle_targets(model, select_targets(model, layers), inputs, labels, loss_fn, conv_method)
    return grads

"""Batched per-sample gradients of selected parameters, from one forward and one backward pass.

Forward hooks record each selected module's input and output; `torch.autograd.grad` of the summed
per-example loss with respect to those outputs gives every example's output gradient at once (an
example's loss depends only on its own row in eval mode). Each module's per-sample gradient is then
formed from its recorded calls by the handler of its layer kind (tracin.engine.layers): closed forms for
Linear, Conv2d and BatchNorm, and torch.func for any other parameterised module, so no selected
parameter is ever skipped. Adding a layer kind is one LayerKind subclass decorated with
tracin.engine.layers.register; this module dispatches every per-kind step through `Target.handler`.

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
from dataclasses import dataclass, replace
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten

from tracin.engine.layers import (
    CONV_METHODS,
    GENERIC,
    RECOMPUTE_ATOL,
    Call,
    Factors,
    LayerKind,
    handler_for,
    kind_of,
)
from tracin.engine.projection import Projector
from tracin.errors import NonFiniteError, SelectionError, TracinError
from tracin.training.losses import CrossEntropy, Objective, as_objective

UNKNOWN = -1  # a tensor whose shape changes with the batch size other than in one dimension
SUM_RTOL = 1e-4  # summed per-example gradients vs the batch gradient, relative to its largest entry


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
    differentiated here); kind: the name of the registered LayerKind that computes its per-sample
    gradients (tracin.engine.layers.KINDS, or GENERIC); dims: per forward call, where the examples are
    (set by resolve_targets; the closed forms need none); copy_output: hand the model a copy of the
    output, because the probe saw it changed in place downstream (resolve_targets).
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

    @property
    def handler(self) -> LayerKind:
        """The kind's handler: every per-kind step (recording, flat gradient, factors) is a call on it."""
        return handler_for(self.kind)


def _matches(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def select_targets(model: nn.Module, layers: Optional[Sequence[str]] = None) -> list[Target]:
    """Targets owning the trainable parameters whose names start with one of `layers` (module-name
    prefixes on dot boundaries: "layer1" selects "layer1.0.conv1.weight", not "layer10..."). None or
    empty selects every trainable parameter. A prefix that selects nothing is a SelectionError. Where each
    parameter is differentiated is settled by resolve_targets."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    prefixes = list(layers) if layers else [""]
    for prefix in prefixes:
        if not any(_matches(n, prefix) for n, _ in named):
            top = sorted({n.split(".")[0] for n, _ in named})
            raise SelectionError(f"layer {prefix!r} selects no trainable parameter; top-level names: {', '.join(top)}")
    chosen = {n for n, _ in named if any(_matches(n, p) for p in prefixes)}
    targets = []
    for module_name, module in model.named_modules():
        own = [p for p, _ in module.named_parameters(recurse=False)]
        full = [f"{module_name}.{p}" if module_name else p for p in own]
        picked = tuple(p for p, f in zip(own, full) if f in chosen)
        if picked:
            targets.append(Target(module_name, module, kind_of(module), picked))
    return targets


def last_linear_target(model: nn.Module) -> Target:
    """The weight of the model's final nn.Linear (captum's TracInCPFast uses the same, without bias)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TracinError("last-layer mode needs an nn.Linear layer; the model has none")
    name, module = linears[-1]
    return Target(name, module, kind_of(module), ("weight",))


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


def resolve_targets(
    model: nn.Module, targets: Sequence[Target], inputs: Tensor, at_root: Sequence[str] = ()
) -> list[Target]:
    """The targets moved to where their parameters can be differentiated, with the batch dimensions of
    every call. Two probe passes (2 and 3 examples, rows repeated if needed) show which modules run and
    where their examples are. A parameter goes to its module if that module is called and keeps its
    examples apart along one dimension; otherwise (never called, shared with another module, output with
    no example dimension) to the nearest enclosing module that is, through torch.func. Parameters named
    in `at_root` go to the root module (see settle_targets)."""
    if len(inputs) == 0:
        raise TracinError("cannot probe the model with no examples")
    (two, changed_two), (three, changed_three) = (
        _probe_shapes(model, inputs[torch.arange(n) % len(inputs)]) for n in (2, 3)
    )
    dims = {name: _find_call_dims(two[name], three[name]) for name in two if name in three}
    changed = changed_two | changed_three
    placed: dict[str, list[str]] = {}
    for name, home in _find_homes(model, targets):
        home = "" if name in at_root else home
        while dims.get(home) is None:
            if home == "":
                raise TracinError(
                    f"cannot tell which dimension of the model's output holds the examples (needed for {name})"
                )
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
    """One module's target: its kind's closed form where that fits the parameters and the calls (see
    LayerKind.fits), else torch.func."""
    local = {n[len(home) + 1 :] if home else n for n in names}
    params = tuple(p for p, _ in module.named_parameters() if p in local)
    if len(params) != len(local):
        raise TracinError(f"module {home!r} does not list parameters {sorted(local - set(params))} as its own")
    kind = kind_of(module)
    return Target(home, module, kind if handler_for(kind).fits(params, dims) else GENERIC, params, dims)


# --- recording -------------------------------------------------------------------------------------


def _record(target: Target, args: tuple, kwargs: dict, output: Any, copy_all: bool) -> tuple[Call, Any]:
    """The Call of one forward, and the output to hand on. Where in-place operations downstream
    (ReLU(inplace=True), `out += identity`) change an output (target.copy_output, or copy_all), the model
    gets a copy and the original is recorded; otherwise the output itself is handed on and watched, and a
    change is caught after the pass (see _forward). A new leaf (the first selected layer's output) is
    always copied: autograd forbids in-place operations on a leaf that requires grad."""
    leaves, spec = tree_flatten(output)
    positions = _float_positions(leaves)
    if not positions:
        raise TracinError(
            f"module {target.name!r} returns no floating-point tensor, so no gradient reaches its parameters"
        )
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
    """The Call of one forward: what the target's kind records of the leaves of its (args, kwargs)."""
    leaves, spec = tree_flatten((args, kwargs))
    return target.handler.record(target, leaves, spec, outputs, copy_inputs)


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
    loss_fn: Objective = CrossEntropy(),
    check_finite: bool = True,
) -> list[list[Call]]:
    """One forward (two if the model changes a recorded input in place) and one backward pass; each Call
    gets `.grads`, the gradient of the summed per-example loss with respect to each output (an output that
    did not reach the loss gets zeros).
    check_finite=False leaves the loss check to the caller: the check waits for the device, and the
    engine checks its score sums instead, which any non-finite gradient makes non-finite."""
    losses, calls = _forward(model, targets, inputs, labels, loss_fn)
    if losses.shape != (len(inputs),):
        raise TracinError(
            f"the loss must give one value per example, shape ({len(inputs)},); got {tuple(losses.shape)}"
        )
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


# --- per-kind steps, through the target's LayerKind -------------------------------------------------


def output_grads(target: Target, call: Call) -> Tensor:
    """Tensor[n, groups, positions, d_out] of a factorable (Linear, Conv2d) call."""
    return target.handler.output_grads(target, call)


def layer_factors(target: Target, calls: Sequence[Call]) -> Factors:
    """Factors of a factorable target; several calls of one module join along positions."""
    return target.handler.factors(target, calls)


def projected_inputs(target: Target, call: Call, projector: Projector) -> Tensor:
    """Tensor[n, groups, positions, k]: layer inputs, with the bias's constant 1 as a last column when
    the bias is selected, projected [d_in (+1)] -> [k]. With a dense projector an ungrouped conv does this
    as a convolution with the projected kernel, so the receptive fields are never unfolded."""
    return target.handler.projected_inputs(target, call, projector)


def layer_flat(target: Target, calls: Sequence[Call], conv_method: str = "auto", verify: bool = False) -> Tensor:
    """Tensor[n, D]: the flattened per-sample gradient of the target's selected parameters, summed
    over its calls. Linear/Conv2d layout: [d_out, d_in + bias column] (groups in output order).
    conv_method: "grouped", "patches" (products of output gradients with gathered receptive fields, as
    for Linear) or "auto" (conv_grad_method). verify: check torch.func's one-example recomputation
    against the batched output (examples that interact inside a module are then an error)."""
    return target.handler.flat(target, calls, conv_method, verify)


def settle_targets(
    model: nn.Module,
    targets: Sequence[Target],
    inputs: Tensor,
    labels: Tensor,
    loss_fn: Objective = CrossEntropy(),
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
            raise TracinError(
                f"per-example gradients of {', '.join(still)} do not sum to the batch gradient: examples interact"
            )
    return resolved, grads


def _per_example(model, targets, inputs, labels, loss_fn, conv_method: str = "auto") -> dict[str, Tensor]:
    """{parameter name: Tensor[n, *param.shape]} from one recorded pass over settled targets."""
    calls = record_output_grads(model, targets, inputs, labels, loss_fn)
    grads = {}
    for target, target_calls in zip(targets, calls):
        for local, tensor in target.handler.unflatten(
            target, layer_flat(target, target_calls, conv_method, verify=True)
        ).items():
            grads[f"{target.name}.{local}" if target.name else local] = tensor
    return grads


def _unsummed(
    model: nn.Module, grads: dict[str, Tensor], inputs: Tensor, labels: Tensor, loss_fn: Objective
) -> list[str]:
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
    loss_fn: Objective = CrossEntropy(),
    conv_method: str = "auto",
) -> dict[str, Tensor]:
    """{parameter name: Tensor[n, *parameter.shape]}, the gradient of each example's own loss, for
    the parameters selected by `layers` (module-name prefixes; None = all trainable). The model is
    used as it is: put it in eval mode first if it has BatchNorm or dropout. conv_method: how conv
    weight gradients are formed ("auto", "grouped" or "patches"; see tracin.engine.layers.conv_grad_method)."""
    if conv_method not in CONV_METHODS:
        raise TracinError(f"conv_method must be one of {', '.join(CONV_METHODS)}, got {conv_method!r}")
    _, grads = settle_targets(model, select_targets(model, layers), inputs, labels, as_objective(loss_fn), conv_method)
    return grads

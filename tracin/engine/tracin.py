"""TracInCP: influence(z_train, z_test) = sum_c lr_c * <grad l(w_c, z_train), grad l(w_c, z_test)>.

The loop is arranged so that every example's gradient is computed once per checkpoint:

    for each block of test examples (one block unless memory forbids):
        test features at every checkpoint, computed once and kept
        for each chunk of train rows:
            for each checkpoint c: train features at c (then dropped); block += lr_c * train . test
            yield the block                                   (scores, top-k, HDF5 rows consume it)

Checkpoint states live in memory on the device, so switching checkpoint is a copy, not a file read.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from tracin.training import losses
from tracin.training.checkpoints import Checkpoint, fit_state, load_state, resolve_checkpoints
from tracin.config import MODES, PRECISIONS
from tracin.training.data import Split, normalize
from tracin.errors import NonFiniteError, TracinError
from tracin.engine.features import Features
from tracin.engine.plans import FACTORED, REPRESENTATIONS, LayerPlan, LayerShape, compute_features, make_plans, probe_shape
from tracin.engine.grads import LossFn, cross_entropy_loss, last_linear_target, record_output_grads, select_targets, settle_targets
from tracin.engine.topk import Ranking, StreamingRanking

DEFAULT_MAX_MEMORY = 2 * 2**30  # bytes for kept features and score blocks


class _Source:
    """Uniform slicing of a Split, an (inputs, labels) pair of tensors, or any map-style Dataset."""

    def __init__(self, data: Any, name: str):
        if isinstance(data, Split):
            self.n, self._get = len(data), lambda a, b: (normalize(data.images[a:b], data.spec), data.labels[a:b])
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
            inputs, labels = data
            if len(inputs) != len(labels):
                raise TracinError(f"{name} data: {len(inputs)} inputs but {len(labels)} labels")
            self.n, self._get = len(inputs), lambda a, b: (inputs[a:b], labels[a:b])
        elif isinstance(data, Dataset):
            self.n, self._get = len(data), lambda a, b: tuple(default_collate([data[i] for i in range(a, b)])[:2])
        else:
            raise TracinError(f"{name} data must be a Dataset or an (inputs, labels) pair, got {type(data).__name__}")
        if self.n == 0:
            raise TracinError(f"{name} data is empty")

    def get(self, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor]:
        inputs, labels = self._get(start, stop)
        return inputs.to(device=device, dtype=torch.float32), labels.to(device)


@dataclass
class ScoreBlock:
    """Scores of train rows [row_start, row_stop) against test columns [col_start, col_stop).

    scores: Tensor[rows, cols] float32, lr-weighted sum over checkpoints; per_checkpoint: Tensor[n_ckpt,
    rows, cols], each checkpoint's lr-weighted term (when asked for), summing to `scores`;
    self_influence: Tensor[rows], sum_c lr_c |g_c|^2 from the same train features (first test block only).
    """

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int
    scores: Tensor
    per_checkpoint: Optional[Tensor] = None
    self_influence: Optional[Tensor] = None


@dataclass
class TopK:
    """test: per test example, its k strongest proponents (top) and opponents (bottom) among the
    train examples; train: per train example, the k test examples it raises most (top) and lowers
    most (bottom). Indices are positions in the data given."""

    test: Ranking
    train: Ranking


@contextmanager
def _matmul_precision(precision: str):
    """Exact TracIn needs full float32, but cuDNN convolutions default to TF32 on Ampere and later:
    TF32 is on only for precision "tf32". bf16 products must still reduce in float32 inside cuBLAS."""
    cuda = torch.backends.cuda.matmul
    saved = (cuda.allow_tf32, torch.backends.cudnn.allow_tf32, cuda.allow_bf16_reduced_precision_reduction)
    cuda.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    cuda.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        cuda.allow_tf32, torch.backends.cudnn.allow_tf32, cuda.allow_bf16_reduced_precision_reduction = saved


def _kd_loss(teacher: nn.Module, temperature: float, alpha: float, kind: str) -> LossFn:
    def loss_fn(logits: Tensor, labels: Tensor, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = teacher(inputs)
        return losses.distillation(logits, teacher_logits, labels, temperature, alpha, kind)

    return loss_fn


class _GraphedBatch:
    """The features of one full train batch as a CUDA graph, captured once and replayed for every full
    batch at every checkpoint (load_state_dict copies weights in place, so replays read the loaded
    checkpoint). At small widths the step is ~300 small kernels whose launches, not their work, set the
    time. The returned features live in the graph's memory: the next replay overwrites them."""

    def __init__(self, featurize: Callable[[Tensor, Tensor], Features], inputs: Tensor, labels: Tensor):
        self.inputs, self.labels = inputs.clone(), labels.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # cuBLAS/cuDNN handles, workspaces and autograd state exist before capture
                featurize(self.inputs, self.labels)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(self.graph):
                self.features = featurize(self.inputs, self.labels)
        except RuntimeError as error:
            raise TracinError(
                f"the model's gradient step cannot be captured as a CUDA graph ({str(error).splitlines()[0]}); "
                "pass cuda_graphs=False (tracin-score --no-cuda-graphs)"
            ) from None

    def __call__(self, inputs: Tensor, labels: Tensor) -> Features:
        self.inputs.copy_(inputs)
        self.labels.copy_(labels)
        self.graph.replay()
        return self.features


class TracIn:
    """Batched per-sample-gradient TracInCP.

    model: any nn.Module (copied; the copy is put in eval mode); checkpoints: paths (tracin-train's, or
    another trainer's layout: see resolve_checkpoints; lr read from the file), (path, lr) or
    (state_dict, lr) pairs, or Checkpoint objects (checkpoints_from_loader: any layout, captum-style).
    layers: module-name prefixes selecting parameters (None = every trainable parameter).
    mode: "exact" | "projected" (needs proj_dim: per-layer projection size) | "last-layer" (weight of
    the final nn.Linear, as captum's TracInCPFast). loss: "ce" (per-example cross-entropy) or "kd"
    (the distillation loss against `teacher`, an nn.Module). batch_size: examples per forward/backward;
    max_memory: bytes for kept features and score blocks (sets the chunking unless chunk_size/test_block
    are given). representation: "auto" (cost model), "flat" or "factored" for exact Linear/Conv2d layers.
    precision of the train x test inner products: "float32" (default; exact), "tf32" (CUDA matrix
    products and convolutions) or "bf16" (kept test features and each product in bfloat16, with float32
    accumulation; ~1e-3 relative to the largest score; self-influence stays float32). cuda_graphs: on
    CUDA, replay full train batches as one captured CUDA graph (same kernels, no launch overhead).
    """

    def __init__(
        self,
        model: nn.Module,
        checkpoints: Sequence[Any],
        layers: Optional[Sequence[str]] = None,
        mode: str = "exact",
        proj_dim: Optional[int] = None,
        device: Optional[torch.device | str] = None,
        seed: int = 0,
        loss: str = "ce",
        teacher: Optional[nn.Module] = None,
        temperature: float = 4.0,
        alpha: float = 0.7,
        kd_loss: str = "kl",
        batch_size: int = 128,
        max_memory: int = DEFAULT_MAX_MEMORY,
        chunk_size: Optional[int] = None,
        test_block: Optional[int] = None,
        representation: str = "auto",
        precision: str = "float32",
        cuda_graphs: bool = True,
        progress: bool = False,
    ):
        _validate(mode, proj_dim, representation, loss, teacher, batch_size)
        self.mode, self.proj_dim, self.seed, self.representation = mode, proj_dim, seed, representation
        self.batch_size, self.max_memory, self.progress = batch_size, max_memory, progress
        self.chunk_size, self.test_block = chunk_size, test_block
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        _validate_precision(precision, self.device)
        self.precision = precision
        self.checkpoints: list[Checkpoint] = resolve_checkpoints(checkpoints)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self._states = [self._checked_state(c) for c in self.checkpoints]
        self._loaded: Optional[int] = None
        self.targets = [last_linear_target(self.model)] if mode == "last-layer" else select_targets(self.model, layers)
        self.model.requires_grad_(False)  # see _record in tracin.engine.grads: only layer outputs need gradients
        self.loss_fn: LossFn = cross_entropy_loss
        if loss == "kd":
            teacher = copy.deepcopy(teacher).to(self.device).eval()
            self.loss_fn = _kd_loss(teacher, temperature, alpha, kd_loss)
        self._shapes: Optional[list[LayerShape]] = None
        self._plans: dict[tuple[int, int, bool], list[LayerPlan]] = {}
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[int, _GraphedBatch] = {}

    # --- set-up ------------------------------------------------------------------------------------

    def _checked_state(self, checkpoint: Checkpoint) -> dict[str, Tensor]:
        state = fit_state(self.model, {k: v.to(self.device) for k, v in checkpoint.state.items()})
        load_state(self.model, state, source=f"checkpoint {checkpoint.path or '(in memory)'}")
        return state

    @property
    def feature_dtype(self) -> torch.dtype:
        """The dtype kept test features and train-by-test products use."""
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    @property
    def parameter_names(self) -> list[str]:
        return [name for target in self.targets for name in target.param_names]

    @property
    def lrs(self) -> list[float]:
        return [c.lr for c in self.checkpoints]

    def _load(self, index: int) -> None:
        if self._loaded != index:
            self.model.load_state_dict(self._states[index])
            self._loaded = index

    def _layer_shapes(self, source: _Source) -> list[LayerShape]:
        if self._shapes is None:
            self._load(0)
            inputs, labels = source.get(0, min(2, source.n), self.device)
            self.targets, _ = settle_targets(self.model, self.targets, inputs, labels, self.loss_fn)
            calls = record_output_grads(self.model, self.targets, inputs, labels, self.loss_fn)
            self._shapes = [probe_shape(t, c) for t, c in zip(self.targets, calls)]
        return self._shapes

    def plans(self, source: _Source, n_rows: int, n_cols: int, self_only: bool = False) -> list[LayerPlan]:
        """Per-layer plans for an n_rows x n_cols problem, made once (projection matrices included)."""
        key = (n_rows, n_cols, self_only)
        if key not in self._plans:
            self._plans[key] = self._make_plans(source, n_rows, n_cols, self_only)
        return self._plans[key]

    def _make_plans(self, source: _Source, n_rows: int, n_cols: int, self_only: bool) -> list[LayerPlan]:
        proj_dim = self.proj_dim if self.mode == "projected" else None
        shapes = self._layer_shapes(source)  # settles self.targets first
        return make_plans(
            self.targets,
            shapes,
            n_rows,
            n_cols,
            proj_dim=proj_dim,
            seed=self.seed,
            representation=self.representation,
            self_only=self_only,
            device=self.device,
        )

    # --- features ----------------------------------------------------------------------------------

    def _featurize(self, plans: list[LayerPlan], inputs: Tensor, labels: Tensor) -> Features:
        calls = record_output_grads(self.model, self.targets, inputs, labels, self.loss_fn, check_finite=False)
        return compute_features(plans, calls)

    def _batch_features(self, plans: list[LayerPlan], source: _Source, start: int, stop: int, checkpoint: int, replay: bool = False):
        """(first example, Features of one batch) for examples [start, stop) at one checkpoint. With
        replay (for callers that use each batch's features before asking for the next), full batches
        on CUDA come from a captured graph."""
        self._load(checkpoint)
        for first in range(start, stop, self.batch_size):
            inputs, labels = source.get(first, min(first + self.batch_size, stop), self.device)
            if replay and self.cuda_graphs and len(inputs) == self.batch_size:
                yield first, self._graphed(plans, inputs, labels)(inputs, labels)
            else:
                yield first, self._featurize(plans, inputs, labels)

    def _graphed(self, plans: list[LayerPlan], inputs: Tensor, labels: Tensor) -> _GraphedBatch:
        if id(plans) not in self._graphs:  # plans are made once per problem shape and kept
            self._graphs[id(plans)] = _GraphedBatch(lambda x, y: self._featurize(plans, x, y), inputs, labels)
        return self._graphs[id(plans)]

    def _features(self, plans: list[LayerPlan], source: _Source, start: int, stop: int, checkpoint: int) -> Features:
        """Features of examples [start, stop) at one checkpoint, kept (the test side) in feature_dtype."""
        batches = self._batch_features(plans, source, start, stop, checkpoint)
        return Features.cat([f.kept_as(self.feature_dtype) for _, f in batches])

    def _check_finite(self, values: Tensor, checkpoint: int, what: str) -> None:
        """Non-finite gradients make their inner products non-finite (inf * 0 is nan), and so every sum
        they join: checking the sums once per checkpoint catches them without a pass over the features,
        and without waiting for the device after every batch."""
        if not torch.isfinite(values).all():
            path = self.checkpoints[checkpoint].path or f"checkpoint {checkpoint}"
            raise NonFiniteError(f"non-finite gradients at {path} ({what})")

    def block_sizes(self, train: Any, test: Any, per_checkpoint: bool = False) -> tuple[int, int]:
        """(train rows per chunk, test examples per block) that keep features and score blocks within
        max_memory; explicit chunk_size/test_block win."""
        train_source, test_source = _Source(train, "train"), _Source(test, "test")
        plans = self.plans(train_source, train_source.n, test_source.n)
        flat_bytes = self.feature_dtype.itemsize  # factored layers stay float32
        per_example = sum(
            p.feature_dim(s) * (4 if p.representation == FACTORED else flat_bytes)
            for p, s in zip(plans, self._layer_shapes(train_source))
        )
        n_ckpt = len(self.checkpoints)
        half = self.max_memory // 2
        block = self.test_block or min(test_source.n, max(1, half // (per_example * n_ckpt)))
        score_bytes = 4 * block * (n_ckpt + 1 if per_checkpoint else 2)
        chunk = self.chunk_size or min(train_source.n, max(1, half // (per_example + score_bytes)))
        return chunk, block

    # --- scores ------------------------------------------------------------------------------------

    def iter_blocks(
        self,
        train: Any,
        test: Any,
        per_checkpoint: bool = False,
        skip: Optional[Callable[[int, int, int, int], bool]] = None,
        self_influence: bool = False,
    ) -> Iterator[ScoreBlock]:
        """Score blocks covering the n_train x n_test matrix, in row-chunk order within test blocks.
        `skip(row_start, row_stop, col_start, col_stop)` True leaves a block out (resume);
        `self_influence` adds each chunk's self-influence to its blocks of the first test block."""
        train_source, test_source = _Source(train, "train"), _Source(test, "test")
        chunk, block = self.block_sizes(train, test, per_checkpoint)
        plans = self.plans(train_source, train_source.n, test_source.n)
        grid = [
            [(r, min(r + chunk, train_source.n)) for r in range(0, train_source.n, chunk)]
            for _ in range(0, test_source.n, block)
        ]
        todo = [
            [(r0, r1) for r0, r1 in rows if not (skip and skip(r0, r1, b * block, min((b + 1) * block, test_source.n)))]
            for b, rows in enumerate(grid)
        ]
        bar = tqdm(total=sum(map(len, todo)), desc="TracIn", unit="chunk", disable=not self.progress)
        with _matmul_precision(self.precision), bar:
            for b, rows in enumerate(todo):
                if not rows:
                    continue
                c0, c1 = b * block, min((b + 1) * block, test_source.n)
                test_features = [self._features(plans, test_source, c0, c1, c) for c in range(len(self.checkpoints))]
                for r0, r1 in rows:
                    with_self = self_influence and c0 == 0
                    yield self._score_block(plans, train_source, (r0, r1, c0, c1), test_features, per_checkpoint, with_self)
                    bar.update(1)

    def _score_block(self, plans, source, bounds, test_features, per_checkpoint, with_self) -> ScoreBlock:
        """Train rows r0..r1 against kept test features: each train batch's gradients are used for their
        inner products at once and dropped, so no chunk-sized gradient matrix is ever formed. Only with
        per_checkpoint is a [n_ckpt, rows, cols] block kept (block_sizes budgets for it)."""
        r0, r1, c0, c1 = bounds
        n_ckpt = len(self.checkpoints) if per_checkpoint else 1
        terms = torch.zeros(n_ckpt, r1 - r0, c1 - c0, device=self.device)
        self_influence = torch.zeros(r1 - r0, device=self.device) if with_self else None
        for c, checkpoint in enumerate(self.checkpoints):
            term = terms[c if per_checkpoint else 0]
            for first, features in self._batch_features(plans, source, r0, r1, c, replay=True):
                rows = slice(first - r0, first - r0 + len(features))
                term[rows].add_(features.dot(test_features[c]), alpha=checkpoint.lr)
                if self_influence is not None:
                    self_influence[rows] += checkpoint.lr * features.self_dot()
            self._check_finite(term, c, f"train {r0}..{r1 - 1}, test {c0}..{c1 - 1}")
            if self_influence is not None:
                self._check_finite(self_influence, c, f"self-influence of train {r0}..{r1 - 1}")
        total = terms.sum(0) if per_checkpoint else terms[0]
        return ScoreBlock(r0, r1, c0, c1, total, terms if per_checkpoint else None, self_influence)

    def scores(self, train: Any, test: Any) -> Tensor:
        """Tensor[n_train, n_test] float32 on the CPU: lr-weighted sum over checkpoints of gradient
        inner products."""
        n_train, n_test = _Source(train, "train").n, _Source(test, "test").n
        out = torch.empty(n_train, n_test)
        for block in self.iter_blocks(train, test):
            out[block.row_start : block.row_stop, block.col_start : block.col_stop] = block.scores.cpu()
        return out

    def self_influence(self, train: Any) -> Tensor:
        """Tensor[n_train] float32 on the CPU: sum_c lr_c * |grad l(w_c, z)|^2, the TracIn
        self-influence used to find mislabelled examples."""
        source = _Source(train, "train")
        plans = self.plans(source, source.n, 1, self_only=True)
        out = torch.zeros(source.n, device=self.device)
        with _matmul_precision(self.precision):
            for c, checkpoint in enumerate(tqdm(self.checkpoints, desc="self-influence", disable=not self.progress)):
                for first, features in self._batch_features(plans, source, 0, source.n, c, replay=True):
                    norms = features.self_dot()
                    out[first : first + len(norms)] += checkpoint.lr * norms
                self._check_finite(out, c, "self-influence")
        return out.cpu()

    @torch.no_grad()
    def losses(self, data: Any, checkpoint: int = -1) -> Tensor:
        """Tensor[n] float32 on the CPU: each example's loss (the scored loss) at one checkpoint (default:
        the last), e.g. the training-loss baseline of mislabel detection."""
        source = _Source(data, "data")
        self._load(range(len(self.checkpoints))[checkpoint])
        out = []
        for first in range(0, source.n, self.batch_size):
            inputs, labels = source.get(first, min(first + self.batch_size, source.n), self.device)
            out.append(self.loss_fn(self.model(inputs), labels, inputs).cpu())
        return torch.cat(out)

    def top_k(self, train: Any, test: Any, k: int) -> TopK:
        """Proponents and opponents of each test example and the most-influenced test examples of each
        train example, streamed from score blocks: the full matrix is never held."""
        n_train, n_test = _Source(train, "train").n, _Source(test, "test").n
        if not 1 <= k <= min(n_train, n_test):
            raise TracinError(f"k must be between 1 and min(n_train, n_test) = {min(n_train, n_test)}, got {k}")
        per_test = StreamingRanking(n_test, k, self.device)
        per_train = StreamingRanking(n_train, k, self.device)
        for block in self.iter_blocks(train, test):
            per_train.update(block.row_start, block.scores, block.col_start)
            per_test.update(block.col_start, block.scores.T, block.row_start)
        return TopK(test=per_test.result(), train=per_train.result())


def _validate(mode: str, proj_dim, representation: str, loss: str, teacher, batch_size: int) -> None:
    if mode not in MODES:
        raise TracinError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "projected" and (proj_dim is None or proj_dim < 1):
        raise TracinError("projected mode needs a positive proj_dim")
    if representation not in REPRESENTATIONS:
        raise TracinError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got {representation!r}")
    if loss not in ("ce", "kd"):
        raise TracinError(f"loss must be 'ce' or 'kd', got {loss!r}")
    if loss == "kd" and teacher is None:
        raise TracinError("loss='kd' scores a student with its distillation objective and needs the teacher")
    if batch_size < 1:
        raise TracinError(f"batch_size must be positive, got {batch_size}")


def _validate_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS:
        raise TracinError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and device.type != "cuda":
        raise TracinError(f"precision 'tf32' is a CUDA mode; on {device.type} use 'float32' or 'bf16'")

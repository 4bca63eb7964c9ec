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
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tracin.config import EngineConfig, ScoreConfig, split_variant
from tracin.engine import blocks
from tracin.engine.blocks import DataSource, GraphedBatch
from tracin.engine.features import Features
from tracin.engine.grads import last_linear_target, record_output_grads, select_targets, settle_targets
from tracin.engine.groups import expand_variants, group_names, part_groups
from tracin.engine.plans import FACTORED, LayerPlan, LayerShape, compute_features, make_plans, probe_shape
from tracin.engine.projection import check_projector
from tracin.engine.topk import SIDES, StreamingRanking, TopK
from tracin.errors import NonFiniteError, TracinError
from tracin.training.checkpoints import Checkpoint, fit_state, load_state, resolve_checkpoints
from tracin.training.losses import CrossEntropy, Objective, TrainTest, as_objective
from tracin.variants import ScoreVariant, score_variant


@dataclass
class ScoreBlock:
    """Scores of train rows [row_start, row_stop) against test columns [col_start, col_stop).

    scores: Tensor[rows, cols] float32, lr-weighted sum over checkpoints, of the first of the config's
    variants; per_checkpoint: Tensor[n_ckpt, rows, cols], each checkpoint's lr-weighted term of that variant
    (when asked for), summing to `scores`; self_influence: Tensor[rows], sum_c lr_c |g_c|^2 from the same
    train features (first test block only); normalised_self_influence: Tensor[rows], sum_c lr_c |g_c|, the
    self-influence of the train-normalised variant <g/|g|, g> (with self_influence); group_self_influence:
    Tensor[n_groups, rows], each layer group's part of self_influence (TracIn.group_names), the raw@GROUP
    variants' self-influence; group_normalised_self_influence: Tensor[n_groups, rows], sum_c lr_c |g_c,group|,
    the train-normalised@GROUP variants'; by_variant: {variant: Tensor[rows, cols]} for every variant
    (TracIn.variants). (The cosine variant's self-influence is sum_c lr_c for every example: no ranking.)
    """

    row_start: int
    row_stop: int
    col_start: int
    col_stop: int
    scores: Tensor
    per_checkpoint: Optional[Tensor] = None
    self_influence: Optional[Tensor] = None
    by_variant: dict[str, Tensor] = field(default_factory=dict)
    normalised_self_influence: Optional[Tensor] = None
    group_self_influence: Optional[Tensor] = None
    group_normalised_self_influence: Optional[Tensor] = None


@dataclass
class _SelfInfluence:
    """A chunk's self-influence sums, accumulated batch by batch (see ScoreBlock)."""

    raw: Tensor
    normalised: Tensor
    groups: Tensor
    normalised_groups: Tensor

    @classmethod
    def zeros(cls, rows: int, n_groups: int, device: torch.device) -> "_SelfInfluence":
        return cls(
            *(torch.zeros(*shape, device=device) for shape in ((rows,), (rows,), (n_groups, rows), (n_groups, rows)))
        )

    def add(self, rows: slice, group_squared: Tensor, lr: float) -> None:
        """group_squared: Tensor[n_groups, b] float32, each group's part of a batch's squared norms."""
        squared = group_squared.sum(0)
        self.raw[rows] += lr * squared
        self.normalised[rows] += lr * squared.clamp_min(0).sqrt()
        self.groups[:, rows] += lr * group_squared
        self.normalised_groups[:, rows] += lr * group_squared.clamp_min(0).sqrt()

    def fields(self) -> dict[str, Tensor]:
        """The sums as ScoreBlock's fields."""
        return {
            "self_influence": self.raw,
            "normalised_self_influence": self.normalised,
            "group_self_influence": self.groups,
            "group_normalised_self_influence": self.normalised_groups,
        }


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


class TracIn:
    """Batched per-sample-gradient TracInCP.

    model: any nn.Module (copied; the copy is put in eval mode). checkpoints: a folder, a glob pattern or a
    list of paths (tracin-train's, or another trainer's layout: see resolve_checkpoints; lr read from the
    file), (path, lr) or (state_dict, lr) pairs, or Checkpoint objects (load_checkpoints(..., prefix=) for
    one model of a multi-model checkpoint; checkpoints_from_loader: any layout, captum-style).
    config: what to compute (ScoreConfig: mode, layers, projection, precision). loss: the per-example
    loss, `loss(logits, labels) -> Tensor[n]` (any torch loss with reduction="none") or `loss(logits,
    labels, inputs) -> Tensor[n]` (tracin.training.losses.CrossEntropy, or Distillation(teacher, T, alpha,
    ...) for a student scored with its own objective; objects with a `to(device)` method are moved with the
    model); or TrainTest(train=..., test=...), two of these: the train examples' gradients of one, the test
    examples' of the other (a student's distillation objective, and cross-entropy on the test label).
    engine: how to run (EngineConfig: batch, memory, representation, CUDA graphs, progress).
    device: default CUDA when available.

    Data (train, test) is a pair of tensors (inputs, labels), a map-style Dataset or a DataLoader over one;
    rows are positions in it. Scores come oriented by name: `scores_train_by_test` is Tensor[n_train,
    n_test], `scores_test_by_train` (captum's orientation) Tensor[n_test, n_train].

    The configuration never changes after construction; what is worked out from the first data seen
    (the settled layer targets, per-layer plans, captured CUDA graphs) is cached on the instance.

    Precision "bf16" keeps test features and each product in bfloat16 with float32 accumulation (~1e-3
    relative to the largest score; self-influence stays float32); "tf32" is a CUDA mode.
    """

    def __init__(
        self,
        model: nn.Module,
        checkpoints: Any,
        config: ScoreConfig = ScoreConfig(),
        loss: Objective | TrainTest = CrossEntropy(),
        engine: EngineConfig = EngineConfig(),
        device: Optional[torch.device | str] = None,
    ):
        self.config, self.engine = config, engine
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        _validate_precision(config.precision, self.device)
        check_projector(config.projector)
        self.checkpoints: list[Checkpoint] = resolve_checkpoints(checkpoints)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self._states = [self._checked_state(c) for c in self.checkpoints]
        self._loaded: Optional[int] = None
        last_layer = config.mode == "last-layer"
        self._targets = (
            [last_linear_target(self.model)] if last_layer else select_targets(self.model, config.layers or None)
        )
        self.model.requires_grad_(False)  # see _record in tracin.engine.grads: only layer outputs need gradients
        moved = lambda objective: objective.to(self.device) if hasattr(objective, "to") else objective  # noqa: E731
        if isinstance(loss, TrainTest):
            self.loss_fn, self.test_loss_fn = moved(as_objective(loss.train)), moved(as_objective(loss.test))
        else:  # one objective on both sides (one copy of a distillation teacher)
            self.loss_fn = self.test_loss_fn = moved(as_objective(loss))
        self._shapes: Optional[list[LayerShape]] = None
        self._plans: dict[tuple[int, int, bool], list[LayerPlan]] = {}
        self.cuda_graphs = engine.cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[int, GraphedBatch] = {}

    # --- set-up ------------------------------------------------------------------------------------

    def _checked_state(self, checkpoint: Checkpoint) -> dict[str, Tensor]:
        state = fit_state(self.model, {k: v.to(self.device) for k, v in checkpoint.state.items()})
        load_state(self.model, state, source=f"checkpoint {checkpoint.path or '(in memory)'}")
        return state

    @property
    def feature_dtype(self) -> torch.dtype:
        """The dtype kept test features and train-by-test products use."""
        return torch.bfloat16 if self.config.precision == "bf16" else torch.float32

    @property
    def variants(self) -> list[str]:
        """The score variants computed, the first in `scores`: the config's, with `VARIANT@*` written out
        for every layer group (a group the scored parameters lack is a TracinError)."""
        return expand_variants(self.config.variants, self.group_names)

    @property
    def normalised(self) -> bool:
        """Whether a score variant divides by gradient norms (the norms are then kept with the features)."""
        return any(score_variant(split_variant(v)[0]).normalised for v in self.config.variants)

    @property
    def parameter_names(self) -> list[str]:
        return [name for target in self._targets for name in target.param_names]

    @property
    def group_names(self) -> list[str]:
        """The layer groups of the scored parameters (tracin.engine.groups: stem, layer1, ..., head, or the
        config's named groups)."""
        return group_names([target.name for target in self._targets], self.config.groups)

    @property
    def lrs(self) -> list[float]:
        return [c.lr for c in self.checkpoints]

    def _load(self, index: int) -> None:
        if self._loaded != index:
            self.model.load_state_dict(self._states[index])
            self._loaded = index

    def _layer_shapes(self, source: DataSource) -> list[LayerShape]:
        if self._shapes is None:
            self._load(0)
            inputs, labels = source.get(0, min(2, source.n), self.device)
            try:
                self._targets, _ = settle_targets(self.model, self._targets, inputs, labels, self.loss_fn)
                calls = record_output_grads(self.model, self._targets, inputs, labels, self.loss_fn)
            except NonFiniteError as error:  # name the checkpoint, as the scoring's own check does
                raise NonFiniteError(f"{error} at {self.checkpoints[0].path or 'checkpoint 0'}") from None
            self._shapes = [probe_shape(t, c) for t, c in zip(self._targets, calls)]
        return self._shapes

    def plans(self, source: DataSource, n_rows: int, n_cols: int, self_only: bool = False) -> list[LayerPlan]:
        """Per-layer plans for an n_rows x n_cols problem, made once (projection matrices included)."""
        key = (n_rows, n_cols, self_only)
        if key not in self._plans:
            self._plans[key] = self._make_plans(source, n_rows, n_cols, self_only)
        return self._plans[key]

    def _make_plans(self, source: DataSource, n_rows: int, n_cols: int, self_only: bool) -> list[LayerPlan]:
        config = self.config
        shapes = self._layer_shapes(source)  # settles self._targets first
        return make_plans(
            self._targets,
            shapes,
            n_rows,
            n_cols,
            proj_dim=config.proj_dim if config.mode == "projected" else None,
            projector=config.projector,
            seed=config.seed,
            representation=self.engine.representation,
            self_only=self_only,
            device=self.device,
        )

    # --- features ----------------------------------------------------------------------------------

    def _featurize(self, plans: list[LayerPlan], inputs: Tensor, labels: Tensor, test: bool = False) -> Features:
        """Features of one batch, from the gradients of the train side's loss (test: the test side's)."""
        loss_fn = self.test_loss_fn if test else self.loss_fn
        calls = record_output_grads(self.model, self._targets, inputs, labels, loss_fn, check_finite=False)
        return compute_features(plans, calls)

    def _batch_features(
        self,
        plans: list[LayerPlan],
        source: DataSource,
        start: int,
        stop: int,
        checkpoint: int,
        replay: bool = False,
        test: bool = False,
    ):
        """(first example, Features of one batch) for examples [start, stop) at one checkpoint, by the train
        side's loss (test: the test side's). With replay (the train side, whose callers use each batch's
        features before asking for the next), full batches on CUDA come from a captured graph."""
        self._load(checkpoint)
        for first in range(start, stop, self.engine.batch_size):
            inputs, labels = source.get(first, min(first + self.engine.batch_size, stop), self.device)
            if replay and not test and self.cuda_graphs and len(inputs) == self.engine.batch_size:
                yield first, self._graphed(plans, inputs, labels)(inputs, labels)
            else:
                yield first, self._featurize(plans, inputs, labels, test)

    def _graphed(self, plans: list[LayerPlan], inputs: Tensor, labels: Tensor) -> GraphedBatch:
        if id(plans) not in self._graphs:  # plans are made once per problem shape and kept
            self._graphs[id(plans)] = GraphedBatch(lambda x, y: self._featurize(plans, x, y), inputs, labels)
        return self._graphs[id(plans)]

    def _features(self, plans: list[LayerPlan], source: DataSource, start: int, stop: int, checkpoint: int) -> Features:
        """Features of the test examples [start, stop) at one checkpoint, by the test side's loss, kept in
        feature_dtype."""
        batches = self._batch_features(plans, source, start, stop, checkpoint, test=True)
        kept = ((first, f.kept_as(self.feature_dtype, norms=self.normalised)) for first, f in batches)
        return Features.gather(kept, start, stop - start)

    def _check_finite(self, values: Tensor, checkpoint: int, what: str) -> None:
        """Non-finite gradients make their inner products non-finite (inf * 0 is nan), and so every sum
        they join: checking the sums once per checkpoint catches them without a pass over the features,
        and without waiting for the device after every batch."""
        if not torch.isfinite(values).all():
            path = self.checkpoints[checkpoint].path or f"checkpoint {checkpoint}"
            raise NonFiniteError(f"non-finite gradients at {path} ({what})")

    def block_sizes(self, train: Any, test: Any, per_checkpoint: bool = False) -> tuple[int, int]:
        """(train rows per chunk, test examples per block) that keep features and score blocks within
        engine.max_memory (tracin.engine.blocks.block_sizes); explicit chunk_size/test_block win."""
        plan = self.memory_plan(train, test, per_checkpoint)
        return plan.chunk, plan.block

    def memory_plan(self, train: Any, test: Any, per_checkpoint: bool = False) -> blocks.MemoryPlan:
        """The blocking block_sizes returns, with the budget it came from (engine.max_memory, or with None
        the memory free now: tracin.engine.blocks.auto_memory) and the test features a block keeps."""
        train_source, test_source = DataSource(train, "train"), DataSource(test, "test")
        plans = self.plans(train_source, train_source.n, test_source.n)
        flat_bytes = self.feature_dtype.itemsize  # factored layers stay float32
        per_example = sum(
            p.feature_dim(s) * (4 if p.representation == FACTORED else flat_bytes)
            for p, s in zip(plans, self._layer_shapes(train_source))
        )
        engine = self.engine
        budget, source = (
            (engine.max_memory, "--max-memory-gb") if engine.max_memory else blocks.auto_memory(self.device)
        )
        chunk, block = blocks.block_sizes(
            per_example,
            train_source.n,
            test_source.n,
            len(self.checkpoints),
            budget,
            per_checkpoint,
            engine.chunk_size,
            engine.test_block,
            len(self.variants),
        )
        return blocks.MemoryPlan(budget, source, chunk, block, per_example * len(self.checkpoints) * block)

    # --- scores ------------------------------------------------------------------------------------

    def iter_blocks(
        self,
        train: Any,
        test: Any,
        per_checkpoint: bool = False,
        skip: Optional[Callable[[int, int, int, int], bool]] = None,
        self_influence: bool = False,
        layout: Optional[tuple[int, int]] = None,
    ) -> Iterator[ScoreBlock]:
        """Score blocks covering the n_train x n_test matrix, in row-chunk order within test blocks.
        `skip(row_start, row_stop, col_start, col_stop)` True leaves a block out (resume);
        `self_influence` adds each chunk's self-influence to its blocks of the first test block;
        `layout` (train rows per chunk, test examples per block) replaces block_sizes (a file's own)."""
        train_source, test_source = DataSource(train, "train"), DataSource(test, "test")
        chunk, block = layout or self.block_sizes(train, test, per_checkpoint)
        plans = self.plans(train_source, train_source.n, test_source.n)
        grid = [
            [(r, min(r + chunk, train_source.n)) for r in range(0, train_source.n, chunk)]
            for _ in range(0, test_source.n, block)
        ]
        todo = [
            [(r0, r1) for r0, r1 in rows if not (skip and skip(r0, r1, b * block, min((b + 1) * block, test_source.n)))]
            for b, rows in enumerate(grid)
        ]
        # counted in train-example gradients (one per train example per checkpoint per test block), so that a
        # single large chunk moves too
        bar = tqdm(
            total=sum(r1 - r0 for rows in todo for r0, r1 in rows) * len(self.checkpoints),
            desc="TracIn (train gradients)",
            unit="ex",
            unit_scale=True,
            disable=not self.engine.progress,
        )
        with _matmul_precision(self.config.precision), bar:
            for b, rows in enumerate(todo):
                if not rows:
                    continue
                c0, c1 = b * block, min((b + 1) * block, test_source.n)
                test_features = [self._features(plans, test_source, c0, c1, c) for c in range(len(self.checkpoints))]
                for r0, r1 in rows:
                    with_self = self_influence and c0 == 0
                    yield self._score_block(
                        plans, train_source, (r0, r1, c0, c1), test_features, per_checkpoint, with_self, bar
                    )
                del test_features  # before the next block's are formed: the budget holds one block's, not two

    def _score_block(self, plans, source, bounds, test_features, per_checkpoint, with_self, bar) -> ScoreBlock:
        """Train rows r0..r1 against kept test features: each train batch's gradients are used for their
        inner products at once and dropped, so no chunk-sized gradient matrix is ever formed. Every score
        variant comes from the same inner products and norms. Only with per_checkpoint is a [n_ckpt, rows,
        cols] block kept (block_sizes budgets for it)."""
        r0, r1, c0, c1 = bounds
        variants, n_groups = self.variants, len(self.group_names)
        part_group = part_groups(plans, self.group_names, self.config.groups)
        part_list, part_group = part_group.tolist(), part_group.to(self.device)
        by_variant = {v: torch.zeros(r1 - r0, c1 - c0, device=self.device) for v in variants}
        terms = torch.zeros(len(self.checkpoints), r1 - r0, c1 - c0, device=self.device) if per_checkpoint else None
        sums = _SelfInfluence.zeros(r1 - r0, n_groups, self.device) if with_self else None
        for c, checkpoint in enumerate(self.checkpoints):
            test = _Side.of_test(test_features[c], part_group, n_groups, self.normalised)
            for first, features in self._batch_features(plans, source, r0, r1, c, replay=True):
                rows = slice(first - r0, first - r0 + len(features))
                train = _Side.of_train(features, part_group, n_groups, self.normalised or with_self)
                dots = features.dot_by_group(test.features, part_list, n_groups) if self._split else None
                dot = dots.sum(0) if dots is not None else features.dot(test.features)
                for variant, total in by_variant.items():
                    values = _variant_scores(variant, self.group_names, dot, dots, train, test)
                    total[rows].add_(values, alpha=checkpoint.lr)
                    if terms is not None and variant == variants[0]:  # each checkpoint's term of the first variant
                        terms[c, rows] = checkpoint.lr * values
                if sums is not None:
                    sums.add(rows, train.group_squared, checkpoint.lr)
                bar.update(len(features))
            for values in by_variant.values():
                self._check_finite(values, c, f"train {r0}..{r1 - 1}, test {c0}..{c1 - 1}")
            if sums is not None:
                self._check_finite(sums.raw, c, f"self-influence of train {r0}..{r1 - 1}")
        return ScoreBlock(
            r0, r1, c0, c1, by_variant[variants[0]], terms, by_variant=by_variant, **(sums.fields() if sums else {})
        )

    @property
    def _split(self) -> bool:
        """Whether a variant needs the inner products split by layer group."""
        return any(split_variant(v)[1] is not None for v in self.config.variants)

    def scores_train_by_test(self, train: Any, test: Any) -> Tensor:
        """Tensor[n_train, n_test] float32 on the CPU: lr-weighted sum over checkpoints of gradient
        inner products, as the first of the config's variants scores them (raw by default)."""
        return self.scores(train, test)

    def scores_test_by_train(self, train: Any, test: Any) -> Tensor:
        """Tensor[n_test, n_train] float32 on the CPU: scores_train_by_test transposed (captum's orientation:
        row i holds test example i's influence of every train example)."""
        return self.scores(train, test).T.contiguous()

    def scores(self, train: Any, test: Any) -> Tensor:
        """Tensor[n_train, n_test] float32 on the CPU, the same as scores_train_by_test (whose name says the
        orientation)."""
        n_train, n_test = DataSource(train, "train").n, DataSource(test, "test").n
        out = torch.empty(n_train, n_test)
        for block in self.iter_blocks(train, test):
            out[block.row_start : block.row_stop, block.col_start : block.col_stop] = block.scores.cpu()
        return out

    def scores_by_variant(self, train: Any, test: Any) -> dict[str, Tensor]:
        """{variant: Tensor[n_train, n_test] float32 on the CPU} for every variant of the config, from
        one pass."""
        n_train, n_test = DataSource(train, "train").n, DataSource(test, "test").n
        out = {variant: torch.empty(n_train, n_test) for variant in self.variants}
        for block in self.iter_blocks(train, test):
            for variant, values in block.by_variant.items():
                out[variant][block.row_start : block.row_stop, block.col_start : block.col_stop] = values.cpu()
        return out

    def self_influence(self, train: Any) -> Tensor:
        """Tensor[n_train] float32 on the CPU: sum_c lr_c * |grad l(w_c, z)|^2, the TracIn
        self-influence used to find mislabelled examples."""
        source = DataSource(train, "train")
        plans = self.plans(source, source.n, 1, self_only=True)
        out = torch.zeros(source.n, device=self.device)
        bar = tqdm(
            total=source.n * len(self.checkpoints),
            desc="self-influence (train gradients)",
            unit="ex",
            unit_scale=True,
            disable=not self.engine.progress,
        )
        with _matmul_precision(self.config.precision), bar:
            for c, checkpoint in enumerate(self.checkpoints):
                for first, features in self._batch_features(plans, source, 0, source.n, c, replay=True):
                    norms = features.self_dot()
                    out[first : first + len(norms)] += checkpoint.lr * norms
                    bar.update(len(norms))
                self._check_finite(out, c, "self-influence")
        return out.cpu()

    @torch.no_grad()
    def losses(self, data: Any, checkpoint: int = -1) -> Tensor:
        """Tensor[n] float32 on the CPU: each example's loss (the scored loss) at one checkpoint (default:
        the last), e.g. the training-loss baseline of mislabel detection."""
        source = DataSource(data, "data")
        self._load(range(len(self.checkpoints))[checkpoint])
        out = []
        for first in range(0, source.n, self.engine.batch_size):
            inputs, labels = source.get(first, min(first + self.engine.batch_size, source.n), self.device)
            out.append(self.loss_fn(self.model(inputs), labels, inputs).cpu())
        return torch.cat(out)

    @torch.no_grad()
    def logits(self, data: Any, checkpoint: int = -1) -> Tensor:
        """Tensor[n, classes] float32 on the CPU: the model's outputs at one checkpoint (default: the last)."""
        source = DataSource(data, "data")
        self._load(range(len(self.checkpoints))[checkpoint])
        out = [
            self.model(source.get(first, min(first + self.engine.batch_size, source.n), self.device)[0]).float().cpu()
            for first in range(0, source.n, self.engine.batch_size)
        ]
        return torch.cat(out)

    def top_k(self, train: Any, test: Any, k: int, side: str = "test") -> TopK:
        """The k strongest of each row, by the first of the config's variants, streamed from score blocks
        (the full matrix is never held). side "test": each test example's proponents and opponents among
        the train examples (k <= n_train); "train": each train example's most raised and lowered test
        examples (k <= n_test); "both"."""
        if side not in SIDES:
            raise TracinError(f"side must be one of {', '.join(SIDES)}, got {side!r}")
        n_train, n_test = DataSource(train, "train").n, DataSource(test, "test").n
        limit = {"test": n_train, "train": n_test, "both": min(n_train, n_test)}[side]
        if not 1 <= k <= limit:
            ranked = {"test": "n_train", "train": "n_test", "both": "min(n_train, n_test)"}[side]
            raise TracinError(f"k must be between 1 and {ranked} = {limit} to rank side {side!r}, got {k}")
        per_test = StreamingRanking(n_test, k, self.device) if side != "train" else None
        per_train = StreamingRanking(n_train, k, self.device) if side != "test" else None
        for block in self.iter_blocks(train, test):
            if per_train is not None:
                per_train.update(block.row_start, block.scores, block.col_start)
            if per_test is not None:
                per_test.update(block.col_start, block.scores.T, block.row_start)
        return TopK(
            test=None if per_test is None else per_test.result(),
            train=None if per_train is None else per_train.result(),
        )


@dataclass
class _Side:
    """One side (a train batch or the kept test block) of a checkpoint's products: its features, and
    the inverse norms of its gradients, whole and per layer group (None where no variant needs them).
    group_squared: Tensor[n_groups, n] float32, each group's part of the squared norms."""

    features: Features
    group_squared: Optional[Tensor] = None
    inverse: Optional[Tensor] = None
    inverse_groups: Optional[Tensor] = None

    @classmethod
    def of_test(cls, features: Features, part_group: Tensor, n_groups: int, normalised: bool) -> "_Side":
        if not normalised:
            return cls(features)
        return cls.from_parts(features, features.squared_parts_float32(), part_group, n_groups)

    @classmethod
    def of_train(cls, features: Features, part_group: Tensor, n_groups: int, norms: bool) -> "_Side":
        if not norms:
            return cls(features)
        return cls.from_parts(features, features.self_dot_parts().float(), part_group, n_groups)

    @classmethod
    def from_parts(cls, features: Features, parts: Tensor, part_group: Tensor, n_groups: int) -> "_Side":
        """parts: Tensor[n_parts, n], each layer's part of the squared norms (self_dot_parts order)."""
        group_squared = parts.new_zeros(n_groups, parts.shape[1]).index_add_(0, part_group, parts)
        return cls(features, group_squared, _inverse_norms(group_squared.sum(0)), _inverse_norms(group_squared))


def _variant_scores(
    variant: str, names: Sequence[str], dot: Tensor, dots: Optional[Tensor], train: _Side, test: _Side
) -> Tensor:
    """One checkpoint's Tensor[b, m] of one variant: of all scored parameters, or of one layer group's
    (`VARIANT@GROUP`: that group's products and norms)."""
    base, group = split_variant(variant)
    if group is None:
        return _scaled(score_variant(base), dot, train.inverse, test.inverse)
    index = names.index(group)
    pick = lambda side: None if side.inverse_groups is None else side.inverse_groups[index]
    return _scaled(score_variant(base), dots[index], pick(train), pick(test))


def _inverse_norms(squared_norms: Tensor) -> Tensor:
    """Tensor[...] float32: 1 / |g| from squared norms; 0 where the gradient is zero (it has no direction,
    so its normalised scores are 0, not 0/0)."""
    norms = squared_norms.float().sqrt()
    return torch.where(norms > 0, 1.0 / norms, torch.zeros_like(norms))


def _scaled(
    variant: ScoreVariant, dot: Tensor, inverse_train: Optional[Tensor], inverse_test: Optional[Tensor]
) -> Tensor:
    """One checkpoint's inner products Tensor[b, m] as the variant scores them (tracin.variants): times
    1 / |g_train| per row and 1 / |g_test| per column where it normalises that side."""
    if variant.normalise_train:
        dot = dot * inverse_train[:, None]
    if variant.normalise_test:
        dot = dot * inverse_test[None, :]
    return dot


def _validate_precision(precision: str, device: torch.device) -> None:
    if precision == "tf32" and device.type != "cuda":
        raise TracinError(f"precision 'tf32' is a CUDA mode; on {device.type} use 'float32' or 'bf16'")

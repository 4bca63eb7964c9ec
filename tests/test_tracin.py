"""TracIn engine against independent references: torch.func (float64), captum TracInCP/TracInCPFast."""

import copy
import warnings

import pytest
import scipy.stats
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tracin.config import EngineConfig, ModelConfig, ScoreConfig
from tracin.engine.plans import PROJECTED
from tracin.engine.reference import func_tracin_scores
from tracin.engine.tracin import TracIn
from tracin.errors import CheckpointError, NonFiniteError, TracinError
from tracin.training import losses
from tracin.training.checkpoints import FORMAT, Checkpoint
from tracin.training.losses import CrossEntropy, Distillation, PredictedCrossEntropy, TrainTest
from tracin.training.models import build_model

from conftest import BF16_RTOL, RTOL
from models_for_tests import perturbed_states, relative_error, tiny_resnet

LRS = (0.1, 0.03)


@pytest.fixture(scope="module")
def setup():
    model = tiny_resnet()
    checkpoints = perturbed_states(model, LRS)
    generator = torch.Generator().manual_seed(1)
    train = (torch.randn(24, 1, 10, 10, generator=generator), torch.randint(0, 10, (24,), generator=generator))
    test = (torch.randn(9, 1, 10, 10, generator=generator), torch.randint(0, 10, (9,), generator=generator))
    reference = func_tracin_scores(model, checkpoints, train, test)
    return model, checkpoints, train, test, reference


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device (run by scripts/gpu_check.py too)"
)
def test_cuda_graph_replay_equals_the_reference(setup):
    model, checkpoints, train, test, reference = setup
    engine = TracIn(
        model, checkpoints, engine=EngineConfig(batch_size=5), device="cuda"
    )  # 4 replayed batches, 1 partial, eager
    assert relative_error(engine.scores(train, test), reference) < RTOL
    assert engine._graphs, "no batch was replayed from a CUDA graph"
    diagonal = func_tracin_scores(model, checkpoints, train, train).diagonal()
    assert relative_error(engine.self_influence(train), diagonal) < RTOL


@pytest.mark.parametrize("representation", ["flat", "factored", "auto"])
def test_exact_equals_torch_func_on_every_parameter(setup, representation):
    model, checkpoints, train, test, reference = setup
    tracin = TracIn(model, checkpoints, engine=EngineConfig(representation=representation))
    assert len(tracin.parameter_names) == len(list(model.parameters()))  # BatchNorm included
    assert relative_error(tracin.scores(train, test), reference) < RTOL


def test_bf16_precision_is_close_to_exact_in_half_the_memory(setup):
    model, checkpoints, train, test, reference = setup
    budget = EngineConfig(representation="flat", max_memory=200_000)
    exact, bf16 = (
        TracIn(model, checkpoints, engine=budget),
        TracIn(model, checkpoints, ScoreConfig(precision="bf16"), engine=budget),
    )
    assert bf16.block_sizes(train, test)[1] >= 2 * exact.block_sizes(train, test)[1]  # kept features halve
    error = relative_error(bf16.scores(train, test), reference)
    assert 1e-5 < error < BF16_RTOL  # really bfloat16 products, and still close
    diagonal = func_tracin_scores(model, checkpoints, train, train).diagonal()
    assert relative_error(bf16.self_influence(train), diagonal) < RTOL  # self-influence stays float32


def test_cost_model_mixes_representations_on_a_resnet(setup):
    model, checkpoints, train, test, _ = setup
    tracin = TracIn(model, checkpoints)
    chosen = {plan.representation for plan in tracin.plans(tracin_source(train), 2048, 512)}
    assert chosen == {"flat", "factored"}


def tracin_source(data):
    from tracin.engine.blocks import DataSource

    return DataSource(data, "train")


def test_invariant_to_batch_chunk_and_test_block_sizes(setup):
    model, checkpoints, train, test, reference = setup
    small = TracIn(model, checkpoints, engine=EngineConfig(batch_size=2, chunk_size=5, test_block=4)).scores(
        train, test
    )
    assert relative_error(small, reference) < RTOL
    tight = TracIn(model, checkpoints, engine=EngineConfig(max_memory=100_000))
    chunk, block = tight.block_sizes(train, test)
    assert chunk < len(train[0]) and block < len(test[0])  # the memory bound really splits the work
    assert relative_error(tight.scores(train, test), reference) < RTOL
    too_small = TracIn(model, checkpoints, engine=EngineConfig(max_memory=40_000))
    with pytest.raises(TracinError, match=r"cannot hold one test example.*the minimum is 0\.0835 MiB"):
        too_small.block_sizes(train, test)  # once quietly 1 x 1 blocks, over the budget anyway


def test_auto_memory_is_a_share_of_the_available_ram_split_among_this_machines_processes(setup, monkeypatch):
    from tracin.config import AUTO_MEMORY_SHARE
    from tracin.engine.blocks import auto_memory, available_ram, block_sizes

    ram = available_ram()
    budget, source = auto_memory(torch.device("cpu"))
    assert 0.8 * AUTO_MEMORY_SHARE * ram < budget < 1.2 * AUTO_MEMORY_SHARE * ram  # RAM moves meanwhile
    assert source.startswith("auto: 75% of")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    quarter, source = auto_memory(torch.device("cpu"))
    assert 0.8 * budget / 4 < quarter < 1.2 * budget / 4 and "shared by 4 processes" in source
    model, checkpoints, train, test, _ = setup
    plan = TracIn(model, checkpoints, device="cpu").memory_plan(train, test)  # EngineConfig's default: auto
    assert plan.source.startswith("auto") and 0.8 * quarter < plan.budget < 1.2 * quarter
    fixed = TracIn(model, checkpoints, engine=EngineConfig(max_memory=100_000), device="cpu").memory_plan(train, test)
    per_example = fixed.kept_bytes // (fixed.block * len(checkpoints))
    assert (fixed.chunk, fixed.block) == block_sizes(
        per_example, len(train[0]), len(test[0]), len(checkpoints), 100_000
    )
    assert fixed.source == "--max-memory-gb" and "test block(s) of" in fixed.describe(len(test[0]))


@pytest.mark.parametrize(
    "cgroup,expected",
    [
        (None, 8_000 * 1024),  # no cgroup: MemAvailable
        (
            (
                "0::/job\n",
                "sys/fs/cgroup/job",
                "memory.max",
                "5000000",
                "memory.current",
                "3000000",
                "inactive_file 1000000",
            ),
            3_000_000,
        ),  # v2: limit less usage, page cache not counted
        (
            ("0::/\n", "sys/fs/cgroup", "memory.max", "max", "memory.current", "3000000", "inactive_file 0"),
            8_000 * 1024,
        ),
        (
            (
                "4:memory:/slurm/job\n",
                "sys/fs/cgroup/memory/slurm/job",
                "memory.limit_in_bytes",
                "2000000",
                "memory.usage_in_bytes",
                "1500000",
                "total_inactive_file 500000",
            ),
            1_000_000,
        ),  # v1
    ],
)
def test_available_ram_is_meminfo_within_the_cgroup_limit(tmp_path, cgroup, expected):
    from tracin.engine.blocks import available_ram

    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/meminfo").write_text("MemTotal: 16000 kB\nMemFree: 1000 kB\nMemAvailable: 8000 kB\n")
    if cgroup is not None:
        line, folder, limit_file, limit, usage_file, usage, stat = cgroup
        (tmp_path / "proc/self/cgroup").write_text(line)
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / limit_file).write_text(limit + "\n")
        (tmp_path / folder / usage_file).write_text(usage + "\n")
        (tmp_path / folder / "memory.stat").write_text(f"anon 5\n{stat}\n")
    assert available_ram(tmp_path) == expected


def test_each_example_gradient_is_computed_once_per_checkpoint(setup):
    model, checkpoints, train, test, _ = setup
    tracin = TracIn(
        model, checkpoints, engine=EngineConfig(chunk_size=5, batch_size=4, cuda_graphs=False)
    )  # replays skip Python hooks
    seen = []
    tracin.model.register_forward_hook(lambda module, args, out: seen.append(len(args[0])))
    tracin.scores(train, test)
    # resolve_targets' shape probes (2 and 3 examples, no backward); settle_targets' per-example and batch
    # gradients of the probe batch; the probe of layer shapes
    probe = 2 + 3 + 2 + 2 + 2
    assert sum(seen) == probe + len(checkpoints) * (len(train[0]) + len(test[0]))


def test_self_influence_is_the_diagonal(setup):
    model, checkpoints, train, _, _ = setup
    for representation in ("flat", "factored", "auto"):
        tracin = TracIn(model, checkpoints, engine=EngineConfig(representation=representation))
        diagonal = func_tracin_scores(model, checkpoints, train, train).diagonal()
        assert relative_error(tracin.self_influence(train), diagonal) < RTOL


def test_a_blocks_test_features_are_dropped_before_the_next_blocks_are_formed(setup, monkeypatch):
    """The memory plan holds one test block's kept features: on an H200 the engine held two (the next block's
    were formed while the last block's list was still bound) and peaked at 117 GiB on a 104 GiB plan."""
    import weakref

    model, checkpoints, train, test, reference = setup
    formed, alive = [], []
    features = TracIn._features

    def recorded(self, plans, source, start, stop, checkpoint):
        alive.extend(ref() is not None for first, ref in formed if first != start)
        kept = features(self, plans, source, start, stop, checkpoint)
        formed.append((start, weakref.ref(kept)))
        return kept

    monkeypatch.setattr(TracIn, "_features", recorded)
    scores = TracIn(model, checkpoints, engine=EngineConfig(batch_size=2, test_block=4)).scores(train, test)
    assert (
        len(formed) == 6 and len(alive) == 12 and not any(alive)
    )  # 3 blocks x 2 checkpoints; 2 x 2 + 2 x 4 looks back
    assert relative_error(scores, reference) < RTOL


@pytest.mark.parametrize("representation", ["flat", "factored", "auto"])
def test_block_self_influences_are_the_diagonals_of_raw_and_train_normalised(setup, representation):
    """Each block of the first test block carries sum_c lr_c |g_c|^2, sum_c lr_c |g_c| and each layer
    group's sum_c lr_c |g_c,group|^2: the diagonals of the float64 reference's raw, train-normalised and
    group-restricted train x train scores."""
    model, checkpoints, train, test, _ = setup
    engine = EngineConfig(chunk_size=7, test_block=5, representation=representation)  # part order: flat, then factored
    tracin = TracIn(model, checkpoints, engine=engine)
    raw, normalised = torch.zeros(len(train[0])), torch.zeros(len(train[0]))
    groups = torch.zeros(len(tracin.group_names), len(train[0]))
    normalised_groups = torch.zeros_like(groups)
    for block in tracin.iter_blocks(train, test, self_influence=True):
        if block.col_start == 0:
            raw[block.row_start : block.row_stop] = block.self_influence.cpu()
            normalised[block.row_start : block.row_stop] = block.normalised_self_influence.cpu()
            groups[:, block.row_start : block.row_stop] = block.group_self_influence.cpu()
            normalised_groups[:, block.row_start : block.row_stop] = block.group_normalised_self_influence.cpu()
    assert relative_error(raw, func_tracin_scores(model, checkpoints, train, train).diagonal()) < RTOL
    expected = func_tracin_scores(model, checkpoints, train, train, variant="train-normalised").diagonal()
    assert relative_error(normalised, expected) < RTOL
    # each layer group's part: the reference restricted to that group's parameters (BatchNorm included)
    modules = {"stem": ["conv1", "bn1"], "layer1": ["layer1"], "layer2": ["layer2"], "head": ["fc"]}
    assert tracin.group_names == list(modules)
    for group, prefixes in modules.items():
        expected = func_tracin_scores(model, checkpoints, train, train, layers=prefixes).diagonal()
        assert relative_error(groups[tracin.group_names.index(group)], expected) < RTOL, group
        expected = func_tracin_scores(
            model, checkpoints, train, train, layers=prefixes, variant="train-normalised"
        ).diagonal()
        assert relative_error(normalised_groups[tracin.group_names.index(group)], expected) < RTOL, group


STAGES = {"stem": ["conv1", "bn1"], "layer1": ["layer1"], "layer2": ["layer2"], "head": ["fc"]}  # tiny_resnet's groups


@pytest.mark.parametrize("representation", ["flat", "factored", "auto"])
def test_layer_group_variants_equal_the_reference_restricted_to_the_group(setup, representation):
    """VARIANT@GROUP: the variant computed from one group's parameters alone (their products and their
    norms), BatchNorm included, from the same pass as the variants over every parameter."""
    model, checkpoints, train, test, reference = setup
    config = ScoreConfig(variants=("raw", "raw@*", "cosine@layer1", "train-normalised@stem", "cosine@head"))
    tracin = TracIn(
        model, checkpoints, config, engine=EngineConfig(chunk_size=7, test_block=5, representation=representation)
    )
    assert tracin.variants == [
        "raw",
        *(f"raw@{g}" for g in STAGES),
        "cosine@layer1",
        "train-normalised@stem",
        "cosine@head",
    ]
    scores = tracin.scores_by_variant(train, test)
    assert relative_error(scores["raw"], reference) < RTOL
    for variant in tracin.variants[1:]:
        base, group = variant.split("@")
        expected = func_tracin_scores(model, checkpoints, train, test, layers=STAGES[group], variant=base)
        assert relative_error(scores[variant], expected) < RTOL, variant
    assert (
        relative_error(sum(scores[f"raw@{g}"] for g in STAGES), reference) < RTOL
    )  # the groups partition the parameters


def test_named_layer_groups_and_the_rest(setup):
    """A user's own groups (module-name prefixes); modules in none of them form "other"."""
    model, checkpoints, train, test, _ = setup
    config = ScoreConfig(variants=("train-normalised@*",), groups=(("early", ("conv1", "layer1")),))
    tracin = TracIn(model, checkpoints, config)
    assert tracin.group_names == ["early", "other"]
    scores = tracin.scores_by_variant(train, test)
    for group, layers in (("early", ["conv1", "layer1"]), ("other", ["bn1", "layer2", "fc"])):
        expected = func_tracin_scores(model, checkpoints, train, test, layers=layers, variant="train-normalised")
        assert relative_error(scores[f"train-normalised@{group}"], expected) < RTOL, group


def test_a_variant_of_a_missing_layer_group_is_refused(setup):
    model, checkpoints, train, test, _ = setup
    with pytest.raises(TracinError, match="no layer group 'layer4'; their groups are stem, layer1, layer2, head"):
        TracIn(model, checkpoints, ScoreConfig(variants=("raw", "raw@layer4"))).scores_by_variant(train, test)
    for bad, message in (
        (dict(variants=("raw@la yer",)), "a layer group is named by"),
        (dict(groups=(("other", ("fc",)),)), "'other' is taken"),
        (dict(groups=(("a", ("fc",)), ("a", ("bn1",)))), "layer group 'a' is given twice; name each group once"),
        (dict(groups=(("a", ()),)), "names no module"),
    ):
        with pytest.raises(TracinError, match=message):
            ScoreConfig(**bad)


def test_last_layer_equals_reference_on_the_head_weight(setup):
    model, checkpoints, train, test, _ = setup
    expected = func_tracin_scores(model, checkpoints, train, test, layers=["fc.weight"])
    tracin = TracIn(model, checkpoints, config=ScoreConfig(mode="last-layer"))
    assert tracin.parameter_names == ["fc.weight"]
    assert relative_error(tracin.scores(train, test), expected) < RTOL


def test_layer_selection_equals_reference(setup):
    model, checkpoints, train, test, _ = setup
    layers = ["layer2", "bn1"]
    expected = func_tracin_scores(model, checkpoints, train, test, layers=layers)
    assert (
        relative_error(TracIn(model, checkpoints, config=ScoreConfig(layers=layers)).scores(train, test), expected)
        < RTOL
    )


def test_distillation_loss_scores_equal_reference(setup):
    model, checkpoints, train, test, _ = setup
    torch.manual_seed(5)
    teacher = build_model(ModelConfig(stages=4, width=4, in_channels=1, num_classes=10)).eval()

    teacher64 = copy.deepcopy(teacher).double()

    def kd(logits, labels, inputs):
        teacher_logits = teacher64(inputs)
        return losses.distillation(logits, teacher_logits, labels, temperature=3.0, alpha=0.6).sum()

    expected = func_tracin_scores(model, checkpoints, train, test, loss=kd)
    tracin = TracIn(model, checkpoints, loss=Distillation(teacher, 3.0, 0.6))
    assert relative_error(tracin.scores(train, test), expected) < RTOL


def test_a_students_own_training_gradient_against_the_test_cross_entropy_equals_reference(setup):
    """TrainTest(train=Distillation, test=CrossEntropy): the train side differentiates the objective the
    student's steps were taken on, the test side the test label's cross-entropy (TracIn's derivation), as
    the float64 reference does with the same two losses; either symmetric choice is far from it."""
    model, checkpoints, train, test, _ = setup
    torch.manual_seed(5)
    teacher = build_model(ModelConfig(stages=4, width=4, in_channels=1, num_classes=10)).eval()
    teacher64 = copy.deepcopy(teacher).double()

    def kd(logits, labels, inputs):
        return losses.distillation(logits, teacher64(inputs), labels, temperature=3.0, alpha=0.6).sum()

    expected = func_tracin_scores(
        model, checkpoints, train, test, loss=kd, test_loss=lambda z, y, x: F.cross_entropy(z, y, reduction="sum")
    )
    tracin = TracIn(model, checkpoints, loss=TrainTest(Distillation(teacher, 3.0, 0.6), CrossEntropy()))
    got = tracin.scores(train, test)
    assert relative_error(got, expected) < RTOL
    assert relative_error(got, func_tracin_scores(model, checkpoints, train, test, loss=kd)) > 1e-2
    assert relative_error(got, func_tracin_scores(model, checkpoints, train, test)) > 1e-2
    self_influence = func_tracin_scores(model, checkpoints, train, train, loss=kd).diagonal()
    assert relative_error(tracin.self_influence(train), self_influence) < RTOL  # the train side's own objective


def test_a_test_side_on_the_predicted_class_equals_reference(setup):
    """PredictedCrossEntropy on the test side: each test example explained with respect to the class the
    model predicts at each checkpoint, as the reference's cross-entropy on the argmax of its own logits."""
    model, checkpoints, train, test, _ = setup
    predicted = lambda z, y, x: F.cross_entropy(z, z.argmax(dim=1), reduction="sum")  # noqa: E731
    expected = func_tracin_scores(model, checkpoints, train, test, test_loss=predicted)
    got = TracIn(model, checkpoints, loss=TrainTest(CrossEntropy(), PredictedCrossEntropy())).scores(train, test)
    assert relative_error(got, expected) < RTOL
    assert relative_error(got, func_tracin_scores(model, checkpoints, train, test)) > 1e-3  # some predictions are wrong


def test_top_k_equals_full_sort_both_directions(setup):
    model, checkpoints, train, test, _ = setup
    tracin = TracIn(model, checkpoints, engine=EngineConfig(chunk_size=5, test_block=4))
    full = tracin.scores(train, test)
    top = tracin.top_k(train, test, k=3, side="both")
    assert torch.equal(top.test.top_index, full.T.argsort(1, descending=True)[:, :3])
    assert torch.equal(top.test.bottom_index, full.T.argsort(1)[:, :3])
    assert torch.equal(top.train.top_index, full.argsort(1, descending=True)[:, :3])
    assert torch.equal(top.train.bottom_score, full.sort(1).values[:, :3])


def test_top_k_larger_than_the_set_is_refused(setup):
    model, checkpoints, train, test, _ = setup
    with pytest.raises(TracinError, match="k must be between"):
        TracIn(model, checkpoints).top_k(train, test, k=10, side="both")


def test_projected_is_seeded_and_converges_to_exact(setup):
    model, checkpoints, train, test, reference = setup
    tracin = TracIn(model, checkpoints, config=ScoreConfig(mode="projected", proj_dim=16, seed=0))
    assert PROJECTED in {p.representation for p in tracin.plans(tracin_source(train), 24, 9)}
    first = tracin.scores(train, test)
    assert torch.equal(
        first, TracIn(model, checkpoints, config=ScoreConfig(mode="projected", proj_dim=16, seed=0)).scores(train, test)
    )
    runs = [first] + [
        TracIn(model, checkpoints, config=ScoreConfig(mode="projected", proj_dim=16, seed=s)).scores(train, test)
        for s in range(1, 40)
    ]
    single = sum(relative_error(r, reference) for r in runs) / len(runs)
    mean = relative_error(torch.stack(runs).mean(0), reference)
    assert single > 0.05  # projection is really active
    assert mean < single / 3  # ~1/sqrt(40) of a single run's error if unbiased


def test_projected_ranks_agree_with_exact_at_a_generous_dimension(setup):
    model, checkpoints, train, test, reference = setup
    projected = TracIn(model, checkpoints, config=ScoreConfig(mode="projected", proj_dim=256, seed=0)).scores(
        train, test
    )
    rhos = [scipy.stats.spearmanr(projected[:, j], reference[:, j]).statistic for j in range(reference.shape[1])]
    assert min(rhos) >= 0.9


def test_inputs_as_dataset_equal_tensor_pair(setup):
    model, checkpoints, train, test, _ = setup
    tracin = TracIn(model, checkpoints)
    assert torch.equal(tracin.scores(TensorDataset(*train), test), tracin.scores(train, test))


def test_checkpoint_files_with_learning_rates(setup, tmp_path):
    model, checkpoints, train, test, reference = setup
    paths = []
    for i, (state, lr) in enumerate(checkpoints):
        paths.append(tmp_path / f"epoch_{i}.pt")
        torch.save({"format": FORMAT, "model": state, "lr": lr, "epoch": 2 * (i + 1)}, paths[-1])
    from_files = TracIn(model, paths)
    assert from_files.lrs == list(LRS) and from_files.checkpoints[1].epoch == 4
    assert relative_error(from_files.scores(train, test), reference) < RTOL
    torch.save(checkpoints[0][0], tmp_path / "bare.pt")
    assert TracIn(model, [(tmp_path / "bare.pt", 0.5)]).lrs == [0.5]
    with pytest.raises(CheckpointError, match="records no learning rate"):
        TracIn(model, [tmp_path / "bare.pt"])


def test_bad_input_is_a_clear_error(setup, tmp_path):
    model, checkpoints, train, test, _ = setup
    with pytest.raises(CheckpointError, match="no checkpoints"):
        TracIn(model, [])
    other = build_model(ModelConfig(stages=3, width=4, in_channels=1, num_classes=10)).state_dict()
    with pytest.raises(CheckpointError, match="does not fit the model"):
        TracIn(model, [(other, 0.1)])
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt|not a readable"):
        TracIn(model, [tmp_path / "broken.pt"])
    with pytest.raises(TracinError, match="empty"):
        TracIn(model, checkpoints).scores((train[0][:0], train[1][:0]), test)
    with pytest.raises(TracinError, match="proj_dim"):
        TracIn(model, checkpoints, config=ScoreConfig(mode="projected"))
    with pytest.raises(TracinError, match="loss must be called as"):
        TracIn(model, checkpoints, loss="kd")
    with pytest.raises(TracinError, match="selects no trainable"):
        TracIn(model, checkpoints, config=ScoreConfig(layers=["nope"]))
    with pytest.raises(TracinError, match="precision must be one of"):
        TracIn(model, checkpoints, config=ScoreConfig(precision="fp16"))
    with pytest.raises(TracinError, match="'tf32' is a CUDA mode"):
        TracIn(model, checkpoints, config=ScoreConfig(precision="tf32"), device="cpu")


def test_non_finite_gradients_are_an_error_not_nan(setup):
    model, checkpoints, train, test, _ = setup
    state = dict(checkpoints[0][0])
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("inf"))
    with pytest.raises(NonFiniteError, match="at checkpoint 0"):  # the message names the checkpoint (red-team K9)
        TracIn(model, [(state, 0.1)]).scores(train, test)
    with pytest.raises(NonFiniteError):  # checked once per chunk and checkpoint, not per batch
        TracIn(model, checkpoints + [(state, 0.1)], engine=EngineConfig(batch_size=3)).self_influence(train)


def _captum_checkpoints(checkpoints, tmp_path):
    paths = []
    for i, (state, lr) in enumerate(checkpoints):
        paths.append(str(tmp_path / f"captum_{i}.pt"))
        torch.save({"model": state, "lr": lr}, paths[-1])

    def load(model, path):
        payload = torch.load(path, weights_only=True)
        model.load_state_dict(payload["model"])
        return payload["lr"]

    return paths, load


def test_equals_captum_tracincp_on_conv_and_linear_parameters(setup, tmp_path):
    from captum.influence import TracInCP

    model, checkpoints, train, test, _ = setup
    paths, load = _captum_checkpoints(checkpoints, tmp_path)
    layers = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = TracInCP(
            tiny_resnet(),
            TensorDataset(*train),
            paths,
            checkpoints_load_func=load,
            layers=layers,
            loss_fn=nn.CrossEntropyLoss(reduction="sum"),
            batch_size=8,
            sample_wise_grads_per_batch=True,
        ).influence(test)
    ours = TracIn(model, checkpoints, config=ScoreConfig(layers=layers)).scores(train, test)
    assert relative_error(ours, captum.T) < RTOL


def test_last_layer_equals_captum_tracincpfast(setup, tmp_path):
    from captum.influence import TracInCPFast

    model, checkpoints, train, test, _ = setup
    paths, load = _captum_checkpoints(checkpoints, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = TracInCPFast(
            tiny_resnet(),
            "fc",
            TensorDataset(*train),
            paths,
            checkpoints_load_func=load,
            loss_fn=nn.CrossEntropyLoss(reduction="sum"),
            batch_size=8,
        ).influence(test)
    ours = TracIn(model, checkpoints, config=ScoreConfig(mode="last-layer")).scores(train, test)
    assert relative_error(ours, captum.T) < RTOL


def test_checkpoint_objects_keep_provenance(setup):
    model, checkpoints, train, test, reference = setup
    objects = [Checkpoint(state, lr, path=f"mem{i}", epoch=i) for i, (state, lr) in enumerate(checkpoints)]
    tracin = TracIn(model, objects)
    assert [c.path for c in tracin.checkpoints] == ["mem0", "mem1"]
    assert relative_error(tracin.scores(train, test), reference) < RTOL


def test_teacher_sized_model_runs_through_the_same_code():
    model = build_model(ModelConfig(stages=4, width=2, in_channels=1, num_classes=10)).eval()
    x, y = torch.randn(3, 1, 8, 8), torch.randint(0, 10, (3,))
    scores = TracIn(model, [(model.state_dict(), 1.0)]).scores((x, y), (x, y))
    assert torch.allclose(scores, scores.T, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("variant", ["cosine", "train-normalised"])
def test_normalised_variants_equal_the_float64_reference(setup, variant):
    model, checkpoints, train, test, _ = setup
    expected = func_tracin_scores(model, checkpoints, train, test, variant=variant)
    config = ScoreConfig(variants=(variant, "raw"))
    got = TracIn(model, checkpoints, config, engine=EngineConfig(chunk_size=7, test_block=5)).scores(train, test)
    assert relative_error(got, expected) < RTOL


def test_all_variants_come_from_one_pass_and_equal_single_variant_runs(setup):
    model, checkpoints, train, test, reference = setup
    together = TracIn(model, checkpoints, ScoreConfig(variants=("raw", "cosine", "train-normalised")))
    by_variant = together.scores_by_variant(train, test)
    assert relative_error(by_variant["raw"], reference) < RTOL
    for variant in ("cosine", "train-normalised"):
        alone = TracIn(model, checkpoints, ScoreConfig(variants=(variant,))).scores(train, test)
        assert relative_error(by_variant[variant], alone) < 1e-6
    cosine_terms = by_variant["cosine"] / sum(lr for lr in LRS)
    assert cosine_terms.abs().max() <= 1 + 1e-5  # a weighted mean of cosines


def test_a_zero_gradient_has_normalised_scores_zero_not_nan():
    from tracin.engine.tracin import _inverse_norms, _scaled
    from tracin.variants import score_variant

    inverse = _inverse_norms(torch.tensor([4.0, 0.0]))
    assert torch.equal(inverse, torch.tensor([0.5, 0.0]))
    dot = torch.tensor([[3.0], [0.0]])  # the zero gradient's products are 0; 0 / 0 would be nan
    assert torch.equal(
        _scaled(score_variant("cosine"), dot, inverse, torch.tensor([0.25])), torch.tensor([[0.375], [0.0]])
    )
    assert torch.equal(_scaled(score_variant("train-normalised"), dot, inverse, None), torch.tensor([[1.5], [0.0]]))


def test_cosine_with_bf16_features_uses_float32_norms(setup):
    model, checkpoints, train, test, _ = setup
    expected = func_tracin_scores(model, checkpoints, train, test, variant="cosine")
    config = ScoreConfig(variants=("cosine",), precision="bf16")
    got = TracIn(model, checkpoints, config, engine=EngineConfig(representation="flat")).scores(train, test)
    assert relative_error(got, expected) < BF16_RTOL


def test_variants_are_validated():
    with pytest.raises(TracinError, match="variant must be one of raw, cosine, train-normalised"):
        ScoreConfig(variants=("relatif",))
    with pytest.raises(TracinError, match="each score variant once"):
        ScoreConfig(variants=("raw", "raw"))

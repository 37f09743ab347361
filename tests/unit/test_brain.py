"""Training steps of the Brains, built through the yaml files users run, at tiny size."""

import collections
import copy
import functools
import inspect

import pytest
import torch
import torch.nn.functional as F
from helpers import REPO_ROOT, RecipeBrain
from speechbrain.dataio.dataloader import make_dataloader

from ser_adv_brain.data.dataio import dataio_prep, manifests_of
from ser_adv_brain.data.synthetic import generate_synthetic_demos
from ser_adv_brain.objectives import SimilarityAdversarialObjective, VanillaAdversarialObjective
from ser_adv_brain.runs import export_checkpoint
from ser_adv_brain.training.brain import build_brain
from ser_adv_brain.training.checkpoints import selection_key
from ser_adv_brain.training_steps import FusedAdversarialStep

RUN_OPTS = {"device": "cpu", "noprogressbar": True}


def build(hparams, run_opts=RUN_OPTS):
    """What the recipe does before ``fit``, then ``fit``'s own start."""
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, run_opts, RecipeBrain)
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    brain.on_fit_start()
    batch = next(iter(make_dataloader(datasets["train"], batch_size=4)))
    return brain, datasets, batch


def parameters(brain):
    return {name: p.detach().clone() for name, p in brain.modules.model.named_parameters()}


# (yaml, overrides, fused step expected)
STEP_CASES = [
    ("cnn4_single", {}, None),
    ("cnn4_vanilla", {"attack_labels": "target", "attack_mode": "train"}, True),
    ("cnn4_vanilla", {"attack_labels": "predicted", "attack_mode": "train"}, False),
    ("cnn4_vanilla", {"attack_labels": "predicted", "attack_mode": "eval"}, False),
    ("cnn4_vanilla", {"attack_labels": "target", "attack_mode": "eval"}, False),
    ("cnn4_similarity", {"attack_labels": "target", "attack_mode": "train", "beta": 0.3, "gamma": 0.5}, False),
    ("cnn4_similarity", {"attack_labels": "target", "attack_mode": "train", "detach_real_embedding": True}, True),
    ("cnn4_similarity", {"attack_labels": "predicted", "attack_mode": "train", "distance": "l1"}, False),
    ("cnn4_similarity", {"attack_labels": "predicted", "attack_mode": "eval", "distance": "l2"}, False),
    ("vgg16_vanilla", {}, False),
    ("resnet50_similarity", {"attack_labels": "target", "attack_mode": "train"}, False),
    ("vgg16_single", {}, None),
    ("resnet50_single", {}, None),
]


def case_id(case):
    name, overrides, _ = case
    return "-".join([name, *(str(v) for v in overrides.values())])


@pytest.mark.parametrize("name, overrides, fused", STEP_CASES, ids=[case_id(c) for c in STEP_CASES])
def test_training_step_changes_parameters_with_finite_losses(tiny_hparams, name, overrides, fused):
    brain, _, batch = build(tiny_hparams(name, **overrides))
    before = parameters(brain)
    loss = brain.fit_batch(batch)
    assert torch.isfinite(loss)
    after = parameters(brain)
    # Adam moves every parameter that got a gradient: all of them, here.
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged
    assert brain.modules.model.training
    if fused is None:
        return
    assert isinstance(brain.hparams.training_step, FusedAdversarialStep) is fused
    parts = brain.train_loss_parts()
    expected = {"real_loss", "fake_loss"}
    if isinstance(brain.hparams.objective, SimilarityAdversarialObjective):
        expected.add("distance")
    assert set(parts) == expected and all(torch.isfinite(torch.tensor(v)) for v in parts.values())


def formula_parts(hparams, real, fake, targets):
    """The paper's objective and its parts, written out from the yaml's weights (not the objective's code)."""
    real_loss, fake_loss = F.cross_entropy(real[0], targets), F.cross_entropy(fake[0], targets)
    if "alpha" in hparams:
        alpha = hparams["alpha"]
        return {"loss": alpha * real_loss + (1 - alpha) * fake_loss, "real_loss": real_loss, "fake_loss": fake_loss}
    anchor = real[1].detach() if hparams["detach_real_embedding"] else real[1]
    diff = anchor - fake[1]
    distance = {"mse": diff.pow(2).mean(), "l1": diff.abs().sum(-1).mean(), "l2": diff.pow(2).sum(-1).sqrt().mean()}
    distance = distance[hparams["distance"]]
    beta, gamma = hparams["beta"], hparams["gamma"]
    loss = beta * real_loss + gamma * fake_loss + (1 - beta - gamma) * distance
    return {"loss": loss, "real_loss": real_loss, "fake_loss": fake_loss, "distance": distance}


def reference_step(brain, hparams, batch):
    """The objective's parameter gradients and loss parts computed plainly, on a copy of the model
    (train-mode attacks)."""
    model = copy.deepcopy(brain.modules.model).train()
    attack = brain.hparams.attack
    with torch.no_grad():
        feats = brain.compute_features(batch.sig.data)
    targets = batch.emo_encoded.data.view(-1)
    inputs = feats.clone().requires_grad_(True)
    real = model(inputs)
    labels = real[0].argmax(dim=-1) if attack.label_source == "predicted" else targets
    (grad,) = torch.autograd.grad(F.cross_entropy(real[0], labels), inputs, retain_graph=True)
    fake_inputs = feats + attack.eps * grad.sign()
    if attack.eta is not None:
        fake_inputs = torch.min(torch.max(fake_inputs, feats - attack.eta), feats + attack.eta)
    parts = formula_parts(hparams, real, model(fake_inputs), targets)
    parts["loss"].backward()
    return {name: p.grad for name, p in model.named_parameters()}, {k: float(v.detach()) for k, v in parts.items()}


# beta != gamma everywhere, so that swapping the two weights anywhere changes the step.
TRAIN_MODE_CASES = [
    ("cnn4_vanilla", {"attack_labels": "target", "alpha": 0.3}),
    ("cnn4_vanilla", {"attack_labels": "predicted", "alpha": 0.3}),
    ("cnn4_similarity", {"attack_labels": "target", "beta": 0.3, "gamma": 0.5}),
    ("cnn4_similarity", {"attack_labels": "target", "detach_real_embedding": True, "beta": 0.3, "gamma": 0.5}),
    ("cnn4_similarity", {"attack_labels": "predicted", "distance": "l2", "beta": 0.5, "gamma": 0.2}),
    ("cnn4_similarity", {"attack_labels": "target", "distance": "l1", "beta": 0.6, "gamma": 0.1}),
]


@pytest.mark.parametrize("name, overrides", TRAIN_MODE_CASES, ids=[case_id((*c, None)) for c in TRAIN_MODE_CASES])
def test_adversarial_step_gradients_equal_the_formula(tiny_hparams, name, overrides):
    """Whatever shortcut the Brain's step takes, it descends the paper's objective.

    One ``fit_batch`` with plain SGD (and no clipping) moves the parameters by
    ``lr * gradient``, which is compared with the gradient computed plainly.
    """
    lr = 1000.0  # large, so that the parameter change carries the gradient's digits
    hparams = tiny_hparams(name, attack_mode="train", attack_eps=0.05, **overrides)
    hparams["opt_class"] = functools.partial(torch.optim.SGD, lr=lr)
    brain, _, batch = build(hparams, {**RUN_OPTS, "max_grad_norm": 1e12})
    expected, expected_parts = reference_step(brain, hparams, batch)
    before = parameters(brain)
    loss = brain.fit_batch(batch)
    for param_name, param in brain.modules.model.named_parameters():
        step = (before[param_name] - param.detach()) / lr
        assert torch.allclose(step, expected[param_name], rtol=1e-3, atol=1e-6), param_name
    assert float(loss) == pytest.approx(expected_parts.pop("loss"), rel=1e-4)
    assert brain.train_loss_parts() == pytest.approx(expected_parts, rel=1e-4)


@pytest.mark.parametrize("attack_mode", ["eval", "train"])
def test_attack_runs_in_its_model_mode(tiny_hparams, attack_mode):
    brain, _, batch = build(tiny_hparams("cnn4_vanilla", attack_mode=attack_mode))
    modes = []
    hook = brain.modules.model.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    brain.fit_batch(batch)
    hook.remove()
    # Eval mode: the attack's own forward besides the real and fake training forwards.
    expected = {True: 2, False: 1} if attack_mode == "eval" else {True: 2}
    assert collections.Counter(modes) == expected


def test_warmup_is_clean(tiny_hparams):
    brain, _, batch = build(tiny_hparams("cnn4_vanilla", warmup_steps=2))
    forwards = []
    hook = brain.modules.model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    for step in range(3):
        brain.fit_batch(batch)
        assert brain.loss_parts.count == (1 if step == 2 else 0)
        assert len(forwards) == [1, 2, 5][step]  # then: attack, real and fake forwards
    hook.remove()


@pytest.mark.parametrize(
    "overrides, error, culprit",
    [
        ({"warmup_steps": -1}, ValueError, "warmup_steps"),
        ({"attack": "fgsm"}, TypeError, "attack"),
        ({"objective": 0.5}, TypeError, "objective"),
    ],
)
def test_training_step_checks_its_arguments(tiny_hparams, overrides, error, culprit):
    with pytest.raises(error, match=culprit):
        tiny_hparams("cnn4_vanilla", **overrides)


@pytest.mark.parametrize(
    "name, overrides, culprit",
    [
        ("cnn4_vanilla", {"alpha": 1.5}, "alpha"),
        ("cnn4_similarity", {"beta": 0.7, "gamma": 0.4}, "beta"),
        ("cnn4_vanilla", {"attack_eps": -0.02}, "eps"),
        ("cnn4_vanilla", {"attack_eta": -0.1}, "eta"),
        ("cnn4_vanilla", {"attack_labels": "true"}, "label_source"),
    ],
)
def test_yaml_errors_name_the_culprit(tiny_hparams, name, overrides, culprit):
    with pytest.raises(ValueError, match=culprit):
        tiny_hparams(name, **overrides)


def test_yaml_holds_the_paper_defaults(yaml_hparams):
    single = yaml_hparams("cnn4_single")
    vanilla = yaml_hparams("vgg16_vanilla")
    similarity = yaml_hparams("resnet50_similarity")
    for hparams in (single, vanilla, similarity):
        attack = hparams["attack"]
        assert (attack.eps, attack.eta, attack.label_source, attack.model_mode) == (0.02, 0.1, "predicted", "eval")
        assert hparams["lr"] == 0.001 and hparams["eval_eps"] == [0.0, 0.02, 0.04, 0.06, 0.08, 0.10]
        assert (hparams["n_fft"], hparams["hop_length"], hparams["n_mels"], hparams["f_min"], hparams["f_max"]) == (
            512,
            256,
            64,
            20,
            8000,
        )
        assert hparams["split_ratio"] == [24, 22, 22]
        assert (hparams["n_frames"], hparams["batch_size"], hparams["base_channels"]) == (373, 16, 64)
    assert isinstance(vanilla["objective"], VanillaAdversarialObjective) and vanilla["objective"].alpha == 0.5
    objective = similarity["objective"]
    assert (objective.beta, objective.gamma, objective.distance) == (0.4, 0.4, "mse")
    assert vanilla["warmup_steps"] == similarity["warmup_steps"] == 1000
    for hparams in (single, vanilla, similarity):
        assert hparams["select_checkpoint"] == "best_dev" and hparams["number_of_epochs"] == 53
        assert hparams["opt_class"].func is torch.optim.Adam and hparams["ckpt_interval_minutes"] == 15
    # The built-in corpus: at least 12 speakers (both genders alternate).
    assert single["synthetic_corpus"]["n_speakers"] >= 12
    assert inspect.signature(generate_synthetic_demos).parameters["n_speakers"].default >= 12


def test_robustness_curve_counts_every_example_once(tiny_hparams):
    brain, datasets, _ = build(tiny_hparams("cnn4_single"))
    grid = [0.0, 0.05, 0.1]
    confusions = brain.evaluate_under_attack(
        datasets["valid"], brain.hparams.attack, grid, loader_kwargs={"batch_size": 8}
    )
    assert list(confusions) == grid
    assert all(int(cm.counts.sum()) == len(datasets["valid"]) for cm in confusions.values())
    brain.evaluate(datasets["valid"], test_loader_kwargs={"batch_size": 8})
    assert torch.equal(confusions[0.0].counts, brain.confusion.counts)


def test_bf16_training_step(tiny_hparams):
    brain, _, batch = build(tiny_hparams("cnn4_similarity"), {**RUN_OPTS, "precision": "bf16"})
    before = parameters(brain)
    assert torch.isfinite(brain.fit_batch(batch))
    assert all(not torch.equal(before[n], p) for n, p in parameters(brain).items())
    assert all(torch.isfinite(torch.tensor(v)) for v in brain.train_loss_parts().values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="SpeechBrain allows fp16 on CUDA only")
@pytest.mark.parametrize("overrides", [{"attack_labels": "target", "attack_mode": "train"}, {}], ids=["fused", "eval"])
def test_fp16_step_keeps_the_gradient_sign(tiny_hparams, overrides):
    """Under loss scaling the attack's input gradient must neither underflow to 0 nor overflow to NaN."""
    brain, _, batch = build(
        tiny_hparams("cnn4_vanilla", attack_eps=0.05, **overrides),
        {**RUN_OPTS, "device": "cuda:0", "precision": "fp16"},
    )
    inputs = []
    hook = brain.modules.model.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().float()))
    assert torch.isfinite(brain.fit_batch(batch))
    hook.remove()
    real, fake = inputs[0], inputs[-1]
    step = (fake - real).abs()
    assert torch.isfinite(fake).all()
    assert float(((step - 0.05).abs() < 1e-3).float().mean()) > 0.9


ACCUMULATION_CASES = [
    ("cnn4_vanilla", {"attack_labels": "target"}),  # fused: the real term is backpropagated early
    ("cnn4_vanilla", {"attack_labels": "predicted"}),
    ("cnn4_similarity", {"attack_labels": "target", "beta": 0.3, "gamma": 0.5}),  # coupled: one backward
]


@pytest.mark.parametrize("name, overrides", ACCUMULATION_CASES, ids=[case_id((*c, None)) for c in ACCUMULATION_CASES])
def test_gradient_accumulation_steps_on_the_mean_gradient(tiny_hparams, name, overrides):
    """``grad_accumulation_factor: 2``: two batches, one optimiser step along the mean of their
    objective gradients (each computed plainly, as in the test above)."""
    lr = 1000.0
    hparams = tiny_hparams(name, attack_mode="train", attack_eps=0.05, **overrides)
    hparams["opt_class"] = functools.partial(torch.optim.SGD, lr=lr)
    brain, datasets, first = build(hparams, {**RUN_OPTS, "max_grad_norm": 1e12, "grad_accumulation_factor": 2})
    loader = iter(make_dataloader(datasets["train"], batch_size=4))
    next(loader)
    second = next(loader)
    before = parameters(brain)
    expected = [reference_step(brain, hparams, batch)[0] for batch in (first, second)]
    for step, batch in enumerate((first, second), start=1):
        brain.step = step  # as SpeechBrain's loop counts: the optimiser steps when step % 2 == 0
        brain.fit_batch(batch)
        if step == 1:
            assert all(torch.equal(before[n], p) for n, p in parameters(brain).items())
    for param_name, param in brain.modules.model.named_parameters():
        step = (before[param_name] - param.detach()) / lr
        mean = (expected[0][param_name] + expected[1][param_name]) / 2
        assert torch.allclose(step, mean, rtol=1e-3, atol=1e-6), param_name


@pytest.mark.parametrize("minutes, expected", [(1e-9, 7), (60.0, 0)])
def test_intra_epoch_checkpoints_by_time(tiny_hparams, minutes, expected):
    """``ckpt_interval_minutes`` (the yaml's default way): a checkpoint whenever that much time has
    passed since the last one; here after every one of the 7 steps, or never within the epoch."""
    hparams = tiny_hparams("cnn4_single")
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, {**RUN_OPTS, "ckpt_interval_minutes": minutes, "ckpt_interval_steps": 0}, RecipeBrain)
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    saves = []
    save = brain.checkpointer.save_checkpoint
    brain.checkpointer.save_checkpoint = lambda *a, **k: saves.append(k.get("end_of_epoch", True)) or save(*a, **k)
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs={"batch_size": 4, "shuffle": False},
    )
    assert saves == [False] * expected + [True]


def test_sync_batchnorm_is_ignored_on_cpu(tiny_hparams, tmp_path, monkeypatch):
    """``sync_batchnorm: True`` under DDP on CPU (gloo; here one process): the model is DDP-wrapped with
    its plain BatchNorm layers, which normalise each process's batch, and a step trains."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        hparams = tiny_hparams("cnn4_vanilla", sync_batchnorm=True)
        brain, _, batch = build(hparams)
        model = brain.modules.model
        assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
        kinds = {type(m) for m in model.modules()}
        assert torch.nn.BatchNorm2d in kinds and torch.nn.SyncBatchNorm not in kinds
        before = parameters(brain)
        assert torch.isfinite(brain.fit_batch(batch))
        assert all(not torch.equal(before[n], p) for n, p in parameters(brain).items())
    finally:
        torch.distributed.destroy_process_group()


def test_the_best_dev_epoch_is_kept_and_tested_and_the_final_one_on_request(tiny_hparams):
    """Scripted dev UARs .3, .5, .4 (a trained model's depend on the host's floats): epochs 2 (best) and 3
    (latest) are kept; ``best_dev`` tests and exports epoch 2, ``final`` tests epoch 3."""
    hparams = tiny_hparams("cnn4_single", number_of_epochs=3)
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, RUN_OPTS, RecipeBrain)
    scripted, eval_stats = iter([0.3, 0.5, 0.4]), brain.eval_stats

    def scripted_stats(stage_loss):
        stats = eval_stats(stage_loss)
        return {**stats, "UAR": next(scripted)} if brain.stage_name.startswith("VALID") else stats

    brain.eval_stats = scripted_stats
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    brain.fit(hparams["epoch_counter"], datasets["train"], datasets["valid"], train_loader_kwargs={"batch_size": 4})
    kept = [int((c.path / "counter.ckpt").read_text()) for c in brain.checkpointer.list_checkpoints()]
    assert sorted(kept) == [2, 3]
    for choice, epoch in [("best_dev", 2), ("final", 3)]:
        brain.evaluate(datasets["test"], max_key=selection_key(choice), test_loader_kwargs={"batch_size": 4})
        assert hparams["epoch_counter"].current == epoch, choice
    (second,) = [c for c in brain.checkpointer.list_checkpoints() if (c.path / "counter.ckpt").read_text() == "2"]
    interface = export_checkpoint(brain, hparams, selection_key("best_dev"))
    assert open(f"{interface}/model.ckpt", "rb").read() == (second.path / "model.ckpt").read_bytes()


@pytest.mark.parametrize("kind", ["single", "vanilla", "similarity"])
def test_emodb_yaml_holds_the_documented_values(tmp_path, kind):
    """recipes/EmoDB/README.md: the paper's settings with EmoDB's 7 classes, 188 frames, 15 epochs,
    a 33-step warm-up and the final checkpoint, on speaker fold 0; checkpoints atomic, with the random state."""
    from hyperpyyaml import load_hyperpyyaml

    from ser_adv_brain.training.checkpoints import AtomicCheckpointer, RandomState

    path = f"{REPO_ROOT}/recipes/EmoDB/hparams/cnn4_{kind}.yaml"
    with open(path, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "out")})
    assert (hparams["n_classes"], hparams["n_frames"], hparams["number_of_epochs"]) == (7, 188, 15)
    assert (hparams["base_channels"], hparams["n_mels"], hparams["lr"], hparams["batch_size"]) == (64, 64, 0.001, 16)
    assert hparams["select_checkpoint"] == "final" and hparams["ckpt_interval_minutes"] == 15
    # The split: speaker fold 0 of 5 (test 03 and 08, dev 09 and 10), the lists unused.
    assert (hparams["fold"], hparams["n_folds"], hparams["test_speakers"], hparams["valid_speakers"]) == (
        0,
        5,
        None,
        None,
    )
    assert isinstance(hparams["checkpointer"], AtomicCheckpointer)
    assert isinstance(hparams["checkpointer"].recoverables["random_state"], RandomState)
    if kind != "single":
        attack = hparams["attack"]
        assert (attack.eps, attack.eta, attack.label_source, attack.model_mode) == (0.02, 0.1, "predicted", "eval")
        assert hparams["warmup_steps"] == 33
    if kind == "vanilla":
        assert hparams["objective"].alpha == 0.5
    if kind == "similarity":
        objective = hparams["objective"]
        assert (objective.beta, objective.gamma, objective.distance) == (0.4, 0.4, "mse")

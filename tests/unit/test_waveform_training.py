"""Waveform-domain adversarial training: the twin, its budget, the gradients, the modes, what DDP sees.

The steps are built from the yaml files users run at ``TINY`` size, on the tiny synthetic manifests:
``recipes/EmoDB/hparams/cnn4_waveform_{vanilla,similarity,trades}.yaml`` (a model on log-Mel features: the
attack runs through the log-Mel, the twin is the log-Mel of its audio) and
``wav2vec2_{vanilla,similarity,trades}.yaml`` (a model that takes the waveform: the attack runs on the bare
model, the twin is its audio), the latter with a tiny random encoder.
"""

import functools

import pytest
import torch
from helpers import load_hparams, tiny
from speechbrain.dataio.batch import PaddedBatch
from test_adversarial_training import plain_two_pass
from test_brain import RUN_OPTS, build, parameters
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from ser_adv_brain.attacks import FGSM, KLPGD, UniversalPerturbation, WaveformAPGD, WaveformKLPGD, WaveformPGD
from ser_adv_brain.attacks.base import Attack
from ser_adv_brain.audio.pcm import PCM16_SCALE, quantize_pcm16
from ser_adv_brain.models import WaveformClassifier
from ser_adv_brain.models.self_supervised import TINY_ENCODER, random_encoder_folder
from ser_adv_brain.objectives import (
    SimilarityAdversarialObjective,
    TRADESObjective,
    VanillaAdversarialObjective,
)
from ser_adv_brain.training_steps import CoupledAdversarialStep, SeparateAdversarialStep, adversarial_step

SNR_DB = 40.0  # the yaml files' training_snr_db


# The waveform-training yaml files of a model on log-Mel features and of one that takes the waveform.
YAML_FILES = {"cnn4": "cnn4_waveform_{}", "wav2vec2": "wav2vec2_{}"}
KINDS = ["vanilla", "similarity", "trades"]


@pytest.fixture
def waveform_hparams(tiny_manifests, tmp_path):
    """Returns ``make(kind, model="cnn4", **overrides)``: ``YAML_FILES[model]`` of ``kind`` at ``TINY`` size on
    the tiny manifests."""

    def make(kind, model="cnn4", **overrides):
        name = f"recipes/EmoDB/hparams/{YAML_FILES[model].format(kind)}.yaml"
        return load_hparams(
            name,
            **{
                **tiny(name),
                "data_folder": str(tmp_path),  # unused: the manifests below are given
                "output_folder": str(tmp_path / f"{model}_{kind}"),
                "train_annotation": tiny_manifests["train"],
                "valid_annotation": tiny_manifests["valid"],
                "test_annotation": tiny_manifests["test"],
                **overrides,
            },
        )

    return make


def spy_on_attack(attack, monkeypatch):
    """Records every ``perturb`` call of the training attack: its model, inputs, keyword arguments and output."""
    calls, perturb = [], attack.perturb

    def recorded(model, inputs, targets, **kwargs):
        out = perturb(model, inputs, targets, **kwargs)
        calls.append({"model": model, "inputs": inputs.detach().clone(), "kwargs": kwargs, "out": out.detach()})
        return out

    monkeypatch.setattr(attack, "perturb", recorded)
    return calls


def model_inputs(brain):
    """The inputs of every forward of the model (the last of a step is its fake forward); remove the hook after."""
    seen = []
    return seen, brain.modules.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))


def padded(batch, fractions):
    """The batch with utterance ``i`` cut to ``fractions[i]`` of its samples, zero-padded as SpeechBrain pads."""
    rows = []
    for index, fraction in enumerate(fractions):
        length = int(fraction * batch.sig.data.shape[1])
        rows.append(
            {"id": batch.id[index], "sig": batch.sig.data[index, :length], "emo_encoded": batch.emo_encoded.data[index]}
        )
    return PaddedBatch(rows)


def realised_snr(clean, adversarial):
    """``10 log10(|x|^2 / |x' - x|^2)`` of one utterance's real samples, written out."""
    clean, adversarial = clean.double(), adversarial.double()
    return float(10 * torch.log10(clean.pow(2).sum() / (adversarial - clean).pow(2).sum()))


@pytest.mark.parametrize("model", sorted(YAML_FILES))
@pytest.mark.parametrize("kind", KINDS)
def test_the_twin_is_the_models_input_made_from_the_attacks_audio_within_the_snr_of_each_utterance(
    waveform_hparams, monkeypatch, kind, model
):
    """The attack runs on the bare model, behind the differentiable log-Mel and normaliser for a model on
    features; the fake forward's input is the normalised log-Mel of the attack's output, or that output itself
    for a model that takes the waveform. The output is 16-bit PCM, within 40 dB SNR of each utterance's real
    samples, and leaves the padding alone: the attack got the lengths."""
    brain, _, batch = build(waveform_hparams(kind, model, training_steps=2))
    batch = padded(batch, [1.0, 0.5, 0.75, 0.3])
    calls = spy_on_attack(brain.hparams.training_attack, monkeypatch)
    seen, hook = model_inputs(brain)
    brain.fit_batch(batch)
    hook.remove()
    (call,) = calls
    assert torch.equal(call["inputs"], batch.sig.data)
    assert torch.equal(call["kwargs"]["wav_lens"], batch.sig.lengths)
    wavs = call["out"]
    if model == "wav2vec2":
        assert call["model"] is brain.model and "compute_features" not in brain.modules
        assert torch.equal(seen[-1], wavs)
    else:
        assert isinstance(call["model"], WaveformClassifier) and call["model"].model is brain.model
        with torch.no_grad():
            assert torch.equal(seen[-1], brain.modules.normalizer(brain.modules.compute_features(wavs)))
    assert torch.equal(wavs * PCM16_SCALE, (wavs * PCM16_SCALE).round())  # rounded to 16-bit PCM, as at evaluation
    clean = quantize_pcm16(batch.sig.data)
    for index, rel in enumerate(batch.sig.lengths.tolist()):
        real = round(rel * wavs.shape[1])
        assert torch.equal(wavs[index, real:], clean[index, real:]), f"utterance {index}: padding changed"
        snr = realised_snr(clean[index, :real], wavs[index, :real])
        assert SNR_DB <= snr < SNR_DB + 10, f"utterance {index}: {snr} dB"


# (model, yaml, overrides, step class, the formula's weights); beta != gamma, so that swapping them shows.
GRADIENT_CASES = [
    ("cnn4", "vanilla", {"alpha": 0.3}, SeparateAdversarialStep, {"kind": "vanilla", "alpha": 0.3}),
    (
        "cnn4",
        "vanilla",
        {"alpha": 0.3, "attack_labels": "target", "attack_mode": "train"},
        SeparateAdversarialStep,
        {"kind": "vanilla", "alpha": 0.3},
    ),
    (
        "cnn4",
        "similarity",
        {"beta": 0.3, "gamma": 0.5},
        CoupledAdversarialStep,
        {"kind": "similarity", "beta": 0.3, "gamma": 0.5, "distance": "mse"},
    ),
    (
        "cnn4",
        "trades",
        {"trades_beta": 2.0},
        CoupledAdversarialStep,
        {"kind": "trades", "beta": 2.0, "distance_weight": 0.0},
    ),
    (
        "cnn4",
        "trades",
        {"attack_mode": "train", "distance_weight": 0.5, "distance": "l1"},
        CoupledAdversarialStep,
        {"kind": "trades", "beta": 6.0, "distance_weight": 0.5, "distance": "l1"},
    ),
    ("wav2vec2", "vanilla", {"alpha": 0.3}, SeparateAdversarialStep, {"kind": "vanilla", "alpha": 0.3}),
    (
        "wav2vec2",
        "similarity",
        {"beta": 0.3, "gamma": 0.5},
        CoupledAdversarialStep,
        {"kind": "similarity", "beta": 0.3, "gamma": 0.5, "distance": "mse"},
    ),
    (
        "wav2vec2",
        "trades",
        {"trades_beta": 2.0, "attack_mode": "train"},
        CoupledAdversarialStep,
        {"kind": "trades", "beta": 2.0, "distance_weight": 0.0},
    ),
]


@pytest.fixture(scope="module")
def encoder_without_dropout(tmp_path_factory):
    """A tiny random wav2vec 2.0 encoder without dropout: the reference's forwards then draw what the step's do."""
    no_dropout = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0}
    return random_encoder_folder("wav2vec2", str(tmp_path_factory.mktemp("encoder")), **TINY_ENCODER, **no_dropout)


@pytest.mark.parametrize(
    "model, kind, overrides, step_class, spec",
    GRADIENT_CASES,
    ids=[f"{c[0]}-{c[1]}-{'-'.join(map(str, c[2].values()))}" for c in GRADIENT_CASES],
)
def test_parameter_gradients_are_the_objectives_on_the_same_twin(
    waveform_hparams, encoder_without_dropout, model, kind, overrides, step_class, spec
):
    """One ``fit_batch`` with plain SGD moves the parameters by ``lr *`` the objective's gradient, written
    out on a copy of the model with the same adversarial audio (``plain_two_pass``), and leaves the model in
    train mode with the BN statistics where the two training forwards put them (the attack's passes, eval
    or train mode, leave them alone); frozen parameters (the encoder's convolutions) do not move."""
    lr = 1000.0  # large, so that the parameter change carries the gradient's digits
    if model == "wav2vec2":
        overrides = {**overrides, "encoder_source": encoder_without_dropout}
    hparams = waveform_hparams(kind, model, training_steps=2, **overrides)
    assert type(hparams["training_step"]) is step_class
    hparams["opt_class"] = functools.partial(torch.optim.SGD, lr=lr)
    brain, _, batch = build(hparams, {**RUN_OPTS, "max_grad_norm": 1e12})
    expected, expected_parts, expected_buffers = plain_two_pass(brain, hparams, spec, batch)
    before = parameters(brain)
    loss = brain.fit_batch(batch)
    for name, param in brain.modules.model.named_parameters():
        step = (before[name] - param.detach()) / lr
        if expected[name] is None:  # frozen
            assert not param.requires_grad and not step.any(), name
        else:
            assert torch.allclose(step, expected[name], rtol=1e-3, atol=1e-6), name
    for name, buffer in brain.modules.model.named_buffers():
        assert torch.allclose(buffer, expected_buffers[name], rtol=1e-5, atol=1e-7), name
    assert all(module.training for module in brain.modules.modules())
    assert float(loss) == pytest.approx(expected_parts.pop("loss"), rel=1e-4)
    assert brain.train_loss_parts() == pytest.approx(expected_parts, rel=1e-4)


@pytest.mark.parametrize(
    "attack",
    [
        # Options that fuse a feature attack's step: true labels, train mode, a start at the clean input.
        WaveformPGD(eps=SNR_DB, steps=2, random_start=False, label_source="target", model_mode="train"),
        WaveformAPGD(eps=SNR_DB, steps=2, random_start=False, label_source="target", model_mode="train"),
        WaveformPGD(eps=SNR_DB, steps=1, random_start=False, label_source="target", model_mode="eval"),
    ],
    ids=repr,
)
def test_a_waveform_attack_is_never_fused_and_takes_its_gradients_itself(waveform_hparams, attack):
    """The training forward's gradient is at the features, not the samples: a waveform attack that would use
    a given gradient gets none, and its step trains on the objective of its own twin."""
    hparams = waveform_hparams("vanilla", alpha=0.3)
    hparams["training_attack"] = attack
    hparams["training_step"] = adversarial_step(attack, hparams["objective"])
    assert type(hparams["training_step"]) is SeparateAdversarialStep
    hparams["opt_class"] = functools.partial(torch.optim.SGD, lr=1000.0)
    brain, _, batch = build(hparams, {**RUN_OPTS, "max_grad_norm": 1e12})
    expected, _, _ = plain_two_pass(brain, hparams, {"kind": "vanilla", "alpha": 0.3}, batch)
    before = parameters(brain)
    brain.fit_batch(batch)
    for name, param in brain.modules.model.named_parameters():
        assert torch.allclose((before[name] - param.detach()) / 1000.0, expected[name], rtol=1e-3, atol=1e-6), name


def test_bf16_waveform_training_step(waveform_hparams):
    """Under autocast the attack's passes through the log-Mel give a finite step that trains every parameter."""
    brain, _, batch = build(waveform_hparams("vanilla", training_steps=2), {**RUN_OPTS, "precision": "bf16"})
    before = parameters(brain)
    assert torch.isfinite(brain.fit_batch(batch))
    assert all(not torch.equal(before[n], p) for n, p in parameters(brain).items())
    assert set(brain.train_loss_parts()) == {"real_loss", "fake_loss"}


class SpectrogramAttack(Attack):
    """An attack of a domain no training step knows."""

    domain = "spectrogram"
    norm = "linf"


@pytest.mark.parametrize(
    "objective", [VanillaAdversarialObjective(0.5), SimilarityAdversarialObjective(), TRADESObjective()], ids=repr
)
def test_an_attack_of_an_unknown_domain_is_refused_naming_the_key_and_the_domain(objective):
    with pytest.raises(TypeError, match=r"training_attack.*\('features', 'waveform'\).*domain 'spectrogram'"):
        adversarial_step(SpectrogramAttack(eps=0.1), objective)


class FromAnotherModel(Attack):
    """An attack that runs on another trained model (as ``TransferAttack``)."""

    domain = "features"
    norm = "linf"
    needs_source_model = True


@pytest.mark.parametrize(
    "attack",
    [UniversalPerturbation(eps=40.0, label_source="target"), FromAnotherModel(eps=0.02)],
    ids=["universal", "transfer"],
)
def test_an_attack_made_before_an_evaluation_is_refused_as_the_training_attack(attack):
    with pytest.raises(TypeError, match=r"training_attack.*needs the training split or another trained model"):
        adversarial_step(attack, VanillaAdversarialObjective(0.5))


@pytest.mark.parametrize("model, kind", [("cnn4", kind) for kind in KINDS] + [("wav2vec2", "similarity")])
def test_ddp_sees_one_forward_and_one_all_reduce_per_step(waveform_hparams, tmp_path, monkeypatch, model, kind):
    """Under DDP (gloo, one process) the attack's passes and the real forward use the bare model: the
    DDP-wrapped one runs the fake forward only, and its reducer all-reduces once per optimiser step (which
    it could not if a parameter got no gradient: the self-supervised encoder's unused mask embedding)."""
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        monkeypatch.setenv(name, value)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        brain, _, batch = build(waveform_hparams(kind, model, training_steps=2))
        wrapped = brain.modules.model
        assert isinstance(wrapped, torch.nn.parallel.DistributedDataParallel)
        forwards, reduced_backwards = [], []
        wrapped.register_forward_pre_hook(lambda module, args: forwards.append(1))

        def counting_allreduce(state, bucket):
            reduced_backwards.append(bucket.is_last())
            return default_hooks.allreduce_hook(state, bucket)

        wrapped.register_comm_hook(None, counting_allreduce)
        calls = spy_on_attack(brain.hparams.training_attack, monkeypatch)
        for _ in range(2):
            assert torch.isfinite(brain.fit_batch(batch))
        assert len(forwards) == 2 and sum(reduced_backwards) == 2
        bare = [call["model"] if model == "wav2vec2" else call["model"].model for call in calls]
        assert all(m is wrapped.module for m in bare) and len(calls) == 2
    finally:
        torch.distributed.destroy_process_group()


# --- TRADES's attack on the waveform ---------------------------------------------------------


def test_waveform_kl_pgd_is_kl_pgd_in_the_waveform_threat_model():
    attack = WaveformKLPGD(eps=SNR_DB, steps=3)
    assert isinstance(attack, KLPGD)
    assert (attack.threat_model, attack.eta, attack.name, attack.reports) == (
        "waveform_snr",
        None,
        "WaveformKLPGD-3",
        ("snr_db",),
    )
    assert repr(attack).startswith("WaveformKLPGD(eps=40.0, steps=3")
    with pytest.raises(ValueError, match="norm"):
        WaveformKLPGD(eps=SNR_DB, norm="l2")


def test_waveform_kl_pgd_raises_the_kl_within_the_snr_after_rounding(tiny_hparams):
    torch.manual_seed(0)
    brain, _, batch = build(tiny_hparams("cnn4_single"))
    classifier = WaveformClassifier(brain.modules.compute_features, brain.modules.normalizer, brain.model).eval()
    wavs = batch.sig.data
    attack = WaveformKLPGD(eps=30.0, steps=5, seed=3)
    start_attack = WaveformKLPGD(eps=30.0, steps=1, rel_step_size=0.0, seed=3)  # its random start, rounded
    out = attack.run(classifier, wavs, None)
    start = start_attack.run(classifier, wavs, None)
    with torch.no_grad():
        clean = attack.labels(classifier(quantize_pcm16(wavs))[0], None)
        kl_start, kl_end = (attack.loss(classifier(w)[0], clean) for w in (start.wavs, out.wavs))
    assert (kl_end > kl_start).all()
    assert (out.snr_db >= 30.0).all()


@pytest.mark.parametrize("model", sorted(YAML_FILES))
def test_the_yaml_files_train_against_the_suites_smallest_waveform_budget(waveform_hparams, model):
    """40 dB SNR, PGD (KL-PGD for TRADES) with 5 steps, the suite's waveform attack at 40 dB among the
    evaluations; the paper's report is FGSM on the features, or on the samples for a model that takes them."""
    report_attack = {"cnn4": FGSM, "wav2vec2": WaveformPGD}[model]
    for kind, attack_class in (("vanilla", WaveformPGD), ("similarity", WaveformPGD), ("trades", WaveformKLPGD)):
        hparams = waveform_hparams(kind, model)
        attack = hparams["training_attack"]
        assert type(attack) is attack_class and hparams["training_snr_db"] == attack.eps == SNR_DB
        assert (attack.norm, attack.steps, attack.random_start) == ("snr", 5, True)
        assert hparams["training_step"].attack is attack and type(hparams["attack"]) is report_attack
        assert any(a.threat_model == "waveform_snr" for a in hparams["attack_suite"])


def test_a_training_batch_goes_through_wav_augment_and_the_attack_perturbs_what_it_made(waveform_hparams, monkeypatch):
    """``cnn4_waveform_trades_rooms.yaml``: each step's batch is its real audio and the same audio recorded in a
    training room (SpeechBrain's ``Augmenter``, ``concat_original``), labels and utterance IDs replicated to
    match; the training attack then perturbs both halves, the recordings as recorded."""
    from ser_adv_brain.audio.rooms import RoomAugmentation

    hparams = waveform_hparams("trades_rooms", n_training_rooms=2, warmup_steps=0)
    brain, _, batch = build(hparams)
    clean, targets, ids = batch.sig.data.clone(), brain.targets(batch).clone(), list(batch.id)
    recorded, record = [], RoomAugmentation.forward
    monkeypatch.setattr(
        RoomAugmentation, "forward", lambda self, *a, **k: recorded.append(record(self, *a, **k)) or recorded[-1]
    )
    calls = spy_on_attack(hparams["training_attack"], monkeypatch)
    assert torch.isfinite(brain.fit_batch(batch))
    (call,), (in_rooms,), n = calls, recorded, len(clean)
    assert torch.equal(call["inputs"][:n], clean)
    assert torch.equal(call["inputs"][n:], in_rooms) and not torch.allclose(in_rooms, clean)
    assert torch.equal(brain.targets(batch), targets.repeat(2)) and batch.id == ids * 2

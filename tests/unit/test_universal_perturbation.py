"""The universal perturbation: its budget after 16-bit rounding, the realised SNR, what it finds on hand-built
models, learning from the training batches alone, its cache, and its group in the suite's report and checks."""

import math

import pytest
import soundfile
import torch
from helpers import load_hparams, markdown_rows, tiny
from test_brain import build

from ser_adv_brain.attacks import UniversalPerturbation, WaveformPGD
from ser_adv_brain.attacks.universal_perturbation import LearntPerturbation
from ser_adv_brain.audio.pcm import quantize_pcm16
from ser_adv_brain.evaluation.masking import masking_report, universal_check_plan
from ser_adv_brain.evaluation.suite import SplitOutcomes, suite_entries, suite_plan
from ser_adv_brain.evaluation.universal import cache_tag, learn_all, learnt_perturbation
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.models import CNN4, WaveformClassifier
from ser_adv_brain.reports.suite_report import write_suite_report

LENGTH = 512


def unit(seed):
    direction = torch.randn(LENGTH, generator=torch.Generator().manual_seed(seed))
    return direction / direction.norm()


class Directions(torch.nn.Module):
    """Class 0 unless the input reaches far enough along a direction: ``logits = [0, 10 (x . u_k - t_k)]``.

    Every input below has ``x . u_k = -0.1``: only a perturbation with ``v . u_k > t_k + 0.1`` moves it to
    class k, the same shift for every input, which a random ``v`` of the budget's norm comes nowhere near."""

    def __init__(self, directions, thresholds):
        super().__init__()
        self.directions, self.thresholds, self.calls = torch.stack(directions), torch.tensor(thresholds), 0

    def forward(self, wavs):
        self.calls += len(wavs)
        reach = wavs[:, :LENGTH] @ self.directions.T
        return torch.cat([torch.zeros(len(wavs), 1), 10.0 * (reach - self.thresholds)], dim=1), reach


def inputs(n, seed, directions, loudness=0.1):
    """``n`` waveforms of ``LENGTH`` samples with ``x . u = -0.1`` along every direction (orthogonal ones)."""
    noise = loudness * torch.randn(n, LENGTH, generator=torch.Generator().manual_seed(seed))
    for u in directions:
        noise = noise - (noise @ u)[:, None] * u - 0.1 * u
    return noise


def batches_of(wavs, prefix="train", size=4, wav_lens=None):
    """The ``batches`` callable ``learn`` takes: ``(ids, wavs, wav_lens, targets)``, all of class 0."""
    ids = [f"{prefix}{i:02d}" for i in range(len(wavs))]
    labels = torch.zeros(len(wavs), dtype=torch.long)
    lens = [None if wav_lens is None else wav_lens[i : i + size] for i in range(0, len(wavs), size)]
    return lambda: [
        (ids[i : i + size], wavs[i : i + size], lens[i // size], labels[i : i + size])
        for i in range(0, len(wavs), size)
    ]


def orthogonal(*seeds):
    first = unit(seeds[0])
    rest = [u - (u @ first) * first for u in map(unit, seeds[1:])]
    return [first, *(u / u.norm() for u in rest)]


# At 0 dB below the median training utterance, the ball's radius is about 0.1 sqrt(LENGTH) = 2.3: room for
# v . u = 1.2 along one direction, where a random v of that norm reaches about 2.3 / sqrt(LENGTH) = 0.1.
BUDGET = 0.0


# At 70 dB, v is about one 16-bit step: rounding it to the nearest step would add quantisation noise and leave
# the budget; rounding towards zero cannot.
@pytest.mark.parametrize("eps", [20.0, 70.0])
def test_v_stays_within_its_budget_after_16_bit_rounding(eps):
    [u] = orthogonal(0)
    loudness = torch.linspace(0.5, 2.0, 12)[:, None]  # utterances of different loudness
    wavs = torch.cat([inputs(12, 1, [u]) * loudness, 9.0 * torch.ones(12, 100)], dim=1)  # loud padding after each
    wav_lens = torch.full((12,), LENGTH / wavs.shape[1])
    learnt = UniversalPerturbation(eps=eps, epochs=2).learn(Directions([u], [1.0]), batches_of(wavs, wav_lens=wav_lens))
    v = learnt.perturbation.double()
    assert torch.equal(v * 32768, (v * 32768).round())  # on the 16-bit grid
    per_utterance_rms = quantize_pcm16(wavs[:, :LENGTH]).double().pow(2).mean(dim=1).sqrt()
    assert learnt.reference_rms == pytest.approx(float(per_utterance_rms.median()), rel=1e-9)  # real samples only
    level = 20 * math.log10(learnt.reference_rms / float(v.pow(2).mean().sqrt()))
    assert level >= eps
    assert eps == 70.0 or level < eps + 0.5  # most of the budget used, where rounding takes little of it
    assert len(v) == LENGTH  # the longest training utterance, padding left out


def test_realised_snr_is_per_utterance_with_v_tiled_cropped_and_off_the_padding():
    [u] = orthogonal(0)
    attack = UniversalPerturbation(eps=10.0, epochs=1)
    learnt = attack.learn(Directions([u], [1.0]), batches_of(inputs(8, 1, [u])))
    v = learnt.perturbation
    generator = torch.Generator().manual_seed(2)
    wavs = 0.05 * torch.randn(3, 3 * LENGTH + 100, generator=generator) * torch.tensor([[0.5], [1.0], [3.0]])
    wav_lens = torch.tensor([1.0, LENGTH / wavs.shape[1], 200 / wavs.shape[1]])  # tiled; exactly v; cropped
    out = attack.run(None, wavs, None, wav_lens=wav_lens)
    clean = quantize_pcm16(wavs)
    for i, real in enumerate([wavs.shape[1], LENGTH, 200]):
        expected = v.repeat(4)[:real]
        assert torch.equal(out.wavs[i, :real] - clean[i, :real], expected), i
        assert torch.equal(out.wavs[i, real:], clean[i, real:]), i  # the padding is left alone
        signal, noise = clean[i, :real].double().pow(2).sum(), expected.double().pow(2).sum()
        assert float(out.snr_db[i]) == pytest.approx(float(10 * torch.log10(signal / noise)), rel=1e-12)
    # Over exactly one v, the SNR is the budget shifted by the utterance's level against the reference.
    own_level = 20 * math.log10(float(clean[1, :LENGTH].double().pow(2).mean().sqrt()) / learnt.reference_rms)
    assert float(out.snr_db[1]) == pytest.approx(10.0 + own_level, abs=0.2)
    assert float(out.snr_db[1]) >= 10.0 + own_level


def test_it_finds_the_one_direction_that_fools_every_input():
    [u] = orthogonal(0)
    model = Directions([u], [1.0])
    train, test = inputs(16, 1, [u]), inputs(16, 2, [u])
    radius = float(quantize_pcm16(train).pow(2).mean(dim=1).sqrt().median()) * math.sqrt(LENGTH)
    assert radius > 1.5 * 1.1  # the ball holds the direction with room to spare
    attack = UniversalPerturbation(eps=BUDGET, epochs=3, label_source="predicted")
    learnt = attack.learn(model, batches_of(train))
    assert float(learnt.perturbation @ u) > 1.1  # it found the direction
    logits, _ = model(attack.run(model, test, None).wavs)
    assert (logits.argmax(dim=1) == 1).all()  # every held-out input fooled


def test_targeted_mode_pushes_every_input_to_the_target():
    easy, hard = orthogonal(0, 1)
    model = Directions([easy, hard], [0.5, 1.5])  # class 1 is the easier way off class 0
    train, test = inputs(16, 1, [easy, hard]), inputs(16, 2, [easy, hard])
    targeted = UniversalPerturbation(
        eps=BUDGET, epochs=3, target_class="fear", class_names=["neutral", "anger", "fear"]
    )
    targeted.learn(model, batches_of(train))
    assert targeted.name == "Universal-T (fear)"
    logits, _ = model(targeted.run(model, test, None).wavs)
    assert (logits.argmax(dim=1) == 2).all()
    untargeted = UniversalPerturbation(eps=BUDGET, epochs=3)
    untargeted.learn(model, batches_of(train))
    logits, _ = model(untargeted.run(model, test, None).wavs)
    assert (logits.argmax(dim=1) == 1).all()  # untargeted, it takes the easier way


def test_it_learns_from_the_training_batches_alone_and_never_while_attacking():
    [u] = orthogonal(0)
    model = Directions([u], [1.0])
    attack = UniversalPerturbation(eps=10.0, epochs=2)
    test = inputs(4, 2, [u])
    with pytest.raises(ValueError, match="call learn on the training split first"):
        attack.run(model, test, None)
    learnt = attack.learn(model, batches_of(inputs(6, 1, [u]), prefix="train"))
    assert learnt.training_ids == tuple(f"train{i:02d}" for i in range(6))
    assert learnt.passes == 2 * 6 and model.calls == 2 * 6 * 2  # per pass: the clean prediction and the step
    attack.run(model, test, None)
    assert model.calls == 2 * 6 * 2  # attacking runs no model: v is fixed once learnt


def test_learning_leaves_the_global_random_stream_alone_and_depends_on_its_budget_and_seed_only():
    [u] = orthogonal(0)
    batches = batches_of(inputs(6, 1, [u]))
    state = torch.random.get_rng_state()
    first = UniversalPerturbation(eps=10.0, epochs=1, seed=3).learn(Directions([u], [1.0]), batches)
    assert torch.equal(torch.random.get_rng_state(), state)
    after_another = UniversalPerturbation(eps=10.0, epochs=1, seed=3)
    after_another.learn(Directions([u], [1.0]), batches, eps=20.0)  # a cache may hold one budget and not the other
    assert torch.equal(after_another.learn(Directions([u], [1.0]), batches).perturbation, first.perturbation)


def test_utterances_already_fooled_do_not_pull_v():
    """The loss of the utterances not yet fooled only, as the paper's algorithm moves v for those only. Half the
    training utterances reach along ``away`` into class 2 already; their loss would pull v along ``away`` ten
    times as hard as the others' pulls it along ``into`` (their way to class 1)."""
    into, away = orthogonal(0, 1)
    model = Directions([into, away], [1.0, 0.0])
    fooled, correct = inputs(4, 1, [into, away]) + 0.6 * away, inputs(4, 2, [into, away]) - 4.9 * away
    wavs = torch.stack([fooled, correct], dim=1).flatten(0, 1)  # every batch holds both
    learnt = UniversalPerturbation(eps=BUDGET, epochs=3, label_source="target").learn(model, batches_of(wavs))
    assert float(learnt.perturbation @ into) > 1.1 and abs(float(learnt.perturbation @ away)) < 0.5


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_learning_leaves_the_model_as_it_found_it(mode):
    """Modes, batch-norm statistics and parameter gradients, as every attack leaves them (``attacks.base``)."""
    torch.manual_seed(0)
    model = CNN4(n_classes=4, base_channels=2).train()
    model(torch.randn(8, 24, 20))  # batch-norm statistics that a training-mode pass would move
    compute_features, normalizer = LogMel(n_mels=20), FeatureNormalizer(20)
    wavs = 0.1 * torch.randn(4, 23 * 256)
    normalizer.fit([compute_features(wavs)])
    classifier = WaveformClassifier(compute_features, normalizer, model)
    state = {key: value.clone() for key, value in classifier.state_dict().items()}
    batch = (["a", "b", "c", "d"], wavs, None, torch.tensor([0, 1, 2, 3]))
    UniversalPerturbation(eps=20.0, epochs=2, model_mode=mode).learn(classifier, lambda: [batch])
    assert all(module.training for module in classifier.modules())
    assert all(torch.equal(value, state[key]) for key, value in classifier.state_dict().items())
    assert all(p.grad is None for p in classifier.parameters())


def test_the_fooled_share_is_the_last_passs_and_a_batch_all_fooled_stops_no_other():
    """A batch already fooled takes no step, and the batches after it still do; the fooled share counts every
    training utterance of the last pass, including a lone one."""
    [u] = orthogonal(0)
    model = Directions([u], [1.0])
    fooled, foolable, out_of_reach = inputs(4, 1, [u]) + 1.2 * u, inputs(4, 2, [u]), inputs(4, 3, [u]) - 9.0 * u
    batches = batches_of(torch.cat([fooled, foolable, out_of_reach]))  # in this order, one batch each
    learnt = UniversalPerturbation(eps=BUDGET, epochs=8, label_source="target").learn(model, batches)
    assert float(learnt.perturbation @ u) > 1.1  # learnt from the batch after the fooled one
    assert learnt.fooled_share == pytest.approx(8 / 12)
    lone = UniversalPerturbation(eps=BUDGET, epochs=1, label_source="target").learn(model, batches_of(fooled[:1]))
    assert lone.fooled_share == 1.0


class Centred(torch.nn.Module):
    """Class 0 the surer the farther the input is from ``centre``: ``logits = [|x - centre|^2, 0]``. Its loss
    for class 0 falls as ``v`` grows, so each step points straight back towards ``v = 0``."""

    def __init__(self, centre):
        super().__init__()
        self.centre = centre

    def forward(self, wavs):
        distance = (wavs - self.centre).pow(2).sum(dim=1, keepdim=True)
        return torch.cat([distance, torch.zeros_like(distance)], dim=1), distance


def test_a_step_that_lands_inside_the_ball_stays_there():
    """The projection moves only what leaves the ball: from the random start on the sphere, one step of a
    quarter of the radius straight inwards ends at three quarters of the radius (2.5 dB further below the
    reference), not back on the sphere."""
    [u] = orthogonal(0)
    clean = quantize_pcm16(inputs(1, 1, [u]))
    attack = UniversalPerturbation(eps=10.0, epochs=1, rel_step_size=0.25, label_source="target")
    learnt = attack.learn(Centred(clean), batches_of(clean))
    level = 20 * math.log10(learnt.reference_rms / float(learnt.perturbation.double().pow(2).mean().sqrt()))
    assert level == pytest.approx(10.0 + 20 * math.log10(4 / 3), abs=0.05)


class Recording(Directions):
    """``Directions`` keeping the largest magnitude it heard past ``LENGTH`` samples (the padding below)."""

    padding = 0.0

    def forward(self, wavs):
        self.padding = max(self.padding, float(wavs[:, LENGTH:].detach().abs().max()))
        return super().forward(wavs)


def test_learning_leaves_the_padding_silent():
    [u] = orthogonal(0)
    model = Recording([u], [1.0])
    wavs = torch.cat([inputs(8, 1, [u]), torch.zeros(8, 100)], dim=1)
    wav_lens = torch.full((8,), LENGTH / wavs.shape[1])
    learnt = UniversalPerturbation(eps=BUDGET, epochs=2, length=wavs.shape[1]).learn(
        model, batches_of(wavs, wav_lens=wav_lens)
    )
    assert model.padding == 0.0 and learnt.perturbation[LENGTH:].abs().sum() > 0  # v reaches there, unheard


def test_it_learns_and_attacks_at_a_budget_other_than_its_own():
    [u] = orthogonal(0)
    attack = UniversalPerturbation(eps=40.0, epochs=1)
    learnt = attack.learn(Directions([u], [1.0]), batches_of(inputs(6, 1, [u])), eps=10.0)
    assert learnt.budget == 10.0 and list(attack.learnt) == [10.0]
    level = 20 * math.log10(learnt.reference_rms / float(learnt.perturbation.double().pow(2).mean().sqrt()))
    assert 10.0 <= level < 10.5
    out = attack.run(None, inputs(2, 2, [u]), None, eps=10.0)
    assert torch.equal(out.wavs - quantize_pcm16(inputs(2, 2, [u])), learnt.perturbation.expand(2, -1))


def test_the_random_start_is_drawn_from_the_seed_and_the_budget():
    """With no step (``rel_step_size=0``) v is its random start: the same for the same seed and budget, another
    for another seed, and another direction (not the same one scaled) for another budget."""
    [u] = orthogonal(0)
    batches = batches_of(inputs(6, 1, [u]))

    def start(seed, eps):
        attack = UniversalPerturbation(eps=eps, epochs=1, rel_step_size=0.0, seed=seed)
        return attack.learn(Directions([u], [1.0]), batches).perturbation.double()

    def cosine(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    assert torch.equal(start(3, 10.0), start(3, 10.0))
    assert abs(cosine(start(3, 10.0), start(4, 10.0))) < 0.5
    assert abs(cosine(start(3, 10.0), start(3, 20.0))) < 0.5


def test_the_true_labels_or_the_clean_predictions_are_attacked():
    """A model that says class 0 whatever it hears, and every label 1: attacking the true labels, every utterance
    is wrong before any step (fooled share 1); attacking the clean predictions, none is ever fooled."""
    [u] = orthogonal(0)
    wavs = inputs(8, 1, [u])
    ids = [f"train{i:02d}" for i in range(8)]

    def batches():
        return [(ids, wavs, None, torch.ones(8, dtype=torch.long))]

    def share_and_calls(label_source):
        attack, model = UniversalPerturbation(eps=BUDGET, epochs=1, label_source=label_source), Directions([u], [100.0])
        return attack.learn(model, batches).fooled_share, model.calls

    # The true labels need no clean prediction: one pass through the model per utterance, not two.
    assert share_and_calls("target") == (1.0, 8) and share_and_calls("predicted") == (0.0, 16)


def test_the_sum_is_clipped_to_the_16_bit_rails():
    attack = UniversalPerturbation(eps=10.0)
    v = torch.tensor([0.25, -0.25])
    attack.use(LearntPerturbation(v, 10.0, 1.0, ("a",), 0.0, 1))
    wavs = torch.tensor([[0.9, -0.9, 0.5, -0.5]])
    out = attack.run(None, wavs, None)
    assert out.wavs.tolist() == [[32767 / 32768, -1.0, 0.75, -0.75]]


def test_at_inf_db_v_is_silence():
    [u] = orthogonal(0)
    attack = UniversalPerturbation(eps=math.inf, epochs=1)
    learnt = attack.learn(Directions([u], [1.0]), batches_of(inputs(6, 1, [u])))
    assert not learnt.perturbation.any()
    assert torch.equal(attack.run(None, inputs(2, 2, [u]), None).wavs, quantize_pcm16(inputs(2, 2, [u])))


def test_the_reference_level_is_the_median_utterances_rms_without_lengths_too():
    [u] = orthogonal(0)
    wavs = inputs(5, 1, [u]) * torch.tensor([[0.5], [1.0], [2.0], [3.0], [4.0]])
    learnt = UniversalPerturbation(eps=20.0, epochs=1).learn(Directions([u], [1.0]), batches_of(wavs))
    assert learnt.reference_rms == pytest.approx(float(quantize_pcm16(wavs[2]).double().pow(2).mean().sqrt()))


def test_the_repr_gives_every_setting():
    attack = UniversalPerturbation(
        eps=30.0,
        epochs=2,
        rel_step_size=0.2,
        length=100,
        seed=3,
        label_source="target",
        model_mode="train",
        target_class="fear",
        class_names=["neutral", "anger", "fear"],
    )
    assert repr(attack) == (
        "UniversalPerturbation(eps=30.0, eta=None, label_source='target', model_mode='train', target_class='fear', "
        "epochs=2, rel_step_size=0.2, length=100, seed=3)"
    )


@pytest.mark.parametrize(
    "kwargs, culprit",
    [
        (dict(eps=float("nan")), "eps"),
        (dict(eps=-math.inf), "eps"),
        (dict(eps=20.0, epochs=0), "epochs"),
        (dict(eps=20.0, length=0), "length"),
        (dict(eps=20.0, rel_step_size=-1.0), "rel_step_size"),
        (dict(eps=20.0, target_class="least_likely"), "target_class"),
    ],
)
def test_invalid_options_are_named(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        UniversalPerturbation(**kwargs)


def identity(attack, budget=10.0):
    from ser_adv_brain.evaluation.universal import identity_of

    return identity_of(attack, budget, ["CKPT+2026", 1.0], "rows-digest")


def test_the_cache_is_reused_for_the_same_identity_and_the_wav_holds_v(tmp_path):
    [u] = orthogonal(0)
    model, batches = Directions([u], [1.0]), batches_of(inputs(6, 1, [u]))
    attack = UniversalPerturbation(eps=10.0, epochs=1)
    first = learnt_perturbation(attack, model, batches, 10.0, str(tmp_path), identity(attack), 16000)
    calls = model.calls
    again = UniversalPerturbation(eps=10.0, epochs=1)
    second = learnt_perturbation(again, model, batches, 10.0, str(tmp_path), identity(again), 16000)
    assert model.calls == calls  # read back, not learnt again
    assert torch.equal(second.perturbation, first.perturbation) and second.training_ids == first.training_ids
    assert torch.equal(again.learnt[10.0].perturbation, first.perturbation)
    audio, rate = soundfile.read(tmp_path / f"{cache_tag(identity(attack))}.wav", dtype="float32")
    assert rate == 16000 and torch.equal(torch.from_numpy(audio), first.perturbation)
    other_seed = UniversalPerturbation(eps=10.0, epochs=1, seed=1)
    learnt_perturbation(other_seed, model, batches, 10.0, str(tmp_path), identity(other_seed), 16000)
    assert model.calls > calls  # another identity: learnt
    assert identity(attack, 20.0) != identity(attack) and cache_tag(identity(attack, 20.0)) != cache_tag(
        identity(attack)
    )


def test_the_suite_learns_v_on_a_model_that_takes_the_waveform(tiny_manifests, tmp_path):
    """The suite's learning attacks the Brain's waveform model: for a self-supervised model, the bare model
    itself (it has no log-Mel features to go through)."""
    name = "recipes/EmoDB/hparams/wav2vec2_single.yaml"
    manifests = {f"{split}_annotation": path for split, path in tiny_manifests.items()}
    folder = {"data_folder": str(tmp_path), "output_folder": str(tmp_path / "run")}
    brain, datasets, _ = build(load_hparams(name, **tiny(name), **manifests, **folder))
    brain.checkpointer.save_checkpoint()
    attack = UniversalPerturbation(eps=30.0, epochs=1, label_source="target")
    (entry,) = suite_entries([attack])
    learn_all(brain, [(30.0, entry)], datasets["train"], {"batch_size": 4}, None, str(tmp_path / "v"))
    learnt = attack.learnt[30.0]
    assert sorted(learnt.training_ids) == sorted(datasets["train"].data_ids) and learnt.perturbation.abs().sum() > 0


UNIVERSAL = ("waveform_universal", 30.0, "Universal")
PGD = ("waveform_snr", 30.0, "WaveformPGD")


def outcomes(universal_snr):
    """Four utterances, all correct on real data. Waveform PGD at 30 dB SNR fools a; the universal perturbation
    at 30 dB below the reference fools a too (at 33 dB), b (at its realised SNR ``universal_snr``) and c (at 25 dB)."""
    split = SplitOutcomes([PGD, UNIVERSAL], n_classes=2)
    nan = float("nan")
    details = {
        "queries": {PGD: torch.full((4,), nan), UNIVERSAL: torch.full((4,), nan)},
        "snr_db": {
            PGD: torch.tensor([30.5, 30.1, 30.2, 30.3], dtype=torch.float64),
            UNIVERSAL: torch.tensor([33.0, universal_snr, 25.0, 31.0], dtype=torch.float64),
        },
    }
    predictions = {PGD: torch.tensor([1, 0, 1, 1]), UNIVERSAL: torch.tensor([1, 1, 0, 1])}
    labels = torch.tensor([0, 0, 1, 1])
    split.append(["a", "b", "c", "d"], labels, labels, torch.ones(4, dtype=torch.bool), predictions, details)
    return split.gather()


def plan():
    entries = suite_entries([WaveformPGD(eps=30.0, steps=1), UniversalPerturbation(eps=30.0)])
    return suite_plan(entries, {"waveform_snr": [30.0], "waveform_universal": [30.0]})


def test_the_report_gives_the_universal_threat_model_its_own_robust_uar(tmp_path):
    split = outcomes(universal_snr=34.0)
    write_suite_report({"test": split}, plan(), [], str(tmp_path), "suite", early_exit=False)
    report = (tmp_path / "robustness.md").read_text(encoding="utf-8")
    rows = markdown_rows(report)
    assert ["attack", "universal dB 30"] in rows
    assert ["Universal", "0.250"] in rows and ["WaveformPGD", "0.750"] in rows
    # Robust UAR per group: the worst case of each group alone (together they would fool a, b and c).
    assert rows.count(["**robust UAR**", "0.250"]) == 1 and rows.count(["**robust UAR**", "0.750"]) == 1
    assert ["test", "Universal", "30 dB below the reference level (universal, on the waveform)", "4", "25.00"] == rows[
        [r[:2] for r in rows].index(["test", "Universal"])
    ][:5]


def test_masking_check_fires_when_the_universal_perturbation_beats_the_per_utterance_attack():
    # b: fooled by v at 34 dB, within the 30 dB ball where PGD left it correct: the per-utterance attack missed it.
    fired = masking_report({"test": outcomes(universal_snr=34.0)}, plan())
    assert "the per-utterance attacks do not find what one perturbation for all utterances finds" in fired
    # At 29 dB, v on b is outside PGD's 30 dB ball (c's 25 dB is too), and PGD fooled a itself: nothing fires.
    quiet = masking_report({"test": outcomes(universal_snr=29.0)}, plan())
    assert "do not find what one perturbation" not in quiet
    assert (
        "No universal perturbation fooled an utterance that the per-utterance waveform attacks (WaveformPGD)" in quiet
    )
    alone = suite_plan(suite_entries([UniversalPerturbation(eps=30.0)]), {"waveform_universal": [30.0]})
    alone_report = masking_report({"test": outcomes(34.0)}, alone)
    assert "Not checked: universal perturbations" in alone_report
    assert "Not checked: a destroying budget on the features or the per-utterance SNR" in alone_report


def test_a_suite_without_per_utterance_snr_attacks_checks_its_universal_perturbations_with_the_quick_tiers():
    """The audio tier has no attack under the per-utterance SNR budget (the standard tier's): the universal check
    then runs the quick tier's waveform PGD at the universal budgets, as check groups of no robust UAR."""
    alone = suite_plan(suite_entries([UniversalPerturbation(eps=30.0)]), {"waveform_universal": [20.0, 30.0]})
    checks = universal_check_plan(alone)
    assert [(group, budget, [e.name for e in entries]) for group, budget, entries in checks] == [
        ("waveform_snr", 30.0, ["WaveformPGD-10"]),
        ("waveform_snr", 20.0, ["WaveformPGD-10"]),
    ]
    assert universal_check_plan(plan()) == []  # the suite's own per-utterance attacks check it
    without_universal = suite_plan(suite_entries([WaveformPGD(eps=30.0)]), {"waveform_snr": [30.0]})
    assert universal_check_plan(without_universal) == []


def test_entries_of_the_suite_are_named_for_their_target_and_run_from_the_smallest_ball():
    entries = suite_entries(
        [UniversalPerturbation(eps=30.0), UniversalPerturbation(eps=30.0, target_class=2, class_names=["a", "b", "c"])]
    )
    assert [(e.name, e.threat_model) for e in entries] == [
        ("Universal", "waveform_universal"),
        ("Universal-T (c)", "waveform_universal"),
    ]
    plan = suite_plan(entries, {"waveform_universal": [20.0, 40.0, 30.0]})
    assert [budget for _, budget, _ in plan] == [40.0, 30.0, 20.0]  # dB below the reference: 40 is the smallest

"""Randomised smoothing (``evaluation.smoothing``, ``evaluation.certification``): the bound, the radius, the
abstentions, certified UAR, keyed noise, the training noise and the interface, on hand-built classifiers."""

import math

import pytest
import scipy.stats
import speechbrain as sb
import torch
import torch.nn.functional as F
from helpers import KilledAfter, RecipeBrain, entry_hparams, load_hparams, tiny
from speechbrain.dataio.dataloader import make_dataloader
from speechbrain.dataio.encoder import CategoricalEncoder
from test_brain import RUN_OPTS, build
from test_training_steps import batches_tracked

from ser_adv_brain.attacks import APGD, FGSM, WaveformAPGD
from ser_adv_brain.audio import GaussianWaveformNoise
from ser_adv_brain.data.dataio import dataio_prep, manifests_of
from ser_adv_brain.data.validation import hyperparameter_problems
from ser_adv_brain.evaluation import certification as certification_module
from ser_adv_brain.evaluation import smoothing as smoothing_module
from ser_adv_brain.evaluation.certification import SplitCertificates, attack_smoothed, certify_split
from ser_adv_brain.evaluation.progress import BatchProgress
from ser_adv_brain.evaluation.smoothing import ABSTAIN, RandomizedSmoothing, clopper_pearson_lower
from ser_adv_brain.evaluation.suite import DETAILS, AttackKey, SplitOutcomes, suite_entries, suite_plan
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.interface import EmotionRecognizer
from ser_adv_brain.reports.benchmark_report import figure_columns, figures
from ser_adv_brain.reports.certification_report import curve_rows, moved_to_another_emotion
from ser_adv_brain.reports.entry import make_certified_entry
from ser_adv_brain.training.brain import build_brain
from ser_adv_brain.training.checkpoints import selection_key
from ser_adv_brain.training_steps import CleanStep


class LinearRule(torch.nn.Module):
    """Class 1 where ``w . x > 0``, class 0 elsewhere, ``|w|_2 = 1``: ``P(f(x + d) = 1) = Phi(w . x / sigma)``,
    and the smoothed classifier is the rule itself, whose exact robust radius at ``x`` is ``|w . x|``."""

    def __init__(self, direction):
        super().__init__()
        self.register_buffer("w", direction / direction.norm())

    def forward(self, inputs):
        score = inputs.flatten(1) @ self.w.flatten()
        return torch.stack([-score, score], dim=1), None


@pytest.mark.parametrize("successes, trials", [(0, 50), (1, 50), (37, 50), (50, 50), (612, 1000), (1000, 1000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_the_bound_is_the_one_sided_clopper_pearson_interval(successes, trials, alpha):
    bound = float(clopper_pearson_lower(successes, trials, alpha))
    test = scipy.stats.binomtest(successes, trials, alternative="greater")
    assert bound == pytest.approx(test.proportion_ci(confidence_level=1 - alpha, method="exact").low, abs=1e-12)
    if successes == trials:  # by hand: P(all n succeed) = p^n = alpha at the bound
        assert bound == pytest.approx(alpha ** (1 / trials), rel=1e-12)


@pytest.mark.parametrize("margin", [0.25, 0.5, 1.0])
def test_the_radius_is_sigma_phi_inverse_of_the_bound_and_stays_within_a_linear_rules_margin(margin):
    """Certify a point at distance ``margin`` from a linear rule's boundary, in 6 dimensions: the radius is
    ``sigma * PhiInverse(pA)``, ``pA`` the bound on the votes, never more than the margin (the rule's exact
    robust radius) and, with 20,000 votes, within 0.05 of it (the bound's slack is at most 0.03 here)."""
    sigma, direction = 0.5, torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    x = (margin * direction / direction.norm()).unsqueeze(0)
    smoothing = RandomizedSmoothing(sigma=sigma, domain="features", n0=100, n=20000, batch_size=5000)
    rule = LinearRule(direction)
    certificate = smoothing.certify(rule, x, keys=["u"])
    votes = smoothing.vote_counts(rule, x, smoothing.n, keys=["u"], stream=smoothing_module.ESTIMATION)[0, 1]
    p_lower = float(clopper_pearson_lower(votes, smoothing.n, smoothing.alpha))
    assert int(certificate.prediction) == 1 and float(certificate.p_lower) == pytest.approx(p_lower, abs=1e-12)
    assert float(certificate.radius) == pytest.approx(sigma * scipy.stats.norm.ppf(p_lower), rel=1e-9)
    assert p_lower < scipy.stats.norm.cdf(margin / sigma)  # the bound is below the true vote probability
    assert margin - 0.05 < float(certificate.radius) <= margin


def test_certify_and_predict_abstain_on_a_tied_vote():
    """On the boundary of a linear rule the vote is 1/2 each way: no class is certified, PREDICT abstains."""
    smoothing = RandomizedSmoothing(sigma=1.0, domain="features", n0=50, n=2000)
    rule, x = LinearRule(torch.tensor([1.0, 1.0])), torch.zeros(3, 2)
    certificate = smoothing.certify(rule, x, keys=["a", "b", "c"])
    assert certificate.prediction.tolist() == [ABSTAIN] * 3 and certificate.radius.tolist() == [0.0] * 3
    assert smoothing.predict(rule, x, keys=["a", "b", "c"]).prediction.tolist() == [ABSTAIN] * 3


def test_certify_abstains_when_the_bound_is_exactly_one_half(monkeypatch):
    """``pA > 1/2`` is needed: at ``pA = 1/2`` the radius would be 0 and the class not certified."""
    monkeypatch.setattr(smoothing_module, "clopper_pearson_lower", lambda k, n, alpha: torch.full((len(k),), 0.5))
    smoothing = RandomizedSmoothing(sigma=1.0, domain="features", n0=10, n=10)
    certificate = smoothing.certify(LinearRule(torch.tensor([1.0])), torch.tensor([[3.0]]), keys=["a"])
    assert certificate.prediction.tolist() == [ABSTAIN] and certificate.radius.tolist() == [0.0]


def hand_certificates(prediction, radius, targets):
    n = len(targets)
    return SplitCertificates(
        ids=[f"u{i}" for i in range(n)],
        targets=torch.tensor(targets),
        prediction=torch.tensor(prediction),
        p_lower=torch.full((n,), 0.9, dtype=torch.float64),
        radius=torch.tensor(radius, dtype=torch.float64),
        signal_norm=torch.full((n,), 10.0, dtype=torch.float64),
        dims=100,
        n_classes=2,
    )


def test_certified_uar_counts_an_abstention_as_wrong_at_every_radius():
    # Class 0: one certified at radius 1, one abstention; class 1: certified at radius 0.5 and 2.
    certs = hand_certificates([0, ABSTAIN, 1, 1], [1.0, 0.0, 0.5, 2.0], [0, 0, 1, 1])
    assert certs.uar(0.0) == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert certs.uar(1.0) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert certs.uar(1.5) == pytest.approx((0 + 1 / 2) / 2)
    # The same on the budgets: 20 dB SNR of |x| = 10 is radius 1; Linf eps 0.1 over 100 values is L2 radius 1.
    assert certs.uar_within("waveform_snr", 20.0) == certs.uar_within("features_linf", 0.1) == certs.uar(1.0)
    curve = {(r["axis"], r["value"]): r["certified_UAR"] for r in curve_rows({"test": certs}, smoothing(), {})}
    assert curve[("radius", 0.0)] == curve[("radius", 1.0)] + 0.25 == 0.75


def smoothing():
    return RandomizedSmoothing(sigma=1.0, domain="waveform", n0=5, n=20)


class ThreeLines(torch.nn.Module):
    """Three classes, each a fixed random linear score of the features."""

    def __init__(self, size):
        super().__init__()
        self.register_buffer("w", torch.randn(size, 3, generator=torch.Generator().manual_seed(1)))

    def forward(self, feats):
        return feats.flatten(1) @ self.w, None


def test_an_utterances_certificate_does_not_depend_on_its_batch():
    torch.manual_seed(0)
    model = ThreeLines(15 * 7)  # 105 values a copy: torch draws normals 16 at a time
    feats, targets = torch.randn(4, 15, 7), torch.tensor([0, 1, 2, 0])
    ids = ["a", "b", "c", "d"]
    smoothing = RandomizedSmoothing(sigma=3.0, domain="features", n0=8, n=40, batch_size=16)
    together = certify_split(smoothing, model, [(ids, feats, targets)], n_classes=3)
    apart = certify_split(smoothing, model, [([i], feats[[k]], targets[[k]]) for k, i in enumerate(ids)][::-1], 3)
    assert together.ids == apart.ids == ids
    assert torch.equal(together.p_lower, apart.p_lower) and torch.equal(together.prediction, apart.prediction)
    assert torch.equal(together.radius, apart.radius)
    other_batches = certify_split(smoothing.with_options(batch_size=7), model, [(ids, feats, targets)], 3)
    assert torch.equal(other_batches.p_lower, together.p_lower)  # nor on the noisy copies per forward pass
    first = smoothing.predict(model, feats, keys=ids)
    assert torch.equal(first.counts[2:3], smoothing.predict(model, feats[2:3], keys=["c"]).counts)
    assert not torch.equal(first.counts[2:3], smoothing.predict(model, feats[2:3], keys=["other"]).counts)


def test_the_waveform_noise_has_sigma_whatever_the_signals_level():
    """A fixed sigma in full-scale units (SpeechBrain's AddNoise would scale it to each signal's level),
    and the padding after a signal stays silent."""
    torch.manual_seed(0)
    wavs = torch.cat([0.001 * torch.randn(1, 20000), 0.5 * torch.randn(1, 20000)])
    noisy = GaussianWaveformNoise(sigma=0.05)(wavs, torch.tensor([1.0, 0.5]))
    noise = noisy - wavs
    assert float(noise[0].std()) == pytest.approx(0.05, rel=0.03)
    assert float(noise[1, :10000].std()) == pytest.approx(0.05, rel=0.03)
    assert torch.equal(noise[1, 10000:], torch.zeros(10000))


class Tied(torch.nn.Module):
    """Two classes by the sign of a fixed projection of the features; at sigma 1e4 the vote is a coin toss."""

    def forward(self, feats):
        score = feats.flatten(1).sum(dim=1, keepdim=True)
        return torch.cat([score, -score], dim=1), None


def test_the_interface_returns_an_abstention():
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(["anger", "neutral"])
    normalizer = FeatureNormalizer(n_mels=8)
    normalizer.count.fill_(1)
    recognizer = EmotionRecognizer(
        modules={"compute_features": LogMel(n_mels=8), "normalizer": normalizer, "model": Tied()},
        hparams={
            "sample_rate": 16000,
            "n_fft": 512,
            "hop_length": 256,
            "n_frames": 16,
            "n_classes": 2,
            "max_audio_seconds": 10.0,
            "label_encoder": encoder,
            "attack": FGSM(eps=0.1),
            "smoothing": RandomizedSmoothing(sigma=1e4, domain="features", n0=20, n=400),
        },
        run_opts={"device": "cpu"},
    )
    wavs = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    out_prob, score, index, labels = recognizer.classify_batch(wavs, smoothing=True, keys=["a", "b"])
    assert index.tolist() == [ABSTAIN, ABSTAIN] and labels == ["abstain", "abstain"]
    assert torch.allclose(out_prob.exp().sum(dim=1), torch.ones(2, dtype=torch.float64))
    index, labels, radius, snr = recognizer.certify_batch(wavs, keys=["a", "b"])
    assert index.tolist() == [ABSTAIN, ABSTAIN] and labels == ["abstain", "abstain"]
    assert radius.tolist() == [0.0, 0.0] and all(math.isnan(s) for s in snr.tolist())  # no dB on the features


def attack_plan(budgets, **options):
    """APGD in L2 on the features, each gradient averaged over 4 noise draws, at ``budgets``."""
    attack = APGD(eps=1.0, steps=10, norm="l2", eot_iter=4, eta=None, label_source="target", **options)
    return suite_plan(suite_entries([attack]), {"features_l2": budgets})


def test_the_adaptive_attack_books_an_abstention_as_wrong():
    """Two points at distance 1 from a linear rule's boundary: EOT-APGD in L2 walks straight at it, so the
    smoothed classifier holds at 0.5, abstains at 1 (the point reached is on the boundary: a tied vote) and
    names the other class at 2."""
    direction = torch.tensor([1.0, 0.0, 0.0])
    rule, smoothing = LinearRule(direction), RandomizedSmoothing(sigma=0.25, domain="features", n0=20, n=400)
    x, targets = torch.tensor([[1.0, 0.0, 0.0], [1.0, 3.0, -2.0]]), torch.tensor([1, 1])
    outcomes = attack_smoothed(smoothing, rule, attack_plan([0.5, 1.0, 2.0]), [(["a", "b"], x, targets)], 2, False)
    held, tied, crossed = (outcomes.predictions[key].tolist() for key in outcomes.keys)
    assert held == [1, 1] and tied == [2, 2] and crossed == [0, 0]  # 2 = n_classes: an abstention
    assert outcomes.robust_after("features_l2", 1.0).tolist() == [False, False]
    assert moved_to_another_emotion(outcomes, "features_l2", 1.0).tolist() == [False, False]
    assert moved_to_another_emotion(outcomes, "features_l2", 2.0).tolist() == [True, True]


def test_the_adaptive_attack_on_an_utterance_does_not_depend_on_its_batch():
    """EOT-APGD on the samples against three linear scores (whose gradient's direction depends on the noise
    drawn): an utterance's realised SNR and verdict are the same alone as after another utterance."""
    wavs, base = 0.1 * torch.randn(2, 400, generator=torch.Generator().manual_seed(0)), ThreeLines(400)
    targets = base(wavs)[0].argmax(dim=1)  # the model is right on both: both are attacked
    attack = WaveformAPGD(eps=10.0, steps=3, eot_iter=2, label_source="target")
    plan = suite_plan(suite_entries([attack]), {"waveform_snr": [10.0]})

    def outcome(ids, rows):
        smoothing = RandomizedSmoothing(sigma=0.05, domain="waveform", n0=10, n=50)
        return attack_smoothed(smoothing, base, plan, [(ids, wavs[rows], targets[rows])], 3, False, draws=4)

    together, alone = outcome(["a", "b"], [0, 1]), outcome(["b"], [1])
    (key,) = together.keys
    assert math.isfinite(together.details["snr_db"][key][1])  # attacked
    assert together.details["snr_db"][key][1] == alone.details["snr_db"][key][0]
    assert together.predictions[key][1] == alone.predictions[key][0]


def test_a_certified_entry_keeps_each_certificate_and_the_adaptive_attack_and_the_benchmark_reads_them(tmp_path):
    """The certificates of ``test_certified_uar_counts_an_abstention_as_wrong_at_every_radius`` at L2 budgets .5
    and 1: certified UAR .75 and .5. PREDICT is right on all four; the adaptive attack fools nothing at .5 and
    u1 and u2 at 1 (robust UAR under it 1 and .5)."""
    certs = hand_certificates([0, ABSTAIN, 1, 1], [1.0, 0.0, 0.5, 2.0], [0, 0, 1, 1])
    plan = attack_plan([0.5, 1.0])
    keys = [AttackKey(group, budget, entry.name) for group, budget, entries in plan for entry in entries]
    attacked = SplitOutcomes(keys, n_classes=2)
    targets, nan = torch.tensor([0, 0, 1, 1]), torch.full((4,), float("nan"))
    fooled = {keys[0]: targets, keys[1]: torch.tensor([0, 1, 0, 1])}
    details = {field: {key: nan for key in keys} for field in DETAILS}
    attacked.append(certs.ids, targets, targets, torch.ones(4, dtype=torch.bool), fooled, details)
    hparams = entry_hparams(tmp_path, "cnn4_smoothing_features")
    smoothing = RandomizedSmoothing(sigma=0.5, domain="features", n0=5, n=20)
    budgets = [("features_l2", 0.5), ("features_l2", 1.0)]
    entry = make_certified_entry(
        hparams, certs, smoothing, budgets, "the policy", CleanStep(), "cpu", attacked.gather(), plan, draws=8
    )
    assert (entry["name"], entry["tier"], entry["abstained"]) == ("cnn4_smoothing_features_sigma0.5", "certified", 1)
    assert entry["certificate"] == {"n0": 5, "n": 20, "alpha": 0.001}
    assert entry["smoothing"]["policy"] == "the policy" and entry["smoothing"]["domain"] == "features"
    half, one = entry["results"]
    assert (half["robust_UAR"], half["robust_UAR_under_attack"]) == (0.75, 1.0)
    assert (one["robust_UAR"], one["robust_UAR_under_attack"], one["median_radius"]) == (0.5, 0.5, 1.0)
    u1, u2 = entry["per_utterance"][1:3]
    assert u1["certificate"] == {"prediction": None, "p_lower": 0.9, "radius": 0.0, "signal_norm": 10.0}
    assert u2["robust"] == {"features_l2@0.5": True, "features_l2@1": False}
    assert u2["under_attack"] == {"features_l2@0.5 under attack": True, "features_l2@1 under attack": False}
    # The benchmark's figures of the one entry are its own UARs, under attack included, in their own columns.
    (means,) = figures([{**entry, "path": "entry.json"}]).values()
    assert {key: value.mean for key, value in means.items()} == pytest.approx(
        {
            "real": 0.75,
            "features_l2@0.5": 0.75,
            "features_l2@1": 0.5,
            "features_l2@0.5 under attack": 1.0,
            "features_l2@1 under attack": 0.5,
        }
    )
    kinds = [kind for kind, _ in figure_columns(entry).values()]
    assert kinds == ["certified", "certified", "under attack", "under attack"]


def test_a_killed_certification_and_adaptive_attack_resume_at_the_first_batch_not_done(tmp_path, monkeypatch):
    """Both are killed after 2 of 3 batches (utterances, for the attack) and resumed: only what was not done
    is certified or attacked again, and the outcomes, cost included, are the uninterrupted run's."""
    wavs, base = 0.1 * torch.randn(6, 400, generator=torch.Generator().manual_seed(0)), ThreeLines(400)
    targets = base(wavs)[0].argmax(dim=1)
    targets[0] = (targets[0] + 1) % 3  # one utterance the early exit leaves alone
    ids = [f"u{i}" for i in range(6)]
    batches = [(ids[i : i + 2], wavs[i : i + 2], targets[i : i + 2]) for i in (0, 2, 4)]
    smoothing = RandomizedSmoothing(sigma=0.05, domain="waveform", n0=10, n=50)
    plan = suite_plan(
        suite_entries([WaveformAPGD(eps=10.0, steps=3, eot_iter=2, label_source="target")]),
        {"waveform_snr": [20.0, 10.0]},
    )
    calls = []
    certify_once, attack_once = RandomizedSmoothing.certify, certification_module.run_attack
    monkeypatch.setattr(
        RandomizedSmoothing, "certify", lambda *args, **kw: calls.append(1) or certify_once(*args, **kw)
    )
    monkeypatch.setattr(certification_module, "run_attack", lambda *args: calls.append(1) or attack_once(*args))

    def certified(progress=None):
        calls.clear()
        return certify_split(smoothing, base, batches, 3, progress)

    def attacked(progress=None):
        calls.clear()
        return attack_smoothed(smoothing, base, plan, batches, 3, True, draws=2, progress=progress)

    for run, fields in [(certified, ["prediction", "p_lower", "radius", "signal_norm"]), (attacked, ["clean"])]:
        whole, whole_calls = run(), len(calls)
        path = str(tmp_path / f"{run.__name__}_progress_test.json")
        with pytest.raises(KeyboardInterrupt):
            run(KilledAfter(path, "this run", batches=2))
        killed_calls = len(calls)
        resumed = run(BatchProgress(path, "this run"))
        assert 0 < killed_calls < whole_calls and killed_calls + len(calls) == whole_calls, run.__name__
        assert resumed.ids == whole.ids and all(torch.equal(getattr(resumed, f), getattr(whole, f)) for f in fields)
        if run is attacked:
            assert all(torch.equal(resumed.predictions[k], whole.predictions[k]) for k in whole.keys)
            assert torch.equal(resumed.gradient_ok, whole.gradient_ok)
            assert resumed.attacked_count == whole.attacked_count and resumed.forward_rows == whole.forward_rows


def smoothing_hparams(tiny_manifests, tmp_path, **overrides):
    """``cnn4_smoothing_waveform.yaml`` at tiny size on the tiny manifests."""
    name = "recipes/EmoDB/hparams/cnn4_smoothing_waveform.yaml"
    annotations = {f"{split}_annotation": path for split, path in tiny_manifests.items()}
    options = {**tiny(name), **annotations, "data_folder": "unused", "output_folder": str(tmp_path), **overrides}
    return load_hparams(name, **options)


def test_a_model_trained_on_noisy_copies_only_is_also_scored_on_noisy_copies(tiny_manifests, tmp_path, monkeypatch):
    """Smoothing's base classifier never sees a clean input: an evaluation also counts its predictions on
    the training step's noisy copy of each utterance (``noisy_UAR``), the same copies every epoch, and
    leaves training's random stream as it was."""
    brain, datasets, _ = build(smoothing_hparams(tiny_manifests, tmp_path, smoothing_sigma=0.5))
    step, copies = brain.chosen_training_step, []
    noisy_features = step.noisy_features
    monkeypatch.setattr(step, "noisy_features", lambda *a: copies.append(noisy_features(*a)) or copies[-1])

    batches = list(make_dataloader(datasets["valid"], batch_size=4))

    def evaluate():
        brain.on_stage_start(sb.Stage.VALID, 1)
        brain.modules.eval()
        for batch in batches:
            brain.evaluate_batch(batch, sb.Stage.VALID)
        return brain.eval_stats(0.0)

    state = torch.get_rng_state()
    stats, first = evaluate(), list(copies)
    assert torch.equal(torch.get_rng_state(), state)
    expected = torch.zeros_like(brain.noisy_confusion.counts)
    for batch, feats in zip(batches, first, strict=True):
        assert not torch.allclose(feats, brain.compute_features(batch.sig.data))  # a noisy copy
        with torch.no_grad():
            predicted = brain.model(feats)[0].argmax(dim=-1)
        for target, guess in zip(brain.targets(batch).tolist(), predicted.tolist()):
            expected[target, guess] += 1
    assert first and torch.equal(brain.noisy_confusion.counts, expected)
    assert stats["noisy_UAR"] == brain.noisy_confusion.uar()
    copies.clear()
    torch.randn(3)  # training's draws between two epochs' evaluations
    evaluate()
    assert all(torch.equal(a, b) for a, b in zip(first, copies, strict=True))  # the same copies again


def test_best_noisy_dev_tests_the_epoch_with_the_best_noisy_dev_uar(tiny_manifests, tiny_hparams, tmp_path):
    """Scripted dev UARs: clean .9, .1, .2 and noisy .3, .5, .4. ``best_noisy_dev`` tests epoch 2, ``best_dev``
    epoch 1; a training with clean inputs keeps no noisy UAR, and asking for ``best_noisy_dev`` there is an error
    before training."""
    hparams = smoothing_hparams(tiny_manifests, tmp_path, number_of_epochs=3)
    datasets, hparams["label_encoder"] = dataio_prep(hparams, manifests_of(hparams), hparams["n_frames"])
    brain = build_brain(hparams, RUN_OPTS, RecipeBrain)
    scripted, eval_stats = iter([(0.9, 0.3), (0.1, 0.5), (0.2, 0.4)]), brain.eval_stats

    def scripted_stats(stage_loss):
        stats = eval_stats(stage_loss)
        if not brain.stage_name.startswith("VALID"):
            return stats
        clean, noisy = next(scripted)
        return {**stats, "UAR": clean, "noisy_UAR": noisy}

    brain.eval_stats = scripted_stats
    brain.fit_normalizer(datasets["train"], hparams["test_dataloader_options"])
    brain.fit(hparams["epoch_counter"], datasets["train"], datasets["valid"], train_loader_kwargs={"batch_size": 4})
    for choice, epoch in [("best_noisy_dev", 2), ("best_dev", 1), ("final", 3)]:
        brain.evaluate(datasets["test"], max_key=selection_key(choice), test_loader_kwargs={"batch_size": 4})
        assert hparams["epoch_counter"].current == epoch, choice
    assert not [p for p in hyperparameter_problems({**hparams, "select_checkpoint": "best_noisy_dev"})]
    clean = tiny_hparams("cnn4_single", select_checkpoint="best_noisy_dev")
    (problem,) = hyperparameter_problems(clean)
    assert "select_checkpoint" in str(problem) and "best_noisy_dev" in str(problem)


@pytest.mark.parametrize("domain", ["waveform", "features"])
def test_smoothing_trains_on_the_noisy_copy_alone(tiny_manifests, tmp_path, domain):
    """The yaml's step without objective: one forward, on the noisy copy (noise of the yaml's sigma where the
    yaml puts it), its cross-entropy the loss, batch norm's statistics moved once."""
    name = f"recipes/EmoDB/hparams/cnn4_smoothing_{domain}.yaml"
    annotations = {f"{split}_annotation": path for split, path in tiny_manifests.items()}
    hparams = load_hparams(name, **tiny(name), **annotations, data_folder="unused", output_folder=str(tmp_path))
    brain, _, batch = build(hparams)
    with torch.no_grad():
        clean = batch.sig.data if domain == "waveform" else brain.compute_features(batch.sig.data)
    seen, tracked = [], batches_tracked(brain.modules.model)
    watched = brain.modules.compute_features if domain == "waveform" else brain.modules.model
    hooks = [
        watched.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach())),
        brain.modules.model.register_forward_hook(lambda module, args, out: seen.append(out[0].detach())),
    ]
    loss = brain.fit_batch(batch)
    for hook in hooks:
        hook.remove()
    noisy, logits = seen
    assert float((noisy - clean).std()) == pytest.approx(hparams["smoothing_sigma"], rel=0.1)
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, brain.targets(batch))), rel=1e-5)
    assert batches_tracked(brain.modules.model) == {name: n + 1 for name, n in tracked.items()}

"""On a trained tiny model: PGD is at least as strong as FGSM, a targeted attack forces its target."""

import pytest
import torch
from helpers_attacks import CLASS_NAMES, N_CLASSES, trained_classifier

from ser_adv_brain.attacks import FGSM, PGD, SquareAttack, WaveformPGD
from ser_adv_brain.attacks.base import predict
from ser_adv_brain.evaluation.targeted import targeted_success_matrix
from ser_adv_brain.metrics import ConfusionMatrix
from ser_adv_brain.models import WaveformClassifier

pytestmark = pytest.mark.trained  # a model trained here, then attacked

EPS = (
    0.4  # FGSM leaves most utterances recognised here, PGD very few (see test_pgd_lowers_uar_at_least_as_much_as_fgsm)
)


@pytest.fixture(scope="module")
def trained():
    compute_features, normalizer, model, wavs, labels = trained_classifier()
    with torch.no_grad():
        feats = normalizer(compute_features(wavs))
    return model, feats, labels


def uar_of(predictions, labels):
    confusion = ConfusionMatrix(N_CLASSES)
    confusion.append(predictions, labels)
    return confusion.uar()


def uar(model, feats, labels):
    return uar_of(predict(model, feats), labels)


def test_pgd_lowers_uar_at_least_as_much_as_fgsm(trained):
    model, feats, labels = trained
    clean = uar(model, feats, labels)
    options = dict(eps=EPS, eta=None, label_source="target")
    fgsm = uar(model, FGSM(**options).perturb(model, feats, labels), labels)
    pgd = uar(model, PGD(steps=10, **options).perturb(model, feats, labels), labels)
    bim = uar(model, PGD(steps=10, random_start=False, **options).perturb(model, feats, labels), labels)
    assert clean > 0.9
    assert pgd <= fgsm and bim <= fgsm
    assert pgd < clean - 0.5  # and clearly so


@pytest.mark.parametrize("attack_class, eps", [(FGSM, 2 * EPS), (PGD, EPS)])  # one step needs more budget
def test_targeted_attack_raises_its_targets_rate(trained, attack_class, eps):
    model, feats, labels = trained
    others = labels != 0  # utterances not already of the target emotion
    before = (predict(model, feats[others]) == 0).double().mean()
    attack = attack_class(eps=eps, eta=None, target_class=CLASS_NAMES[0], class_names=CLASS_NAMES)
    after = (predict(model, attack.perturb(model, feats[others], None)) == 0).double().mean()
    assert after > before + 0.2


def test_least_likely_targeting_reaches_the_least_likely_class(trained):
    model, feats, labels = trained
    with torch.no_grad():
        least_likely = model(feats)[0].argmin(dim=-1)
    attack = PGD(eps=EPS, eta=None, target_class="least_likely")
    reached = (predict(model, attack.perturb(model, feats, None)) == least_likely).double().mean()
    assert reached > 0.3


def test_success_matrix_of_the_trained_model(trained):
    model, feats, labels = trained
    rates = targeted_success_matrix(PGD(eps=EPS, eta=None), model, [(feats, labels)], N_CLASSES)
    off_diagonal = rates[~torch.eye(N_CLASSES, dtype=torch.bool)]
    assert rates.diagonal().min() > 0.9  # aimed at their own emotion, utterances stay recognised
    assert off_diagonal.mean() > 0.3


def test_waveform_pgd_at_30_db_snr_defeats_the_model():
    compute_features, normalizer, model, wavs, labels = trained_classifier()
    classifier = WaveformClassifier(compute_features, normalizer, model)
    clean = uar(classifier, wavs, labels)
    out = WaveformPGD(eps=30.0, steps=10, label_source="target").run(classifier, wavs, labels)
    assert (out.snr_db >= 30.0).all()
    assert uar(classifier, out.wavs, labels) < clean - 0.5


def test_square_attack_lowers_uar_with_queries(trained):
    model, feats, labels = trained
    result = SquareAttack(eps=2 * EPS, max_queries=200, eta=None, label_source="target").run(model, feats, labels)
    first, last = (uar_of(result.predictions_within(queries), labels) for queries in (1, 200))
    assert first == uar(model, feats, labels) > 0.9
    assert last == uar(model, result.adversarial, labels) < first - 0.4

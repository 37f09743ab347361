"""Targeted FGSM and PGD: the formula, the least likely class, emotion names, the success matrix."""

import pytest
import torch
from speechbrain.dataio.encoder import CategoricalEncoder
from test_attacks import TwoClassLinear, expected_direction, predicted_class_and_input

from ser_adv_brain.attacks import FGSM, PGD
from ser_adv_brain.data.dataio import manifests_of
from ser_adv_brain.evaluation.targeted import targeted_success_matrix
from ser_adv_brain.runs import checked_datasets


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return TwoClassLinear(torch.randn(2, 12))


def encoder(names):
    label_encoder = CategoricalEncoder()
    label_encoder.update_from_iterable(names)
    return label_encoder


def test_targeted_fgsm_goes_down_the_targets_loss(linear):
    """Aimed at class 1 from an input classified 0: the step raises class 1's logit; the untargeted attack on 1
    does the opposite."""
    x = predicted_class_and_input(linear, 0)
    targeted = FGSM(eps=0.1, eta=None, target_class=1).perturb(linear, x, None)
    assert torch.allclose(targeted, x - 0.1 * expected_direction(linear, 1))
    assert torch.allclose(targeted, x + 0.1 * expected_direction(linear, 0))  # two classes: away from 0 is towards 1
    logits_before, logits_after = linear(x)[0], linear(targeted)[0]
    assert (logits_after[0, 1] - logits_after[0, 0]) > (logits_before[0, 1] - logits_before[0, 0])


def test_least_likely_is_each_utterances_lowest_class():
    logits = torch.tensor([[0.0, 3.0, -1.0], [2.0, -5.0, 1.0]])
    assert FGSM(0.1, target_class="least_likely").labels(logits, None).tolist() == [2, 1]
    # Unlike the untargeted attack, the true labels do not matter.
    assert FGSM(0.1, target_class=2, label_source="target").labels(logits, torch.tensor([0, 0])).tolist() == [2, 2]


@pytest.mark.parametrize("label_set", [["anger", "neutral", "sadness"], "encoder"])
def test_emotion_names_resolve_against_the_label_set(label_set):
    names = ["anger", "neutral", "sadness"]
    label_set = encoder(names) if label_set == "encoder" else label_set
    for attack in (
        FGSM(0.1, target_class="sadness", class_names=label_set),
        FGSM(0.1, target_class="sadness").set_class_names(label_set),
    ):
        index = attack.class_names.index("sadness")
        assert attack.target_index == index
        assert attack.labels(torch.zeros(2, 3), None).tolist() == [index, index]


def test_unknown_emotion_is_named():
    with pytest.raises(ValueError, match="target_class 'joy' is not in the label set"):
        PGD(0.1, target_class="joy", class_names=["anger", "sadness"])
    with pytest.raises(ValueError, match="target_class 'joy'"):
        FGSM(0.1, target_class="joy").set_class_names(encoder(["anger", "sadness"]))
    with pytest.raises(ValueError, match="target_class 5"):
        FGSM(0.1, target_class=5).set_class_names(["anger", "sadness"])
    with pytest.raises(ValueError, match="set_class_names"):
        FGSM(0.1, target_class="joy").labels(torch.zeros(1, 2), None)
    # An index given without a label set is checked against the model's classes, the last one included.
    assert FGSM(0.1, target_class=2).labels(torch.zeros(1, 3), None).tolist() == [2]
    with pytest.raises(ValueError, match="target_class 3 is out of range for 3 classes"):
        FGSM(0.1, target_class=3).labels(torch.zeros(1, 3), None)


def test_the_recipe_checks_the_target_before_training(tiny_hparams):
    hparams = tiny_hparams("cnn4_vanilla")
    hparams["attack"] = PGD(eps=0.05, target_class="joy")
    with pytest.raises(ValueError, match="target_class 'joy'"):
        checked_datasets(hparams, manifests_of(hparams), hparams["n_frames"])
    hparams["attack"] = PGD(eps=0.05, target_class="anger")
    checked_datasets(hparams, manifests_of(hparams), hparams["n_frames"])
    assert hparams["attack"].target_index == hparams["label_encoder"].lab2ind["anger"]


def test_targeted_at_copies_without_touching_the_original():
    attack = PGD(0.1, target_class="anger", class_names=["anger", "sadness"])
    other = attack.targeted_at("sadness")
    assert (attack.target_index, other.target_index) == (0, 1)
    assert not attack.targeted_at(None).targeted
    with pytest.raises(ValueError, match="target_class 'joy'"):
        attack.targeted_at("joy")


def test_success_matrix_counts_what_each_aimed_attack_forces():
    """Against the linear model, the matrix equals the predictions of each aimed attack, counted by hand."""
    torch.manual_seed(0)
    model = TwoClassLinear(torch.randn(2, 12))
    batches = [(torch.randn(5, 3, 4), torch.tensor([0, 1, 1, 0, 1])), (torch.randn(3, 3, 4), torch.tensor([1, 1, 0]))]
    attack = FGSM(eps=0.3, eta=None)
    rates = targeted_success_matrix(attack, model, batches, 2)
    expected = torch.zeros(2, 2, dtype=torch.float64)
    for inputs, labels in batches:
        for target in range(2):
            fake = FGSM(eps=0.3, eta=None, target_class=target).perturb(model, inputs, labels)
            for label, prediction in zip(labels, model(fake)[0].argmax(dim=-1)):
                expected[label, target] += float(prediction == target)
    expected /= torch.tensor([[3.0], [5.0]], dtype=torch.float64)
    assert torch.equal(rates, expected)
    assert not attack.targeted  # the attack given is left as it was

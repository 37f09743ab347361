"""APGD and the DLR loss: the formulas, the step-size schedule, the targets, the budgets, the class-count limits."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_adv_brain.attacks import APGD, PGD, WaveformAPGD
from ser_adv_brain.attacks import apgd as apgd_module
from ser_adv_brain.attacks.apgd import checkpoint_iterations, halving
from ser_adv_brain.attacks.dlr import dlr_loss, targeted_dlr_loss
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.models import CNN4, WaveformClassifier


class Linear(torch.nn.Module):
    """``logits = x . W`` summed over frames: a gradient that never vanishes (and a fixed output for ``constant``)."""

    def __init__(self, n_classes=5, n_mels=8, constant=False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(n_mels, n_classes, generator=torch.Generator().manual_seed(0)))
        self.constant = constant

    def forward(self, feats):
        logits = feats.sum(dim=1) @ self.weight
        return (logits * 0 + self.weight.sum(0) if self.constant else logits), feats


class Rising(Linear):
    """Class 0 first, class 1's logit one higher at every call: the loss of class 0 rises whatever the input."""

    calls = 0

    def forward(self, feats):
        self.calls += 1
        logits = (
            1e-3 * super().forward(feats)[0]
            + torch.tensor([5.0, 0, 0, 0, 0])
            + self.calls * torch.tensor([0, 1.0, 0, 0, 0])
        )
        return logits, feats


class Sawtooth(Rising):
    """Class 1's logit climbs for 9 calls, then falls back: the loss rises at 90% of the steps, its best never again.

    The input does not move it (a zero gradient): Rising's small input term would, up or down with the random
    input, and a best that creeps up would stop the halving this loss is for."""

    def forward(self, feats):
        self.calls += 1
        logits = torch.tensor([5.0, 0, 0, 0, 0]) + (self.calls % 10) * torch.tensor([0, 1.0, 0, 0, 0])
        return logits + 0 * feats.sum(dim=(1, 2))[:, None], feats


@pytest.fixture
def model():
    torch.manual_seed(0)
    model = CNN4(n_classes=5, base_channels=2)
    model.train()
    model(torch.randn(8, 20, 8))  # non-trivial running statistics
    return model.eval()


def test_the_targeted_dlr_loss_refuses_three_classes_by_name():
    with pytest.raises(ValueError, match="targeted_dlr_loss: the targeted DLR loss needs at least 4 classes"):
        targeted_dlr_loss(torch.randn(2, 3), torch.tensor([0, 1]), torch.tensor([1, 2]))


def test_dlr_is_its_formula():
    z = torch.tensor([[1.0, 5.0, 2.0, 4.0, 0.0], [3.0, 0.0, 1.0, 2.0, 6.0]])
    labels, aimed = torch.tensor([1, 0]), torch.tensor([3, 2])
    # Sorted: [5, 4, 2, 1, 0] and [6, 3, 2, 1, 0].
    assert dlr_loss(z, labels).tolist() == pytest.approx([-(5 - 4) / (5 - 2), -(3 - 6) / (6 - 2)])
    assert targeted_dlr_loss(z, labels, aimed).tolist() == pytest.approx([-(5 - 4) / (5 - 1.5), -(3 - 1) / (6 - 1.5)])


def test_the_dlr_losses_hold_at_their_fewest_classes_in_float32_and_where_the_top_logits_tie():
    """The untargeted loss at 3 classes and the targeted at 4 (the limits its denominators set); half-precision
    logits computed in float32; and where the logits of the denominator tie, the loss of an utterance whose label
    is below them stays a large positive number (far from correct), not a sign-flipped one."""
    three, four = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert dlr_loss(three, torch.tensor([1])).tolist() == pytest.approx([-(1 - 2) / (2 - 0)])
    aimed = torch.tensor([1])
    assert targeted_dlr_loss(four, torch.tensor([0]), aimed).tolist() == pytest.approx([-(3 - 2) / (3 - 0.5)])
    half = four.half()
    assert dlr_loss(half, torch.tensor([0])).dtype == torch.float32
    assert targeted_dlr_loss(half, torch.tensor([0]), aimed).dtype == torch.float32
    tied = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    assert dlr_loss(tied, torch.tensor([4])).item() > 1e6
    assert targeted_dlr_loss(tied, torch.tensor([4]), torch.tensor([0])).item() > 1e6


@settings(max_examples=30, deadline=None)
@given(shift=st.floats(-50, 50), scale=st.floats(0.01, 100), seed=st.integers(0, 10**6))
def test_dlr_ignores_a_shift_and_a_positive_scale_of_the_logits(shift, scale, seed):
    z = torch.randn(4, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    labels, aimed = torch.tensor([0, 2, 5, 1]), torch.tensor([3, 3, 0, 4])
    moved = z * scale + shift  # in float64, where the invariance holds to rounding
    torch.testing.assert_close(dlr_loss(moved, labels), dlr_loss(z, labels))
    torch.testing.assert_close(targeted_dlr_loss(moved, labels, aimed), targeted_dlr_loss(z, labels, aimed))


@pytest.mark.parametrize("n_classes, targets", [(2, 0), (3, 2)])
def test_too_few_classes_for_the_dlr_loss_are_refused_naming_the_attack(n_classes, targets):
    needed = 3 if not targets else 4
    attack = APGD(eps=0.1, loss="dlr", targets=targets)
    with pytest.raises(ValueError, match=f"APGD.*needs at least {needed} classes, the model has {n_classes}"):
        attack.set_class_names([f"emotion{i}" for i in range(n_classes)])
    with pytest.raises(ValueError, match=f"needs at least {needed} classes"):
        attack.perturb(Linear(n_classes=n_classes), torch.randn(2, 4, 8), None)
    APGD(eps=0.1, loss="ce").set_class_names(["a", "b"])  # the cross-entropy has no such limit


def test_apgd_raises_the_loss_it_is_named_for():
    z = torch.tensor([[1.0, 5.0, 2.0, 4.0, 0.0], [3.0, 0.0, 1.0, 2.0, 6.0]])
    labels, aimed = torch.tensor([1, 0]), torch.tensor([3, 2])
    ce = torch.nn.functional.cross_entropy(z, labels, reduction="none")
    torch.testing.assert_close(APGD(eps=0.1, loss="ce").apgd_loss(z, labels), ce)
    torch.testing.assert_close(APGD(eps=0.1, loss="dlr").apgd_loss(z, labels), dlr_loss(z, labels))
    targeted = APGD(eps=0.1, loss="dlr", targets=2).apgd_loss(z, labels, aimed)
    torch.testing.assert_close(targeted, targeted_dlr_loss(z, labels, aimed))


def test_each_restart_and_each_target_class_starts_from_its_own_random_point():
    """AutoAttack's restarts are new draws; APGD-T's passes towards each target class too (keyed draws: one stream
    per pass, not the generator's next numbers)."""
    starts, run_pass = [], APGD.run_pass

    def recording(self, model, inputs, start, *rest):
        starts.append(start - inputs)
        return run_pass(self, model, inputs, start, *rest)

    attack = APGD(eps=0.05, steps=1, loss="dlr", targets=2, restarts=2, eta=None, label_source="target")
    attack.run_pass = recording.__get__(attack)
    x = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    model = Linear(constant=True)  # a fixed output: never fooled, so every pass runs
    attack.perturb(model, x, model(x)[0].argmax(dim=-1), keys=["utt0", "utt1"])  # keyed: each pass its stream
    assert len(starts) == 2 * 2
    assert all(not torch.equal(a, b) for i, a in enumerate(starts) for b in starts[i + 1 :])


def test_waveform_apgd_keeps_every_setting_it_is_given():
    """Each yaml key reaches the attack (a dropped one would run at APGD's default); no eta clip on the samples;
    and a label set given at construction is checked by the attack's name."""
    settings_given = dict(steps=7, loss="dlr", targets=3, eot_iter=2, norm="linf", restarts=2, seed=5)
    settings_given.update(stop_when_fooled=True, label_source="target", model_mode="train")
    attack = WaveformAPGD(eps=0.01, class_names=["a", "b", "c", "d", "e"], **settings_given)
    kept = dict(vars(attack), loss=attack.loss_name)
    assert {key: kept[key] for key in settings_given} == settings_given
    assert (attack.eps, attack.eta, attack.random_start, attack.class_names) == (0.01, None, True, list("abcde"))
    with pytest.raises(ValueError, match="WaveformAPGD-T: the targeted DLR loss needs at least 4 classes"):
        WaveformAPGD(eps=40.0, loss="dlr", targets=3, class_names=["a", "b", "c"])


def test_targets_need_the_dlr_loss():
    with pytest.raises(ValueError, match="targets=3 needs loss='dlr'"):
        APGD(eps=0.1, loss="ce", targets=3)


def test_checkpoints_follow_autoattacks_schedule():
    assert checkpoint_iterations(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoint_iterations(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]  # gaps of at least one iteration
    assert checkpoint_iterations(4) == [1, 2, 3, 4]  # the first after one iteration, where 0.22 N is below 1
    # 20 steps (the adaptive attacks of smoothing): gaps 4, 3, 2, then 1, shrinking by one (int(0.03 N) = 0 -> 1).
    assert checkpoint_iterations(20) == [4, 7, 9, *range(10, 21)]


def step_sizes(attack, model, x, labels):
    """The step size of each iteration (first utterance), as APGD hands it to its ascent."""
    seen, ascend = [], attack.ascend

    def recording(adversarial, grad, step):
        seen.append(float(step.flatten()[0]) if torch.is_tensor(step) else float(step))
        return ascend(adversarial, grad, step)

    attack.ascend = recording
    attack.perturb(model, x, labels)
    return seen


def test_the_step_size_starts_at_twice_eps_and_halves_where_the_loss_stalls():
    x = torch.randn(3, 4, 8)
    # A loss that never moves (zero gradient; every utterance correct): every checkpoint halves the step size.
    constant = Linear(constant=True)
    labels = constant(x)[0].argmax(dim=-1)
    flat = step_sizes(APGD(eps=0.1, steps=100, eta=None, label_source="target"), constant, x, labels)
    assert flat[:22] == [pytest.approx(0.2)] * 22  # 22 iterations before the first checkpoint
    assert flat[22:41] == [pytest.approx(0.1)] * 19 and flat[41] == pytest.approx(0.05)
    # A loss that rises at most steps but whose best stalls: the second checkpoint halves, as the first did not.
    sawtooth = step_sizes(APGD(eps=0.1, steps=100, eta=None), Sawtooth(), x, None)
    assert sawtooth[:41] == [pytest.approx(0.2)] * 41 and sawtooth[41] == pytest.approx(0.1)
    # A loss that rises at every step: the step size stays.
    rising = step_sizes(APGD(eps=0.1, steps=100, eta=None), Rising(), x, None)
    assert rising == [pytest.approx(0.2)] * 100


def test_the_step_size_halves_where_exactly_three_quarters_of_the_steps_raised_the_loss():
    """AutoAttack's code halves at ``rising <= 0.75 k`` over the ``k`` steps since the last checkpoint (the paper
    writes fewer than): at exactly 75% it halves, at every step rising it does not, whatever ``k``."""
    ones, zeros = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    low, high = torch.zeros(2), torch.ones(2)  # the best loss risen since the last checkpoint
    three_of_four = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [0.0, 4.0], [1.0, 5.0]])  # 3 and 4 rises
    assert halving(three_of_four, ones, low, high).tolist() == [True, False]
    assert not halving(torch.tensor([[1.0], [2.0], [3.0], [4.0]]), ones[:1], low[:1], high[:1]).any()  # 3 of 3
    assert halving(torch.tensor([[1.0], [1.0], [2.0], [3.0], [4.0]]), ones[:1], low[:1], high[:1]).all()  # a tie
    # Every step rising but the best not above the last checkpoint's: halved only if not halved there.
    rising = three_of_four[:, 1:].expand(5, 2)
    assert halving(rising, zeros, high, high).all() and not halving(rising, ones, high, high).any()


def test_each_checkpoint_counts_the_losses_from_the_last_checkpoint_on(monkeypatch):
    """The window the halving rule reads: the loss at the last checkpoint (the start's at the first) and after each
    step since, so consecutive windows share one loss and together hold every loss once."""
    windows = []

    def recording(losses, *rest):
        windows.append(losses[:, 0].tolist())
        return halving(losses, *rest)

    monkeypatch.setattr(apgd_module, "halving", recording)
    model = Sawtooth()
    APGD(eps=0.1, steps=20, eta=None, random_start=False).perturb(model, torch.randn(1, 4, 8), None)
    marks = [0, *checkpoint_iterations(20)]
    assert [len(w) for w in windows] == [b - a + 1 for a, b in zip(marks, marks[1:])]
    assert all(w[0] == v[-1] for v, w in zip(windows, windows[1:]))


def test_one_apgd_step_from_the_clean_input_is_fgsm_projected(model):
    """Step size 2 eps, no momentum on the first step, then the projection: ``x + eps * sign(g)``, FGSM's point."""
    x = torch.randn(6, 20, 8)
    labels = model(x)[0].argmax(dim=-1)  # every utterance correct: none is left out of the attack
    apgd = APGD(eps=0.05, steps=1, random_start=False, eta=None, label_source="target")
    fgsm_point = PGD(eps=0.05, steps=1, rel_step_size=1.0, random_start=False, eta=None, label_source="target")
    expected = fgsm_point.perturb(model, x, labels)
    loss = apgd.apgd_loss(model(expected)[0], labels) > apgd.apgd_loss(model(x)[0], labels)
    result = apgd.perturb(model, x, labels)
    # Per utterance the higher-loss point of the two (or the one that fools).
    assert torch.equal(result[loss], expected[loss])


@pytest.mark.parametrize("norm, eps, eta", [("linf", 0.07, None), ("linf", 0.3, 0.1), ("l2", 0.5, None)])
@pytest.mark.parametrize("loss, targets", [("ce", 0), ("dlr", 0), ("dlr", 2)])
def test_every_output_lies_inside_its_budget(model, norm, eps, eta, loss, targets):
    x, labels = 3 * torch.randn(6, 20, 8), torch.tensor([0, 1, 2, 3, 4, 0])
    delta = (
        APGD(eps=eps, steps=6, norm=norm, eta=eta, loss=loss, targets=targets, label_source="target").perturb(
            model, x, labels
        )
        - x
    )
    size = delta.flatten(1).abs().amax(dim=1) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert (size <= eps * (1 + 1e-5)).all()
    if eta is not None:
        assert (delta.abs() <= eta + 1e-6).all()


def test_apgd_t_aims_at_the_most_likely_other_classes_in_turn_on_what_is_still_correct():
    model = Linear(n_classes=5)
    x = torch.randn(4, 4, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        order = model(x)[0].argsort(dim=-1, descending=True)
    labels = order[:, 0]  # the predictions: all correct
    aimed, apgd_loss = [], APGD.apgd_loss

    def recording(self, logits, labels, target=None):
        aimed.append(None if target is None else target.clone())
        return apgd_loss(self, logits, labels, target)

    attack = APGD(eps=1e-6, steps=2, loss="dlr", targets=9, eta=None, label_source="target")  # too small to fool
    attack.apgd_loss = recording.__get__(attack)
    attack.perturb(model, x, labels)
    assert len(aimed) == 4 * 3  # min(9, 5 - 1) = 4 target classes; a pass: the start and 2 steps
    for call, target in enumerate(aimed):
        assert torch.equal(target, order[:, call // 3 + 1])  # every loss of the pass, the start's and the steps


def test_eot_averages_each_gradient_over_its_passes(model):
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, feats):
            calls.append(len(feats))
            return model(feats)

    x = torch.randn(2, 20, 8)
    APGD(eps=1e-6, steps=3, eot_iter=4, eta=None).perturb(Counting(), x, None)  # its predictions, too close to leave
    assert len(calls) == 1 + 4 * (1 + 3)  # the clean pass, then 4 passes per gradient: the start's and 3 steps'


def test_a_gradient_that_autograd_broadcasts_is_averaged_and_restarted_from_alike():
    """Linear sums over the frames first, so autograd gives its input gradient as one row broadcast over them; APGD
    writes into its gradient (the average over ``eot_iter`` passes, the restarts from the best point). On a
    deterministic model two passes average to the gradient of one: the same points."""
    x = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(2))
    model = Linear()
    labels = model(x)[0].argmax(dim=-1)
    one, two = (
        APGD(eps=0.05, steps=25, eot_iter=eot, eta=None, label_source="target", seed=1).perturb(model, x, labels)
        for eot in (1, 2)
    )
    torch.testing.assert_close(one, two)


def test_keyed_random_starts_do_not_depend_on_the_rest_of_the_batch(model):
    x, labels, keys = torch.randn(6, 20, 8), torch.tensor([0, 1, 2, 3, 4, 0]), [f"utt{i}" for i in range(6)]
    attack = APGD(eps=0.05, steps=4, restarts=2, eta=None, label_source="target", seed=3)
    whole = attack.perturb(model, x, labels, keys=keys)
    half = attack.perturb(model, x[3:], labels[3:], keys=keys[3:])
    torch.testing.assert_close(whole[3:], half)


def test_waveform_apgd_keeps_its_snr_budget_after_16_bit_rounding():
    classifier = WaveformClassifier(LogMel(n_mels=20), FeatureNormalizer(20), CNN4(n_classes=5, base_channels=2)).eval()
    wavs = 0.1 * torch.randn(3, 4000, generator=torch.Generator().manual_seed(0))
    for loss, targets in [("ce", 0), ("dlr", 3)]:
        out = WaveformAPGD(eps=35.0, steps=4, loss=loss, targets=targets).run(classifier, wavs, targets=None)
        assert (out.snr_db >= 35.0).all() and (out.snr_db < 60.0).all()
        assert torch.equal(out.wavs, torch.round(out.wavs * 32768) / 32768)


def test_the_second_step_is_the_momentum_formula(model):
    """``z = P(x_1 + eta d(g_1))``, ``x_2 = P(x_1 + 0.75 (z - x_1) + 0.25 (x_1 - x_0))``, from the clean ``x_0``.

    (10 steps: the first checkpoint, which may move the iterate, comes after the second.)
    """
    x = torch.randn(4, 20, 8)
    attack = APGD(eps=0.5, steps=10, norm="l2", random_start=False, eta=None)
    iterates, gradient = [], attack.gradient

    def recording(model, inputs, labels, aimed, loss_scale):
        iterates.append(inputs.detach().clone())
        return gradient(model, inputs, labels, aimed, loss_scale)

    attack.gradient = recording
    attack.perturb(model, x, None)
    x0, x1, x2 = iterates[:3]
    grad1, _, _ = gradient(model, x1, model(x)[0].argmax(dim=-1), None, 1.0)
    z = attack.project_ball(attack.ascend(x1, grad1, 2 * 0.5), x, 0.5)
    torch.testing.assert_close(x2, attack.project_ball(x1 + 0.75 * (z - x1) + 0.25 * (x1 - x0), x, 0.5))


@pytest.mark.parametrize("loss", [{}, {"loss": "dlr", "targets": 2}], ids=["APGD-CE", "APGD-T"])
def test_stopping_when_fooled_leaves_every_other_utterance_on_its_all_steps_path(model, loss):
    """With ``stop_when_fooled`` only the utterances still correct step (through an index); the others keep
    their fooling iterate. An utterance never fooled must end where the all-steps run (no index) takes it,
    and one fooled must be fooled in the all-steps run too (which keeps every fooling iterate)."""
    x = torch.randn(8, 20, 8, generator=torch.Generator().manual_seed(1))
    radius = torch.tensor([5.0] * 4 + [0.02] * 4).view(-1, 1, 1)  # the first four fooled early, the rest late or never
    keys = [f"utt{i}" for i in range(8)]
    runs = {}
    for stop in (True, False):
        attack = APGD(eps=0.02, steps=12, stop_when_fooled=stop, eta=None, seed=5, **loss)
        runs[stop] = attack.attack(model, x, None, radius, keys=keys)
    with torch.no_grad():
        labels = model(x)[0].argmax(-1)
        fooled = {stop: model(out)[0].argmax(-1) != labels for stop, out in runs.items()}
    assert fooled[True].any(), "no utterance was fooled: the stopping path was not exercised"
    assert (fooled[False] | ~fooled[True]).all()
    never = ~fooled[True]
    torch.testing.assert_close(runs[True][never], runs[False][never])
    # One utterance fooled early beside one never fooled: the last one left correct still takes every step.
    pair = [0, int(never.nonzero()[0])]
    alone = {}
    for stop in (True, False):
        attack = APGD(eps=0.02, steps=12, stop_when_fooled=stop, eta=None, seed=5, **loss)
        alone[stop] = attack.attack(model, x[pair], None, radius[pair], keys=[keys[i] for i in pair])
    torch.testing.assert_close(alone[True][1], alone[False][1])
    # Every utterance fooled before the last step: the pass ends with each one's fooling iterate.
    early = APGD(eps=0.02, steps=12, stop_when_fooled=True, eta=None, seed=5, **loss).attack(
        model, x[:4], None, radius[:4], keys=keys[:4]
    )
    with torch.no_grad():
        assert (model(early)[0].argmax(-1) != labels[:4]).all()


class Peaked(Linear):
    """Class 1's logit peaks at the 8th call and falls after; a small input term, its sign flipped at every call,
    moves the iterates back and forth (a fixed sign would pin them to one corner of the ball). Class 0 always
    wins: never fooled. Keeps every input it is called on."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, feats):
        self.seen.append(feats.detach().clone())
        peak = 0.1 * (10 - abs(len(self.seen) - 8))
        moving = 1e-3 * (-1) ** len(self.seen) * super().forward(feats)[0]
        logits = moving + torch.tensor([5.0, 0, 0, 0, 0]) + peak * torch.tensor([0, 1.0, 0, 0, 0])
        return logits, feats


def test_an_utterance_never_fooled_gets_its_highest_loss_iterate_back():
    model = Peaked()
    x = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(3))
    out = APGD(eps=0.1, steps=12, eta=None, label_source="target").perturb(model, x, torch.tensor([0]))
    assert len(model.seen) == 1 + 1 + 12  # the clean pass, the start, 12 steps
    assert not torch.allclose(model.seen[7], model.seen[-1])  # the last iterate is elsewhere
    torch.testing.assert_close(out, model.seen[7])  # the 8th call's input: the highest loss


class OffGridDetector(torch.nn.Module):
    """Class 1 exactly when a sample lies off the 16-bit PCM grid; class 0 (with a small slope, for a gradient)
    on it: every unrounded iterate fools it, and no audio a 16-bit file can hold does."""

    def forward(self, wavs):
        off_grid = ((wavs * 32768 - torch.round(wavs * 32768)).abs() > 1e-3).any(dim=-1).float()
        logits = torch.stack([1.0 + 1e-3 * wavs.sum(dim=-1), 5.0 * off_grid], dim=-1)
        return logits, None


@pytest.mark.parametrize("stop_when_fooled", [True, False])
def test_waveform_apgd_counts_an_iterate_as_fooling_only_if_its_16_bit_audio_fools(stop_when_fooled):
    wavs = torch.round(0.1 * torch.randn(3, 400, generator=torch.Generator().manual_seed(0)) * 32768) / 32768
    attack = WaveformAPGD(eps=30.0, steps=6, stop_when_fooled=stop_when_fooled, label_source="target")
    passes, gradient = [], attack.gradient
    attack.gradient = lambda *args: passes.append(1) or gradient(*args)
    out = attack.run(OffGridDetector(), wavs, torch.zeros(3, dtype=torch.long))
    assert len(passes) == 1 + 6, "an iterate that fools only off the PCM grid stopped the attack"
    assert (OffGridDetector()(out.wavs)[0].argmax(-1) == 0).all()


class LinearOnSamples(torch.nn.Module):
    """Logits linear in the samples: margins an SNR budget of 40 dB crosses for some utterances, not all."""

    def __init__(self, n_samples, n_classes):
        super().__init__()
        self.linear = torch.nn.Linear(n_samples, n_classes)

    def forward(self, wavs):
        return self.linear(wavs), None


def test_stopping_when_fooled_on_the_waveform_fools_the_same_audio_at_a_fraction_of_the_passes():
    torch.manual_seed(0)
    classifier = LinearOnSamples(4000, 5).eval()
    wavs = 0.1 * torch.randn(8, 4000, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        labels = classifier(wavs)[0].argmax(-1)
    fooled, passes = {}, {}
    for stop in (True, False):
        attack = WaveformAPGD(eps=40.0, steps=10, stop_when_fooled=stop, label_source="target", seed=2)
        gradient, passes[stop] = attack.gradient, []
        attack.gradient = lambda *args, calls=passes[stop], take=gradient: calls.append(len(args[1])) or take(*args)
        out = attack.run(classifier, wavs, labels, keys=[f"u{i}" for i in range(8)])
        with torch.no_grad():
            fooled[stop] = classifier(out.wavs)[0].argmax(-1) != labels
    assert fooled[True].any() and not fooled[True].all() and torch.equal(fooled[True], fooled[False])
    assert sum(passes[True]) < sum(passes[False])

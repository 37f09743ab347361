"""A smoothed classifier on a split: its certificates, certified UAR against radius, and its adaptive attack.

Certified UAR at radius ``r`` is UAR over the utterances whose certificate
names their true emotion with a radius of at least ``r`` (an abstention
counts as wrong, at every radius). A threat model's budget becomes a radius
per utterance (``SplitCertificates.budget_radius``): an SNR of ``S`` dB on the
waveform is the L2 radius ``|x|_2 * 10^(-S/20)`` of that utterance, the suite's
``waveform_snr`` budget; an Linf budget ``eps`` lies inside the L2 ball of
radius ``eps * sqrt(d)`` (``d`` values per input), so a certificate of that
radius covers it.

The adaptive evaluation (``attack_smoothed``) attacks the smoothed classifier
as AutoAttack's ``rand`` version attacks a randomised defence: each attack of
the plan runs on the base classifier with fresh noise at every forward pass
(``NoisyClassifier``; APGD's ``eot_iter`` averages its gradients over as many
passes: expectation over transformation, Athalye et al., ICML 2018), and the
smoothed classifier's PREDICT scores the result, an abstention counting as
wrong. A pass averages the softmax of ``draws`` noisy copies (the soft smoothed
classifier of Salman et al., NeurIPS 2019): the attacks' own success checks
read one pass, and on a single noisy copy APGD would leave alone every
utterance that one draw happens to misclassify. Each utterance is attacked on
its own, its noise drawn from generators keyed by its ID, so its outcome does
not depend on its batch.
"""

import dataclasses
import math

import torch

from ser_adv_brain.evaluation.smoothing import ABSTAIN, ATTACK
from ser_adv_brain.evaluation.suite import (
    DETAILS,
    AttackKey,
    CountingForward,
    SplitOutcomes,
    input_gradient_ok,
    run_attack,
)
from ser_adv_brain.metrics import uar_of_correct

# The threat models whose budget is a ball around each input of the smoothed classifier, which a certified L2
# radius can cover; not the universal perturbation (one for every utterance) nor over the air (a room between).
CERTIFIED_THREATS = {
    "waveform": ("waveform_snr", "waveform_l2", "waveform_linf"),
    "features": ("features_l2", "features_linf"),
}


def certified_budgets(domain, budgets):
    """``(threat model, budget)`` of ``budgets`` (threat model -> budgets) that a certificate in ``domain`` covers.

    Example
    -------
    >>> certified_budgets("waveform", {"waveform_snr": [40, 30], "waveform_universal": [40], "features_linf": [0.02]})
    [('waveform_snr', 40.0), ('waveform_snr', 30.0)]
    """
    return [
        (threat, float(budget))
        for threat, values in budgets.items()
        if threat in CERTIFIED_THREATS[domain]
        for budget in values
    ]


def gathered(values):
    """``values`` (a list) joined over every DDP process, in process order (itself outside DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [values]
    parts = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, values)
    return parts


@dataclasses.dataclass
class SplitCertificates:
    """Per-utterance certificates of one split, sorted by utterance ID.

    ``prediction`` holds ``ABSTAIN`` where CERTIFY abstained; ``radius`` is
    the certified L2 radius in the units of the smoothed input (0 where
    abstaining); ``signal_norm`` the L2 norm of each certified input;
    ``dims`` the number of values of one input.
    """

    ids: list
    targets: torch.Tensor
    prediction: torch.Tensor
    p_lower: torch.Tensor
    radius: torch.Tensor
    signal_norm: torch.Tensor
    dims: int
    n_classes: int

    @property
    def correct(self):
        """Certified with the true emotion, at some radius (an abstention is never correct)."""
        return self.prediction == self.targets

    def certified(self, radius):
        """Correct with a certified radius of at least ``radius`` (a number, or one per utterance)."""
        return self.correct & (self.radius >= torch.as_tensor(radius, dtype=torch.float64))

    def uar(self, radius):
        """Certified UAR at ``radius``: abstentions and wrong classes count as wrong."""
        return uar_of_correct(self.certified(radius), self.targets, self.n_classes)

    @property
    def snr_db(self):
        """Each radius as that utterance's SNR, ``20 log10(|x|_2 / R)`` (inf where R = 0): the smallest SNR in dB
        certified. Meaningful for waveforms only."""
        return 20 * torch.log10(self.signal_norm / self.radius)

    @property
    def linf_eps(self):
        """Each radius as the Linf budget it covers, ``R / sqrt(d)``."""
        return self.radius / math.sqrt(self.dims)

    def budget_radius(self, threat_model, budget):
        """Per utterance, the L2 radius that covers ``budget`` in ``threat_model`` (``"waveform_snr"``, ``"*_l2"``,
        ``"*_linf"``)."""
        norm = threat_model.rsplit("_", 1)[-1]
        if norm == "snr":
            return self.signal_norm * 10 ** (-float(budget) / 20)
        if norm == "linf":
            return torch.full_like(self.signal_norm, float(budget) * math.sqrt(self.dims))
        return torch.full_like(self.signal_norm, float(budget))

    def covers(self, threat_model, budget):
        """Per utterance, whether its radius covers ``budget`` (``R >= budget_radius``, compared in the budget's
        own unit, so that a budget equal to a certificate's counts exactly)."""
        norm = threat_model.rsplit("_", 1)[-1]
        if norm == "snr":
            return self.snr_db <= float(budget)
        if norm == "linf":
            return self.linf_eps >= float(budget)
        return self.radius >= float(budget)

    def certified_within(self, threat_model, budget):
        """Per utterance: certified with its true emotion at a radius that covers ``budget`` of ``threat_model``."""
        return self.correct & self.covers(threat_model, budget)

    def uar_within(self, threat_model, budget):
        """Certified UAR at ``budget`` of ``threat_model``, each utterance at its own radius."""
        return uar_of_correct(self.certified_within(threat_model, budget), self.targets, self.n_classes)


def certify_split(smoothing, base, batches, n_classes, progress=None):
    """CERTIFY on every utterance of ``batches`` (``(ids, inputs, targets)`` in the smoothing's domain).

    Arguments
    ---------
    smoothing : RandomizedSmoothing
    base : torch.nn.Module
        The base classifier of the smoothing's domain (the model, or ``WaveformClassifier``).
    batches : iterable
        ``(ids, inputs, targets)``; under DDP each process's own share.
    n_classes : int
    progress : BatchProgress or None
        Batches certified by an earlier, killed run of the same certification are read from it, and every
        batch certified is recorded in it (``ser_adv_brain.evaluation.progress``).

    Returns
    -------
    SplitCertificates
        Over every process's utterances.
    """
    rows, dims = [], None
    for ids, inputs, targets in batches:
        dims = inputs[0].numel()
        kept = progress.done(ids) if progress is not None else None
        if kept is not None:
            rows.extend(tuple(row) for row in kept["rows"])
            continue
        certificate = smoothing.certify(base, inputs, keys=list(ids))
        norms = inputs.detach().double().flatten(1).norm(dim=1).cpu()
        batch_rows = list(
            zip(
                ids,
                targets.tolist(),
                certificate.prediction.tolist(),
                certificate.p_lower.tolist(),
                certificate.radius.tolist(),
                norms.tolist(),
            )
        )
        rows.extend(batch_rows)
        if progress is not None:
            progress.record(ids, {"rows": batch_rows})
    parts = gathered((rows, dims))
    rows = sorted(row for part, _ in parts for row in part)
    dims = next(d for _, d in parts if d is not None)
    columns = list(zip(*rows))
    return SplitCertificates(
        ids=list(columns[0]),
        targets=torch.tensor(columns[1], dtype=torch.long),
        prediction=torch.tensor(columns[2], dtype=torch.long),
        p_lower=torch.tensor(columns[3], dtype=torch.float64),
        radius=torch.tensor(columns[4], dtype=torch.float64),
        signal_norm=torch.tensor(columns[5], dtype=torch.float64),
        dims=dims,
        n_classes=n_classes,
    )


def attack_smoothed(smoothing, base, plan, batches, n_classes, early_exit=True, draws=8, progress=None):
    """The smoothed classifier under each attack of ``plan``, attacked with expectation over its noise.

    ``plan`` is a suite plan (``suite_plan``) of attacks in the smoothing's
    domain. Per utterance: PREDICT on the real input; then, per threat model
    from the smallest budget, each attack on ``NoisyClassifier(base, draws=draws)``
    (its noise keyed by the utterance, the attack and the budget) and PREDICT
    on its output. Each of the attack's forward passes costs ``draws`` passes
    of the base classifier. With ``early_exit`` an utterance that the smoothed classifier
    gets wrong (or abstains on) is not attacked at larger budgets or by later
    attacks, as in the suite. With ``progress`` (a ``BatchProgress``), each
    utterance's outcomes are recorded as it is done, and those of an earlier,
    killed run of the same attack are read back instead of attacked again.

    Returns
    -------
    SplitOutcomes
        As the suite's, an abstention booked as class ``n_classes`` (so it is
        never the true class): robust UAR counts it as wrong.
    """
    wrong = [entry for _, _, entries in plan for entry in entries if entry.domain != smoothing.domain]
    if wrong:
        raise ValueError(
            f"{wrong[0].name} attacks the {wrong[0].domain}, but the noise of {smoothing!r} is on the "
            f"{smoothing.domain}: attack the smoothed classifier in its own domain."
        )
    keys = [AttackKey(group, budget, entry.name) for group, budget, entries in plan for entry in entries]
    outcomes = SplitOutcomes(keys, n_classes)

    def booked(prediction):
        return torch.where(prediction == ABSTAIN, n_classes, prediction)

    for ids, inputs, targets in batches:
        for index, utterance in enumerate(ids):
            kept = progress.done([utterance]) if progress is not None else None
            if kept is not None:
                outcomes.append_recorded([utterance], kept)
                continue
            cost_before = outcomes.cost()
            x, y = inputs[index : index + 1], targets[index : index + 1].cpu()
            clean = booked(smoothing.predict(base, x, [utterance]).prediction)
            alive = {group: bool(clean == y) for group, _, _ in plan}
            predictions, details = {}, {field: {} for field in DETAILS}
            for group, budget, entries in plan:
                for entry in entries:
                    key = AttackKey(group, budget, entry.name)
                    predictions[key] = torch.full_like(y, -1)
                    for field in DETAILS:
                        details[field][key] = torch.full((1,), float("nan"), dtype=torch.float64)
                    if early_exit and not alive[group]:
                        continue
                    stream = f"{ATTACK}/{group}/{budget:g}/{entry.name}"
                    noisy = CountingForward(smoothing.noisy_classifier(base, utterance, stream, draws))
                    adversarial, _, reported = run_attack(
                        entry, budget, noisy, noisy, x, x, y.to(x.device), [utterance]
                    )
                    predictions[key] = booked(smoothing.predict(base, adversarial, [utterance]).prediction)
                    for field, values in reported.items():
                        details[field][key] = values.detach().cpu().double()
                    outcomes.attacked_count += 1
                    outcomes.forward_rows[key] += noisy.rows
                    alive[group] &= bool(predictions[key] == y)
            noisy = smoothing.noisy_classifier(base, utterance, f"{ATTACK}/gradient")
            gradient_ok = input_gradient_ok(noisy, x, y.to(x.device)).cpu()
            appended = (y, clean, gradient_ok, predictions, details, {})
            outcomes.append([utterance], *appended)
            if progress is not None:
                progress.record([utterance], outcomes.record_of(appended, cost_before))
    return outcomes.gather()

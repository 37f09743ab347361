"""The attack suite: UAR under every attack at every budget, and robust UAR, from per-utterance outcomes.

Robust UAR reads AutoAttack's robust accuracy (Croce and Hein, ICML 2020) as
UAR: an utterance counts as correct at a budget only if the model classifies
it correctly on real data *and* under every attack of that threat model at that
budget; robust UAR is the mean over classes of that per-utterance rate. Attacks
of one threat model (Linf on the features at each eps; the waveform at each
SNR) are grouped by the attack's ``threat_model``, and each group is evaluated at
the budgets its yaml grid names. A universal perturbation (``waveform_universal``)
is its own threat model: one perturbation for every utterance, learnt on the
training split before the suite runs (``ser_adv_brain.evaluation.universal``).

Budgets of one threat model are nested balls, so an adversarial example found
within a smaller budget counts at every larger one: robust UAR at a budget is
the worst case over the attacks at that budget and all smaller ones.

Early exit: within a threat model the budgets run from the smallest, and the
attacks at each in the suite's order, each on the utterances still classified
correctly; an utterance that is wrong on real data, or that an earlier attack
fooled (at this budget or a smaller one), is not attacked again.
The robust UAR (and the worst case after each attack) is then the same as
without early exit, at a fraction of the cost on weak models. Without early
exit (``suite_early_exit: False``) every attack runs on every utterance, so the
report can give each attack's own UAR too.

"The same" is exact, utterance by utterance, for random attacks too (PGD's
random starts and restarts, Square Attack's squares): the suite gives every
attack the utterance IDs as ``keys``, and each utterance's draws come from a
generator seeded by the attack's seed and its ID, whatever else is in its batch.

Over the air (``waveform_room_snr``, attacks with ``rooms``): the model hears the
adversarial audio recorded in each held-out room (``evaluation.over_the_air``), and an
utterance is correct at a budget only if it is correct on real data heard directly, on
real data heard in every held-out room (no perturbation lies within every budget), and
on every attack's audio up to that budget in every held-out room. Beside that, the
same audio heard directly (no room) is scored as well; so that both stay exact under
the early exit, an utterance is attacked until it is fooled both ways.
"""

import dataclasses
import logging
import os
from typing import NamedTuple

import soundfile
import speechbrain as sb
import torch
import torch.nn.functional as F
import tqdm

from ser_adv_brain.attacks.base import Attack
from ser_adv_brain.evaluation.over_the_air import predicted_in_held_out_rooms
from ser_adv_brain.evaluation.progress import batch_outcomes, outcomes_of
from ser_adv_brain.metrics import uar_of_correct
from ser_adv_brain.models import WaveformClassifier, takes_waveform
from ser_adv_brain.training.brain import broadcast_buffers

logger = logging.getLogger(__name__)

# Threat models (an attack's ``domain`` and ``norm``, as in ``suite_budgets``): the budget's name in the report.
BUDGET_TITLES = {
    "features_linf": ("eps", "Linf on the normalised log-Mel features"),
    "features_l2": ("eps", "L2 on the normalised log-Mel features"),
    "waveform_linf": ("eps", "Linf on the waveform samples"),
    "waveform_l2": ("eps", "L2 on the waveform samples"),
    "waveform_snr": ("SNR dB", "L2 on the waveform, as a per-utterance SNR in dB"),
    "waveform_room_snr": ("SNR dB", "L2 on the waveform as a per-utterance SNR in dB, heard in held-out rooms"),
    "waveform_universal": (
        "universal dB",
        "one perturbation for every utterance (universal), its RMS in dB below the median training utterance's",
    ),
}


def in_decibels(group):
    """Whether a threat model's budgets are dB below a signal (a larger number is a smaller ball)."""
    return "dB" in BUDGET_TITLES.get(group, ("",))[0]


# What attacks report per utterance beyond the adversarial input (their ``reports``), and the suite keeps:
# Square Attack's queries (until fooled or out of budget) and the waveform attacks' realised SNR in dB; and,
# for an over-the-air attack, the prediction on its audio heard directly, without a room.
DETAILS = ("queries", "snr_db", "heard_directly")


@dataclasses.dataclass(frozen=True)
class SuiteEntry:
    """One attack of the suite, its name in the report (``Attack.name``, numbered if repeated), and its threat model."""

    attack: Attack
    name: str
    threat_model: str

    @property
    def domain(self):
        return self.attack.domain


class PlanStep(NamedTuple):
    """One step of a suite's plan: the attacks of one ``group`` at one ``budget``, in run order.

    A suite step's group is its threat model (``"features_linf"``); the masking check's destroying budget
    runs in a group of its own (``masking.DESTROY``), so that it never counts in robust UAR.
    """

    group: str
    budget: float
    entries: tuple


class AttackKey(NamedTuple):
    """What an outcome is about: the ``attack`` (its report name) at ``budget`` in ``group``."""

    group: str
    budget: float
    attack: str


def suite_entries(attacks):
    """Names and threat models of a yaml list of attack plug-ins; checks each has a known threat model."""
    if not attacks:
        raise ValueError("The attack suite is empty: give attack_suite (or --attacks) at least one attack.")
    entries, seen = [], {}
    for attack in attacks:
        if not isinstance(attack, Attack):
            raise TypeError(f"attack_suite: {attack!r} is not an attack plug-in (ser_adv_brain.attacks).")
        if attack.threat_model not in BUDGET_TITLES:
            raise ValueError(
                f"attack_suite: {attack!r} has threat model {attack.threat_model!r}; "
                f"the suite knows {sorted(BUDGET_TITLES)}."
            )
        same_threat = [a for a in attacks if a.threat_model == attack.threat_model]
        if attack.rooms is not None and any(a.rooms.settings != attack.rooms.settings for a in same_threat):
            raise ValueError(
                f"attack_suite: the {attack.threat_model} attacks are heard in different rooms; give them one "
                "SimulatedRooms (!ref), so that robust UAR has one set of held-out rooms."
            )
        seen[attack.name] = seen.get(attack.name, 0) + 1
        name = attack.name if seen[attack.name] == 1 else f"{attack.name} ({seen[attack.name]})"
        entries.append(SuiteEntry(attack, name, attack.threat_model))
    return entries


def check_attacks_fit(model, attacks, key):
    """Refuses, before any compute, attacks on log-Mel features for a model that takes the waveform.

    ``attacks``: plug-ins from the yaml key ``key`` (named in the error). Such a model has no features:
    only waveform attacks (``WaveformPGD``, ``WaveformAPGD``) reach it.
    """
    if not takes_waveform(model):
        return
    on_features = [repr(attack) for attack in attacks if attack is not None and attack.domain != "waveform"]
    if on_features:
        raise ValueError(
            f"{key}: {', '.join(on_features)} perturb(s) the log-Mel features, but the model "
            f"({type(model).__name__}) takes the waveform: give it waveform attacks only (WaveformPGD, WaveformAPGD)."
        )


def ball_size(group, budget):
    """A number that grows with the set of inputs a budget allows (an SNR allows more the lower it is)."""
    return -budget if in_decibels(group) else budget


def unfit_budgets(entries, budgets):
    """A sentence where ``budgets`` (threat model -> list, a command's ``--budgets``) does not fit the suite's
    ``entries``: a threat model of the suite without budgets, or budgets for one no attack perturbs; None where
    they fit. Checked before any compute."""
    try:
        suite_plan(entries, budgets)
    except ValueError as error:
        return str(error)
    threats = sorted({entry.threat_model for entry in entries})
    unused = sorted(set(budgets) - set(threats))
    return f"no attack of the suite perturbs {unused} (its threat models: {threats})." if unused else None


def suite_plan(entries, budgets):
    """``[PlanStep(threat_model, budget, entries)]`` in run order: threat models as first met, smallest budget first.

    ``budgets`` maps each threat model to its grid (the yaml's ``suite_budgets``).
    """
    plan = []
    for threat in dict.fromkeys(entry.threat_model for entry in entries):
        if threat not in budgets or not budgets[threat]:
            raise ValueError(f"suite_budgets has no budgets for {threat!r}, which attacks of the suite use.")
        group = tuple(entry for entry in entries if entry.threat_model == threat)
        ordered = sorted((float(b) for b in budgets[threat]), key=lambda b: ball_size(threat, b))
        plan.extend(PlanStep(threat, budget, group) for budget in ordered)
    return plan


def attack_names(plan):
    """The names of a plan's attacks, each once, in run order."""
    return list(dict.fromkeys(entry.name for step in plan for entry in step.entries))


class SplitOutcomes:
    """Per-utterance outcomes of a suite on one split: the bookkeeping behind robust UAR.

    ``predictions[key]`` holds, per utterance, the class predicted under the
    attack ``key = (threat_model, budget, name)``, or -1 where the early exit
    left the utterance alone. ``details[field][key]`` holds what an attack's
    ``run`` reports per utterance beyond its adversarial input (``DETAILS``:
    Square Attack's queries, the waveform attack's realised SNR), NaN where
    the attack does not report it or did not run. For the groups of an
    over-the-air attack (``room_groups``), ``predictions`` are in the worst
    held-out room, ``details["heard_directly"]`` without a room, and
    ``room_clean[group]`` holds the prediction on real data in the worst held-out room.
    """

    def __init__(self, keys, n_classes, room_groups=()):
        self.keys, self.n_classes = list(keys), n_classes
        self.ids, self.targets, self.clean, self.gradient_ok = [], [], [], []
        self.predictions = {key: [] for key in self.keys}
        self.details = {field: {key: [] for key in self.keys} for field in DETAILS}
        self.room_clean = {group: [] for group in room_groups}
        self.attacked_count = 0  # utterance-attacks run on this process (the cost the early exit saves)
        self.forward_rows = {key: 0 for key in self.keys}  # utterances each attack ran through the model

    def append(self, ids, targets, clean, gradient_ok, predictions, details, room_clean=None):
        self.ids.extend(ids)
        for group in self.room_clean:
            self.room_clean[group].extend(room_clean[group].tolist())
        self.targets.extend(targets.tolist())
        self.clean.extend(clean.tolist())
        self.gradient_ok.extend(gradient_ok.tolist())
        for key in self.keys:
            self.predictions[key].extend(predictions[key].tolist())
            for field in DETAILS:  # a field no attack of the batch reports may be left out (NaN)
                given = details[field][key].tolist() if field in details else [float("nan")] * len(ids)
                self.details[field][key].extend(given)

    def cost(self):
        """``(utterance-attacks, forwards per attack)`` so far, to book a batch's share (``record_of``)."""
        return self.attacked_count, dict(self.forward_rows)

    def record_of(self, appended, cost_before):
        """The batch just appended (``append``'s arguments after ``ids``) as a ``BatchProgress`` record
        (``progress.batch_outcomes``), with the cost it added since ``cost_before`` (``cost``)."""
        attacked, rows = cost_before
        added = {key: self.forward_rows[key] - rows[key] for key in self.keys}
        return batch_outcomes(appended, self.attacked_count - attacked, added)

    def append_recorded(self, ids, record):
        """Appends a batch read back from its ``BatchProgress`` record (``record_of``), its cost included."""
        appended, attacked, forward_rows = outcomes_of(record, AttackKey)
        self.append(ids, *appended)
        self.attacked_count += attacked
        for key, rows in forward_rows.items():
            self.forward_rows[key] += rows

    def gather(self):
        """Joins the outcomes of every DDP process, sorted by utterance ID, as tensors (in place)."""
        parts = [self.__dict__]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, dict(self.__dict__))
        ids = [i for part in parts for i in part["ids"]]
        order = sorted(range(len(ids)), key=ids.__getitem__)

        def joined(field, key=None, detail=None, dtype=torch.long):
            def values_of(part):
                value = part[field] if key is None else part[field][key]
                return value if detail is None else value[detail]

            values = [v for part in parts for v in values_of(part)]
            return torch.tensor([values[i] for i in order], dtype=dtype)

        self.ids = [ids[i] for i in order]
        self.targets, self.clean = joined("targets"), joined("clean")
        self.gradient_ok = joined("gradient_ok").bool()
        self.room_clean = {group: joined("room_clean", group) for group in self.room_clean}
        self.predictions = {key: joined("predictions", key) for key in self.keys}
        self.details = {
            field: {key: joined("details", field, key, torch.float64) for key in self.keys} for field in DETAILS
        }
        self.attacked_count = sum(part["attacked_count"] for part in parts)
        self.forward_rows = {key: sum(part["forward_rows"][key] for part in parts) for key in self.keys}
        return self

    # What the report reads: everything below works on gathered tensors.

    @property
    def clean_correct(self):
        return self.clean == self.targets

    def correct_unattacked(self, group, directly=False):
        """Correct on real data; in an over-the-air group, also in every held-out room (unless ``directly``)."""
        correct = self.clean_correct.clone()
        if group in self.room_clean and not directly:
            correct &= self.room_clean[group] == self.targets
        return correct

    def fooled(self, key, directly=False):
        """Utterances the attack was run on and that it got misclassified (``directly``: an over-the-air
        attack's audio heard without a room)."""
        pred = self.details["heard_directly"][key].nan_to_num(-1).long() if directly else self.predictions[key]
        return (pred >= 0) & (pred != self.targets)

    def measured_alone(self, key):
        """Whether the attack ran on every utterance correct on real data (so its own UAR is known)."""
        return bool(((self.predictions[key] >= 0) | ~self.clean_correct).all())

    def robust_after(self, threat, budget, name=None, directly=False):
        """Correct unattacked (``correct_unattacked``), under every attack of the threat model at any smaller
        budget, and under every attack at this budget up to ``name`` (all if None); ``directly``: an
        over-the-air attack's audio heard without a room.

        An adversarial example found within a smaller budget lies within this one too (the balls are nested).
        """
        correct = self.correct_unattacked(threat, directly)
        for key in self.keys:
            if key[0] == threat and ball_size(threat, key[1]) < ball_size(threat, budget):
                correct &= ~self.fooled(key, directly)
            elif key[:2] == (threat, budget):
                correct &= ~self.fooled(key, directly)
                if key[2] == name:
                    break
        return correct

    def robust_before(self, threat, budget, name):
        """``robust_after`` up to the attack before ``name`` at this budget: the utterances ``name`` was run on
        under early exit (those correct on real data, without early exit)."""
        correct = self.correct_unattacked(threat)
        for key in self.keys:
            if key[0] == threat and ball_size(threat, key[1]) < ball_size(threat, budget):
                correct &= ~self.fooled(key)
            elif key[:2] == (threat, budget):
                if key[2] == name:
                    break
                correct &= ~self.fooled(key)
        return correct

    def uar(self, correct):
        return uar_of_correct(correct, self.targets, self.n_classes)

    def forward_passes_per_utterance(self, group, budget):
        """The model forwards the attacks of ``group`` at ``budget`` cost, per utterance of the split."""
        rows = sum(count for key, count in self.forward_rows.items() if key[:2] == (group, budget))
        return rows / max(1, len(self.ids))


def input_gradient_ok(model, feats, targets):
    """Per utterance: whether the input gradient of the cross-entropy is finite and not all zero."""
    inputs = feats.detach().requires_grad_(True)
    with torch.enable_grad():
        logits, _ = model(inputs)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits.float(), targets, reduction="sum"), inputs)
    flat = grad.flatten(1)
    return torch.isfinite(flat).all(dim=1) & (flat != 0).any(dim=1)


class CountingForward(torch.nn.Module):
    """The model, counting the utterances it runs forward (an attack's cost, as AutoAttack reports it)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.rows = model, 0

    def forward(self, inputs):
        self.rows += len(inputs)
        return self.model(inputs)


def run_attack(entry, budget, model, waveform_model, wavs, feats, targets, keys):
    """Adversarial input of ``entry`` at ``budget``, the model's predictions on it, and its ``DETAILS``.

    ``keys``, the utterance IDs, seed each utterance's random draws (see
    ``attacks.base.random_rows``). An attack that ``reports`` more than its
    adversarial input returns it from ``run`` (its first field), with those fields.
    """
    model, inputs = (model, feats) if entry.domain == "features" else (waveform_model, wavs)
    if entry.attack.reports:
        result = entry.attack.run(model, inputs, targets, eps=budget, keys=keys)
        adversarial, details = result[0], {field: getattr(result, field) for field in entry.attack.reports}
    else:
        adversarial, details = entry.attack.perturb(model, inputs, targets, eps=budget, keys=keys), {}
    with torch.no_grad():
        logits, _ = model(adversarial)
    predicted = logits.argmax(dim=-1)
    if entry.attack.rooms is not None:  # over the air: scored in the held-out rooms, and heard directly beside
        details["heard_directly"] = predicted
        predicted = predicted_in_held_out_rooms(entry.attack.rooms, model, adversarial, targets, keys)
    return adversarial.detach(), predicted, details


def evaluate_suite(
    brain, dataset, plan, early_exit=True, loader_kwargs=None, max_key="UAR", wav_pairs=None, progress=None
):
    """Runs a suite's ``plan`` (see ``suite_plan``) on one split and returns its gathered ``SplitOutcomes``.

    Arguments
    ---------
    brain : EmotionBrain
        Restores the checkpoint ``max_key`` selects and attacks its model in eval mode.
    dataset : DynamicItemDataset
    plan : list
        ``(group, budget, entries)`` in run order.
    early_exit : bool
        Attack only what is still classified correctly (see the module docstring).
    loader_kwargs : dict
    max_key : str or None
        The checkpoint: the best by this key, or the most recent if None.
    wav_pairs : tuple (folder, n) or None
        Writes real and adversarial audio of up to ``n`` utterances of this
        process's first batch under each waveform attack to ``folder``.
    progress : BatchProgress or None
        Batches done by an earlier, killed run of the same evaluation are read from it instead of attacked
        again, and every batch attacked is recorded in it (``ser_adv_brain.evaluation.progress``).
    """
    keys = [AttackKey(group, budget, entry.name) for group, budget, entries in plan for entry in entries]
    brain.on_evaluate_start(max_key=max_key)
    brain.modules.eval()
    broadcast_buffers(brain.modules)
    model = CountingForward(brain.model)
    # A model that takes the waveform is its own waveform classifier (its "features" are the audio).
    waveform_model = (
        model
        if brain.takes_waveform
        else CountingForward(WaveformClassifier(brain.modules.compute_features, brain.modules.normalizer, brain.model))
    ).eval()
    counters = list({id(m): m for m in (model, waveform_model)}.values())  # each model's forwards counted once
    for _, _, entries in plan:
        for entry in entries:
            if entry.attack.needs_source_model:  # a transfer attack maps its fake data to our features
                entry.attack.set_target_normalizer(brain.modules.normalizer)
    loader_kwargs = {**(loader_kwargs or {}), "ckpt_prefix": None}
    loader = brain.make_dataloader(dataset, sb.Stage.TEST, **loader_kwargs)
    room_groups = {group: entries[0].attack.rooms for group, _, entries in plan if entries[0].attack.rooms is not None}
    outcomes = SplitOutcomes(keys, brain.hparams.n_classes, room_groups)
    progress_bar = tqdm.tqdm(loader, desc=f"attack suite ({len(dataset)} utterances)", disable=brain.noprogressbar)
    for batch in progress_bar:
        kept = progress.done(batch.id) if progress is not None else None
        if kept is not None:
            outcomes.append_recorded(list(batch.id), kept)
            wav_pairs = None  # written with the first batch, when it was attacked
            continue
        cost_before = outcomes.cost()
        batch = batch.to(brain.device)
        targets, wavs = brain.targets(batch), batch.sig.data
        with torch.no_grad():
            feats = brain.compute_features(wavs)
            clean = model(feats)[0].argmax(dim=-1)
            room_clean = {
                group: predicted_in_held_out_rooms(rooms, waveform_model, wavs, targets, list(batch.id))
                for group, rooms in room_groups.items()
            }
        predictions = {}
        details = {field: {} for field in DETAILS}
        # Per threat model: still correct at every smaller budget (the plan runs the smallest first).
        still_correct = {group: clean == targets for group, _, _ in plan}
        # Over the air: correct in every held-out room unattacked, and attacked until fooled both there and
        # heard directly, so that both figures are the same as without early exit.
        still_direct = {group: clean == targets for group in room_groups}
        for group in room_groups:
            still_correct[group] &= room_clean[group] == targets
        for group, budget, entries in plan:
            for entry in entries:
                alive = still_correct[group] | still_direct[group] if group in still_direct else still_correct[group]
                if not early_exit:
                    alive = torch.ones_like(targets, dtype=torch.bool)
                key = AttackKey(group, budget, entry.name)
                pred = torch.full_like(targets, -1)
                for field in DETAILS:
                    details[field][key] = torch.full(targets.shape, float("nan"), dtype=torch.float64)
                index = alive.nonzero().flatten()
                if len(index):
                    for counter in counters:
                        counter.rows = 0
                    adversarial, pred[index], reported = run_attack(
                        entry,
                        budget,
                        model,
                        waveform_model,
                        wavs[index],
                        feats[index],
                        targets[index],
                        [batch.id[i] for i in index],
                    )
                    for field, values in reported.items():
                        details[field][key][index.cpu()] = values.detach().cpu().double()
                    outcomes.attacked_count += len(index)
                    outcomes.forward_rows[key] += sum(counter.rows for counter in counters)
                    if early_exit:
                        still_correct[group][index] &= pred[index] == targets[index]
                        if group in still_direct:
                            still_direct[group][index] &= reported["heard_directly"] == targets[index]
                    if wav_pairs and entry.domain == "waveform":
                        folder, n = wav_pairs
                        ids = [batch.id[i] for i in index[:n]]
                        write_wav_pairs(
                            folder,
                            ids,
                            wavs[index],
                            adversarial,
                            f"{entry.name}_{group}_{budget:g}",
                            brain.hparams.sample_rate,
                        )
                predictions[key] = pred
        wav_pairs = None  # from the first batch only
        gradient_ok = input_gradient_ok(model, feats, targets)
        room_clean = {group: prediction.cpu() for group, prediction in room_clean.items()}
        appended = (targets.cpu(), clean.cpu(), gradient_ok.cpu(), predictions, details, room_clean)
        outcomes.append(list(batch.id), *appended)
        if progress is not None:
            progress.record(batch.id, outcomes.record_of(appended, cost_before))
    return outcomes.gather()


def write_wav_pairs(folder, ids, real, adversarial, tag, sample_rate):
    """16-bit wav files of real and adversarial audio, to listen to."""
    os.makedirs(folder, exist_ok=True)
    for i, utterance in enumerate(ids):
        soundfile.write(
            os.path.join(folder, f"{utterance}_real.wav"), real[i].cpu().numpy(), sample_rate, subtype="PCM_16"
        )
        path = os.path.join(folder, f"{utterance}_{tag}.wav".replace(" ", "").replace("(", "").replace(")", ""))
        soundfile.write(path, adversarial[i].cpu().numpy(), sample_rate, subtype="PCM_16")


def budget_text(group, budget):
    """``eps 0.02 on the features`` / ``40 dB SNR on the waveform``, for the report's sentences."""
    if group.endswith("room_snr"):
        return f"{budget:g} dB SNR on the waveform, heard in held-out rooms"
    if group == "waveform_universal":
        return f"{budget:g} dB below the reference level (universal, on the waveform)"
    if in_decibels(group):
        return f"{budget:g} dB SNR on the waveform"
    return f"eps {budget:g} ({group.replace('_', ' ')})"

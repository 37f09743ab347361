"""Gradient-masking checks on an attack suite's per-utterance outcomes, stated as sentences.

After Carlini et al., "On Evaluating Adversarial Robustness" (2019), section 5,
and the checks of ART's ``SecurityCurve``: a defence that only hides its
gradients shows it in the attacks' own results.

- an iterative attack is weaker than FGSM at the same budget;
- UAR does not fall to chance at a budget that destroys the input (on the features; and, for an
  over-the-air attack, at an SNR where its audio drowns the speech, heard in the held-out rooms);
- a transfer or query-only (black-box) attack beats the white-box ones;
- a universal perturbation fools an utterance that every per-utterance waveform
  attack left correct within an SNR budget the universal one's realised SNR
  meets: one perturbation for all utterances is a point of each utterance's
  ball, so a per-utterance attack that cannot find as much is not seeing the
  model's gradient (a weaker attack beating a stronger one, as FGSM above);
- the input gradient is zero or not finite for a notable share of utterances.

Each check reads the utterances the later attack fooled and the earlier one
left correct, so it gives the same verdict with and without early exit as long
as the suite runs white-box iterative attacks before FGSM, and black-box ones
last (the default suite's order).
"""

import torch

from ser_adv_brain.evaluation.suite import PlanStep, budget_text, suite_entries, suite_plan
from ser_adv_brain.evaluation.tiers import tier_attacks

UNIVERSAL, PER_UTTERANCE = "waveform_universal", "waveform_snr"  # the groups the universal check compares

# A share of utterances that a masking check calls notable (Carlini et al. 2019 give no number).
NOTABLE_SHARE = 0.05
DESTROY = "destroy"  # the plan group of the destroying-budget check (its over-the-air one: destroy_<threat model>)
# Over the air, a perturbation 10 dB louder than the speech: in any room, what the microphone records is mostly the
# attacker's audio, so an attack that finds the model's errors drives UAR in the held-out rooms to chance or below.
DESTROY_SNR_DB = -10.0


def destroy_plan(entries, eps, waveform=False):
    """The plan groups of the destroying-budget check (none if ``eps`` is 0 or None): the white-box feature
    attacks at ``eps`` (for a model that takes the waveform, ``waveform``: the white-box SNR attacks on the
    waveform at ``eps`` dB), and the over-the-air attacks at ``DESTROY_SNR_DB``, heard in their held-out rooms.

    Single-step attacks first: this check reads only the worst case over them, which the early exit
    leaves unchanged in any order, and at such a budget FGSM fools nearly everything, so the iterative
    attacks after it have almost nothing left to run on.
    """
    if waveform:
        white_box = [e for e in entries if e.threat_model == "waveform_snr" and e.attack.kind != "black-box"]
    else:
        white_box = [e for e in entries if e.domain == "features" and e.attack.kind != "black-box"]
    white_box.sort(key=lambda e: e.attack.kind != "single-step")
    plan = [PlanStep(DESTROY, float(eps), tuple(white_box))] if white_box and eps else []
    over_the_air = [e for e in entries if e.attack.rooms is not None and e.attack.kind != "black-box"]
    over_the_air.sort(key=lambda e: e.attack.kind != "single-step")
    if over_the_air and eps:
        plan.append(PlanStep(f"{DESTROY}_{over_the_air[0].threat_model}", DESTROY_SNR_DB, tuple(over_the_air)))
    return plan


def universal_check_plan(plan):
    """The universal check's per-utterance attacks where the suite has none (the audio tier: its SNR attacks are
    the standard tier's): the quick tier's waveform PGD, the cheapest per-utterance attack that still follows the
    model's gradient, at each budget of the suite's universal perturbations, as check groups that count in no
    robust UAR. Empty if the suite has no universal perturbation, or has its own per-utterance SNR attacks (they
    are the check's then)."""
    groups = {step.group for step in plan}
    if UNIVERSAL not in groups or PER_UTTERANCE in groups:
        return []
    quick = suite_entries(tier_attacks("quick", domain="waveform"))
    entries = [entry for entry in quick if entry.threat_model == PER_UTTERANCE]
    return suite_plan(entries, {PER_UTTERANCE: sorted({step.budget for step in plan if step.group == UNIVERSAL})})


def fooled_beyond(outcomes, group, budget, later, earlier):
    """Utterances correct on real data that ``later`` fooled and none of ``earlier`` did."""
    mask = outcomes.clean_correct & outcomes.fooled((group, budget, later.name))
    for entry in earlier:
        mask &= ~outcomes.fooled((group, budget, entry.name))
    return int(mask.sum())


def masking_sentences(outcomes, plan, split):
    """The sentences of the checks that fire on one split's outcomes (an empty list if none does)."""
    sentences = []
    n_correct = max(1, int(outcomes.clean_correct.sum()))
    chance = 1.0 / outcomes.n_classes
    for group, budget, entries in plan:
        if group.startswith(DESTROY):
            uar = outcomes.uar(outcomes.robust_after(group, budget))
            names = ", ".join(e.name for e in entries)
            if uar > chance and group == DESTROY:
                where = budget_text(entries[0].threat_model, budget)
                sentences.append(
                    f"On {split}, at {where} (a budget that destroys the input) the "
                    f"white-box attacks ({names}) leave robust UAR at {uar:.3f}, above chance ({chance:.3f}): "
                    "the attacks do not find the model's errors even where any input is reachable."
                )
            elif uar > chance:
                sentences.append(
                    f"On {split}, at {budget_text(group, budget)} (the attacker's audio louder than the speech) "
                    f"the over-the-air attacks ({names}) leave robust UAR at {uar:.3f}, above chance "
                    f"({chance:.3f}): audio made in the attack rooms does not fool the model in the held-out rooms "
                    "even where it drowns the speech (too few samples or steps, held-out rooms unlike the attack "
                    "rooms, or gradients that the model masks)."
                )
            continue
        kinds = {e.name: e.attack.kind for e in entries}
        iterative = [e for e in entries if kinds[e.name] == "iterative"]
        white_box = [e for e in entries if kinds[e.name] != "black-box"]
        where = f"On {split}, at {budget_text(group, budget)}"
        for entry in entries:
            if kinds[entry.name] == "single-step":
                for stronger in iterative:
                    n = fooled_beyond(outcomes, group, budget, entry, [stronger])
                    if n / n_correct >= NOTABLE_SHARE:
                        sentences.append(
                            f"{where}, {entry.name} fooled the model on {n} utterances ({n / n_correct:.0%} of "
                            f"those correct on real data) that {stronger.name} left correct: the iterative "
                            "attack is weaker than FGSM at the same budget."
                        )
            if kinds[entry.name] == "black-box" and white_box:
                n = fooled_beyond(outcomes, group, budget, entry, white_box)
                if n / n_correct >= NOTABLE_SHARE:
                    sentences.append(
                        f"{where}, the black-box {entry.name} fooled the model on {n} utterances "
                        f"({n / n_correct:.0%} of those correct on real data) that every white-box attack "
                        f"({', '.join(e.name for e in white_box)}) left correct: it beats the white-box attacks."
                    )
    sentences += universal_sentences(outcomes, plan, split)
    bad = int((~outcomes.gradient_ok).sum())
    if bad / max(1, len(outcomes.ids)) >= NOTABLE_SHARE:
        sentences.append(
            f"On {split}, the input gradient of the loss is zero or not finite for {bad} of "
            f"{len(outcomes.ids)} utterances ({bad / len(outcomes.ids):.0%}): gradient attacks cannot see them."
        )
    return sentences


def universal_beyond(outcomes, key, snr_budgets):
    """Utterances correct on real data that the universal attack ``key`` fooled at a realised SNR of at least
    one of ``snr_budgets`` while every per-utterance waveform attack within that budget left them correct."""
    fooled = outcomes.clean_correct & outcomes.fooled(key)
    snr = outcomes.details["snr_db"][key]
    beaten = torch.zeros_like(fooled)
    for budget in snr_budgets:
        beaten |= fooled & (snr >= budget) & outcomes.robust_after(PER_UTTERANCE, budget)
    return int(beaten.sum())


def universal_sentences(outcomes, plan, split):
    """The universal check's sentences: one per universal attack and budget that beat the per-utterance ones."""
    n_correct = max(1, int(outcomes.clean_correct.sum()))
    snr_budgets = [budget for group, budget, _ in plan if group == PER_UTTERANCE]
    sentences = []
    for group, budget, entries in plan:
        if group != UNIVERSAL or not snr_budgets:
            continue
        for entry in entries:
            n = universal_beyond(outcomes, (group, budget, entry.name), snr_budgets)
            if n / n_correct >= NOTABLE_SHARE:
                sentences.append(
                    f"On {split}, at {budget_text(group, budget)}, {entry.name} fooled the model on {n} utterances "
                    f"({n / n_correct:.0%} of those correct on real data) that every per-utterance waveform attack "
                    "left correct at an SNR budget the universal perturbation's realised SNR meets: the "
                    "per-utterance attacks do not find what one perturbation for all utterances finds."
                )
    return sentences


NONE_FIRED = (
    "No gradient-masking check fired: no iterative attack was weaker than FGSM, robust UAR fell to chance at "
    "the destroying budget, no black-box attack beat the white-box ones, and the input gradient was zero or "
    "not finite for fewer than {:.0%} of the utterances."
).format(NOTABLE_SHARE)


def masking_report(outcomes_by_split, plan):
    """The markdown section of the checks: a sentence per check that fired, or the sentence saying none did."""
    sentences = [s for split, outcomes in outcomes_by_split.items() for s in masking_sentences(outcomes, plan, split)]
    lines = ["### Gradient-masking checks (Carlini et al. 2019)", ""] + [f"- {s}" for s in sentences or [NONE_FIRED]]
    if not any(group == DESTROY for group, _, _ in plan):
        lines.append(
            "- Not checked: a destroying budget on the features or the per-utterance SNR (masking_check_eps): no "
            "white-box attack of the suite perturbs them."
        )
    groups = {group for group, _, _ in plan}
    if UNIVERSAL in groups and PER_UTTERANCE not in groups:
        lines.append(
            "- Not checked: universal perturbations against the per-utterance waveform attacks (suite_budgets has "
            f"no {PER_UTTERANCE} budgets)."
        )
    elif UNIVERSAL in groups and not any(universal_sentences(o, plan, s) for s, o in outcomes_by_split.items()):
        names = dict.fromkeys(entry.name for group, _, entries in plan if group == PER_UTTERANCE for entry in entries)
        lines.append(
            f"- No universal perturbation fooled an utterance that the per-utterance waveform attacks "
            f"({', '.join(names)}) left correct within an SNR budget its realised SNR meets."
        )
    return "\n".join(lines) + "\n"

"""Gradient-masking checks on an attack suite's per-utterance outcomes, stated as sentences.

After Carlini et al., "On Evaluating Adversarial Robustness" (2019), section 5,
and the checks of ART's ``SecurityCurve``: a defence that only hides its
gradients shows it in the attacks' own results.

- an iterative attack is weaker than FGSM at the same budget;
- UAR does not fall to chance at a budget that destroys the input;
- a transfer or query-only (black-box) attack beats the white-box ones;
- the input gradient is zero or not finite for a notable share of utterances.

Each check reads the utterances the later attack fooled and the earlier one
left correct, so it gives the same verdict with and without early exit as long
as the suite runs white-box iterative attacks before FGSM, and black-box ones
last (the default suite's order).
"""

from ser_adv_brain.evaluation.suite import PlanStep, budget_text

# A share of utterances that a masking check calls notable (Carlini et al. 2019 give no number).
NOTABLE_SHARE = 0.05
DESTROY = "destroy"  # the plan group of the destroying-budget check


def destroy_plan(entries, eps, waveform=False):
    """The plan group of the destroying-budget check: the white-box feature attacks at ``eps``; for a model
    that takes the waveform (``waveform``), the white-box SNR attacks on the waveform at ``eps`` dB.

    Single-step attacks first: this check reads only the worst case over them, which the early exit
    leaves unchanged in any order, and at such a budget FGSM fools nearly everything, so the iterative
    attacks after it have almost nothing left to run on.
    """
    if waveform:
        white_box = [e for e in entries if e.threat_model == "waveform_snr" and e.attack.kind != "black-box"]
    else:
        white_box = [e for e in entries if e.domain == "features" and e.attack.kind != "black-box"]
    white_box.sort(key=lambda e: e.attack.kind != "single-step")
    return [PlanStep(DESTROY, float(eps), tuple(white_box))] if white_box and eps else []


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
        if group == DESTROY:
            uar = outcomes.uar(outcomes.robust_after(group, budget))
            if uar > chance:
                names, where = ", ".join(e.name for e in entries), budget_text(entries[0].threat_model, budget)
                sentences.append(
                    f"On {split}, at {where} (a budget that destroys the input) the "
                    f"white-box attacks ({names}) leave robust UAR at {uar:.3f}, above chance ({chance:.3f}): "
                    "the attacks do not find the model's errors even where any input is reachable."
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
    bad = int((~outcomes.gradient_ok).sum())
    if bad / max(1, len(outcomes.ids)) >= NOTABLE_SHARE:
        sentences.append(
            f"On {split}, the input gradient of the loss is zero or not finite for {bad} of "
            f"{len(outcomes.ids)} utterances ({bad / len(outcomes.ids):.0%}): gradient attacks cannot see them."
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
        lines.append("- Not checked: the destroying budget (masking_check_eps) has no white-box attack to run.")
    return "\n".join(lines) + "\n"

"""Randomised smoothing's report: the certificates, certified UAR against radius, and the adaptive attack's outcome.

``certify.py``'s files, in the output folder:

- ``certificates.csv``: per split and utterance, the certified class (or ``abstain``), ``pA``, the raw
  radius, the radius as that utterance's SNR in dB (waveform) and as the Linf budget it covers;
- ``certified_uar.csv``: certified UAR at every radius where it changes (and at the markdown's grid), against
  the raw radius and against the SNR or the Linf budget: the source of ``certified_uar.png``;
- ``smoothed_attack.csv``: the adaptive attack's rows, in ``attack_suite.csv``'s format (when it ran);
- ``certification.md``: what is certified and how, then the tables.
"""

import math
import os

import torch

from ser_adv_brain.evaluation.certification import certified_budgets
from ser_adv_brain.evaluation.smoothing import ABSTAIN_LABEL
from ser_adv_brain.evaluation.suite import attack_names, ball_size
from ser_adv_brain.reports.suite_report import CSV_FIELDS, suite_rows
from ser_adv_brain.tables import markdown_table, uar_text, write_csv

CERTIFICATE_FIELDS = [
    "split",
    "id",
    "emotion",
    "prediction",
    "p_lower",
    "radius",
    "radius_snr_db",
    "radius_linf_eps",
    "signal_norm",
]
CURVE_FIELDS = ["split", "axis", "value", "certified_UAR"]
# The second axis of the curve: the radius as each utterance's SNR (waveform), or as the Linf budget it covers.
SECOND_AXIS = {"waveform": "snr_db", "features": "linf_eps"}


def certificate_rows(certificates, labels, domain):
    """``certificates.csv``'s rows: split -> ``SplitCertificates``, ``labels`` the emotions in index order;
    ``radius_snr_db`` is left empty on the features, where a radius has no dB value."""
    rows = []
    for split, certs in certificates.items():
        snr, eps = certs.snr_db.tolist(), certs.linf_eps.tolist()
        for i, utterance in enumerate(certs.ids):
            prediction = int(certs.prediction[i])
            rows.append(
                {
                    "split": split,
                    "id": utterance,
                    "emotion": labels[int(certs.targets[i])],
                    "prediction": labels[prediction] if prediction >= 0 else ABSTAIN_LABEL,
                    "p_lower": f"{float(certs.p_lower[i]):.6f}",
                    "radius": f"{float(certs.radius[i]):.6g}",
                    "radius_snr_db": f"{snr[i]:.2f}" if domain == "waveform" else "",
                    "radius_linf_eps": f"{eps[i]:.6g}",
                    "signal_norm": f"{float(certs.signal_norm[i]):.6g}",
                }
            )
    return rows


def radius_grid(smoothing):
    """The markdown's radii: multiples of sigma / 4 up to the largest certifiable radius, and that radius."""
    steps = int(smoothing.max_radius / (smoothing.sigma / 4))
    return [k * smoothing.sigma / 4 for k in range(steps + 1)] + [smoothing.max_radius]


def curve_rows(certificates, smoothing, budgets):
    """``certified_uar.csv``'s rows: certified UAR against the raw radius, and against each utterance's radius as
    an SNR (waveform) or as the Linf budget it covers (features), at every value where it changes, at the grid and
    at ``budgets`` of that threat model, with a point past each end (beyond the largest certifiable radius it is 0)."""
    rows, second = [], SECOND_AXIS[smoothing.domain]
    threat = "waveform_snr" if second == "snr_db" else "features_linf"
    beyond = 1.05 * smoothing.max_radius
    for split, certs in certificates.items():
        won = certs.correct
        radii = sorted({0.0, beyond, *radius_grid(smoothing), *certs.radius[won].tolist()})
        rows += [{"split": split, "axis": "radius", "value": r, "certified_UAR": certs.uar(r)} for r in radii]
        values = {float(b) for b in budgets.get(threat, ())}
        if second == "snr_db":  # from the smallest budget (the largest SNR) to the largest
            values |= {v for v in certs.snr_db[won].tolist() if math.isfinite(v)}
            values = sorted(values | ({max(values) + 3.0, min(values) - 3.0} if values else set()), reverse=True)
        else:
            values = sorted(values | {0.0, beyond / math.sqrt(certs.dims), *certs.linf_eps[won].tolist()})
        rows += [
            {"split": split, "axis": second, "value": v, "certified_UAR": certs.uar_within(threat, v)} for v in values
        ]
    return rows


def policy_markdown(smoothing, facts):
    """What is certified, where the noise is added, the gain policy and what the radius means, for ``facts``
    (``model``, ``sample_rate``, ``samples``, ``frames``, ``n_mels``)."""
    if smoothing.domain == "waveform":
        noise = (
            f"on the {facts['samples']} samples the model reads ({facts['sample_rate']} Hz mono, the utterance "
            f"brought to {facts['frames']} frames: centre crop of longer clips, tiling of shorter ones), before the "
            "log-Mel; the noisy signal is neither clipped to full scale nor rounded to 16-bit PCM"
        )
        base = f"`{facts['model']}(z-score(log-Mel(x)))`, `x` those samples"
        units = (
            "**Gain policy**: none. Samples are the file's as soundfile decodes them (16-bit PCM: integer / 32768, "
            "full scale 1.0), averaged over channels and resampled; no peak, loudness or DC normalisation, no "
            "clipping. The radius is an L2 norm over the samples in those full-scale units.\n\n"
            "**Radius in dB**: `20 log10(|x|_2 / R)` over the same samples, the SNR of a perturbation at the "
            "certificate's edge, as the suite's `waveform_snr` budget: the certificate covers every perturbation "
            "of a higher SNR. Noise of standard deviation sigma has `|d|_2 = sigma sqrt(N)`, "
            f"so the certified SNR is the noise's own SNR plus `20 log10(sqrt(N) / PhiInverse(pA))`, "
            f"N = {facts['samples']}."
        )
    else:
        dims = facts["frames"] * facts["n_mels"]
        noise = (
            f"on the z-scored log-Mel features ({facts['frames']} frames x {facts['n_mels']} Mel bins = {dims} "
            "values), after the normaliser"
        )
        base = f"`{facts['model']}(z)`, `z` the z-scored log-Mel"
        units = (
            "**Gain policy**: the samples are read without gain, peak or loudness normalisation (soundfile's "
            "full-scale floats, as for the waveform); their log-Mel is z-scored per Mel bin with the training "
            "split's statistics, the z-scored values being what the noise and the radius are measured in.\n\n"
            "**What the radius means**: an L2 norm in z-score units over the "
            f"{dims} features. It covers every Linf perturbation of the features up to `R / sqrt({dims})` (the "
            "`radius_linf_eps` column; the suite's `features_linf` threat model). It has no dB value: the log-Mel "
            "and its z-score are not linear in the audio, and a feature perturbation need not be any waveform's."
        )
    return "\n".join(
        [
            f"**Certified object**: the smoothed classifier `g(x) = argmax_c P(f(x + d) = c)`, "
            f"`d ~ N(0, sigma^2 I)`, sigma = {smoothing.sigma:g}, of the base classifier `f` = {base}; "
            "Cohen, Rosenfeld and Kolter, ICML 2019.",
            "",
            f"**Noise**: added {noise}.",
            "",
            units,
            "",
            f"**Certificate**: CERTIFY with n0 = {smoothing.n0} votes choosing the class, n = {smoothing.n} "
            f"votes bounding its probability (one-sided Clopper-Pearson, alpha = {smoothing.alpha:g}), radius "
            "`R = sigma PhiInverse(pA)` where `pA > 1/2`, else abstain; an abstention counts as wrong at every "
            f"radius. The largest radius n votes can certify is {smoothing.max_radius:.4g} "
            f"({smoothing.max_radius / smoothing.sigma:.3f} sigma). Noise keyed per utterance "
            f"(seed {smoothing.seed}): a certificate does not depend on its batch.",
        ]
    )


def budget_rows(certificates, smoothing, budgets, attacked=None, plan=()):
    """Certified UAR at each budget of ``budgets`` a certificate in the smoothing's domain covers
    (``certified_budgets``), and, with the adaptive attack's outcomes, robust UAR under it and the certified
    utterances it still moved to another emotion."""
    rows = []
    for threat, budget in certified_budgets(smoothing.domain, budgets):
        row = {"threat model": threat, "budget": budget}
        for split, certs in certificates.items():
            row[f"radius ({split}, median)"] = float(certs.budget_radius(threat, budget).median())
            row[f"certified ({split})"] = certs.uar_within(threat, budget)
            outcomes = (attacked or {}).get(split)
            if outcomes is None or not any(g == threat and b == budget for g, b, _ in plan):
                continue
            if outcomes.ids != certs.ids:
                raise ValueError(f"The {split} split's certificates and attack outcomes are of other utterances.")
            row[f"under attack ({split})"] = outcomes.uar(outcomes.robust_after(threat, budget))
            # Certified, yet PREDICT named another emotion under the attack (an abstention is no
            # contradiction): each case has probability at most about 2 alpha, so more than a few are a bug.
            moved = certs.certified_within(threat, budget) & moved_to_another_emotion(outcomes, threat, budget)
            row[f"certified yet fooled ({split})"] = int(moved.sum())
        rows.append(row)
    return rows


def moved_to_another_emotion(outcomes, threat, budget):
    """Per utterance: an attack of ``threat`` at ``budget`` or a smaller one made PREDICT name a wrong emotion
    (not abstain: ``attack_smoothed`` books an abstention as class ``n_classes``)."""
    moved = torch.zeros(len(outcomes.ids), dtype=torch.bool)
    for key, predictions in outcomes.predictions.items():
        if key[0] == threat and ball_size(threat, key[1]) <= ball_size(threat, budget):
            moved |= outcomes.fooled(key) & (predictions != outcomes.n_classes)
    return moved


def certification_markdown(certificates, smoothing, facts, title, budgets, attacked=None, plan=(), draws=None):
    """``certification.md``: the policies, certified UAR on the radius grid, and at the budgets."""
    splits = list(certificates)
    lines = [f"### {title}", "", policy_markdown(smoothing, facts), ""]
    abstained = ", ".join(
        f"{int((c.prediction < 0).sum())} of {len(c.ids)} {split} utterances" for split, c in certificates.items()
    )
    lines += [f"CERTIFY abstained on {abstained}.", ""]
    second = SECOND_AXIS[smoothing.domain]
    table = []
    for radius in radius_grid(smoothing):
        row = [f"{radius:.4g}", f"{radius / smoothing.sigma:.2f}"]
        for split in splits:
            certs = certificates[split]
            if second == "snr_db":
                median = float(certs.signal_norm.median())
                row.append(f"{20 * math.log10(median / radius):.1f}" if radius > 0 else "inf")
            else:
                row.append(f"{radius / math.sqrt(certs.dims):.4g}")
            row.append(uar_text(certs.uar(radius)))
        table.append(row)
    axis = "SNR dB of the median utterance" if second == "snr_db" else "Linf eps covered"
    headers = ["radius", "radius / sigma"] + [h for s in splits for h in (f"{axis} ({s})", f"certified UAR ({s})")]
    lines += ["Certified UAR against the raw radius (L2, the units of the smoothed input):", ""]
    lines += [markdown_table(table, headers), ""]
    rows = budget_rows(certificates, smoothing, budgets, attacked, plan)
    if rows:
        lines += [
            "Certified UAR at the suite's budgets, each utterance at its own radius"
            + (
                f"; under the adaptive attack ({', '.join(attack_names(plan))}"
                f" on the base classifier with fresh noise at every pass, each pass the mean softmax of {draws} "
                "noisy copies, its gradients averaged over the attack's eot_iter passes; scored by PREDICT, an "
                "abstention counting as wrong); and the certified utterances it made PREDICT call another "
                "emotion (at most about 2 alpha each: more than a few mean a bug)"
                if attacked
                else ""
            )
            + ":",
            "",
            markdown_table([[_cell(k, v) for k, v in row.items()] for row in rows], list(rows[0])),
            "",
        ]
    return "\n".join(lines)


def _cell(column, value):
    """A UAR as the reports write it; a radius or budget to 4 significant digits; a count as it is."""
    if column.startswith(("certified (", "under attack (")):
        return uar_text(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_certification_report(
    certificates, smoothing, folder, title, facts, labels, budgets, attacked=None, plan=(), draws=None
):
    """Writes the files of the module docstring into ``folder``; returns the markdown.

    Arguments
    ---------
    certificates : dict
        split -> ``SplitCertificates``.
    smoothing : RandomizedSmoothing
    folder, title : str
    facts : dict
        ``model``, ``sample_rate``, ``samples``, ``frames``, ``n_mels`` (``policy_markdown``).
    labels : list of str
        The emotions in index order.
    budgets : dict
        Threat model -> budgets (the run's ``suite_budgets``).
    attacked : dict or None
        split -> ``SplitOutcomes`` of ``attack_smoothed``, with its ``plan`` and ``draws``.
    """
    os.makedirs(folder, exist_ok=True)
    write_csv(
        os.path.join(folder, "certificates.csv"),
        certificate_rows(certificates, labels, smoothing.domain),
        CERTIFICATE_FIELDS,
    )
    write_csv(os.path.join(folder, "certified_uar.csv"), curve_rows(certificates, smoothing, budgets), CURVE_FIELDS)
    if attacked:
        write_csv(os.path.join(folder, "smoothed_attack.csv"), suite_rows(attacked, plan), CSV_FIELDS)
    markdown = certification_markdown(certificates, smoothing, facts, title, budgets, attacked, plan, draws)
    with open(os.path.join(folder, "certification.md"), "w", encoding="utf-8") as f:
        f.write(markdown + "\n")
    return markdown

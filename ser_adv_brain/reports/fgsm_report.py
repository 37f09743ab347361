"""The paper's FGSM report: UAR on real data and on FGSM (fake) data over a grid of budgets, per split."""

import os

from speechbrain.utils.distributed import if_main_process

from ser_adv_brain.tables import markdown_table, write_csv

SPLIT_TITLES = {"valid": "Dev", "test": "Test"}
REPORT_CSV, REPORT_MD = "robustness.csv", "robustness.md"  # in the run's output folder


def fgsm_report_rows(results, threat_model="features_linf"):
    """Flattens ``{split: {eps: ConfusionMatrix}}`` into CSV rows; ``threat_model`` is the attack's (the
    features' Linf, or the waveform samples' for a model that takes the waveform)."""
    return [
        {
            "split": split,
            "threat_model": threat_model,
            "eps": eps,
            "data": "real" if eps == 0 else "fake",
            "UAR": cm.uar(),
            "accuracy": cm.accuracy(),
            "n": int(cm.counts.sum()),
        }
        for split, curve in results.items()
        for eps, cm in curve.items()
    ]


def eps_text(eps):
    """Two decimals as the paper prints its budgets, more where a budget needs them (waveform amplitudes).

    Example
    -------
    >>> eps_text(0.1), eps_text(0.0003)
    ('0.10', '0.0003')
    """
    return f"{eps:.2f}" if abs(eps - round(eps, 2)) < 1e-12 else f"{eps:g}"


def fgsm_markdown(results, title):
    """A table laid out like the paper's: Real / Fake rows by budget, Dev / Test columns."""
    splits = list(results)
    grid = sorted({eps for curve in results.values() for eps in curve})
    rows = [
        [
            "real" if eps == 0 else "fake",
            eps_text(eps),
            *(f"{results[s][eps].uar():.3f}" if eps in results[s] else "" for s in splits),
        ]
        for eps in grid
    ]
    headers = ["data", "eps", *(f"{SPLIT_TITLES.get(s, s)} UAR" for s in splits)]
    return f"### {title}\n\n{markdown_table(rows, headers)}\n"


def write_fgsm_report(results, output_folder, title, labels, fake_eps=None, threat_model="features_linf"):
    """Writes ``robustness.csv``, ``robustness.md`` and per-split confusion matrices on real data
    (``confusion_<split>.csv``) and on fake data at ``fake_eps`` (``confusion_<split>_eps<eps>.csv``).

    Arguments
    ---------
    results : dict
        split name -> eps -> ``ConfusionMatrix``.
    output_folder : str
    title : str
        Heading of the markdown table (the experiment).
    labels : list of str
        Class names in index order.
    fake_eps : float, optional
        The budget whose fake-data confusion matrices are written too (the training eps).
    threat_model : str
        The attack's (``Attack.threat_model``): ``features_linf``, or ``waveform_linf`` for FGSM on the samples.

    Returns
    -------
    str
        The markdown table.
    """
    table = fgsm_markdown(results, title)
    if not if_main_process():
        return table
    write_csv(
        os.path.join(output_folder, REPORT_CSV),
        fgsm_report_rows(results, threat_model),
        ["split", "threat_model", "eps", "data", "UAR", "accuracy", "n"],
    )
    with open(os.path.join(output_folder, REPORT_MD), "w", encoding="utf-8") as f:
        f.write(table)
    for split, curve in results.items():
        for eps, confusion in curve.items():
            if eps == 0:
                confusion.write(os.path.join(output_folder, f"confusion_{split}.csv"), labels)
            elif fake_eps is not None and abs(eps - fake_eps) < 1e-9:
                confusion.write(os.path.join(output_folder, f"confusion_{split}_eps{eps:g}.csv"), labels)
    return table

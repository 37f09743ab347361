"""Named compositions of the attack suite, the tiers a benchmark result is evaluated in (part of its identity).

- ``quick``: what every recipe's run ends with (PGD-10, FGSM, Square Attack at 100 queries, waveform PGD-10);
- ``standard``: AutoAttack's standard composition (APGD-CE, APGD-T, Square Attack at 5,000 queries) in
  every threat model;
- ``rand``: AutoAttack's rand version, for defences whose forward pass is random (APGD-CE and APGD-DLR
  with expectation over 20 draws);
- ``audio``: the threats to the audio path beside the standard tier's SNR budget: the universal
  perturbation and the over-the-air attack through simulated rooms.

Each is a yaml file beside this one, an ``attack_suite`` list as in the recipes' yaml files, and has its
budgets (``TIER_BUDGETS``), which ``--budgets`` may replace; each attack runs at every budget of its
threat model. An attack may refer to ``<output_folder>`` (the over-the-air attack keeps its rooms there)
and ``<sample_rate>``: a run's, when a run is evaluated in the tier. A model that takes the waveform (a
self-supervised encoder's) has no features: ``ser-adv evaluate --tier``, the benchmark and ``ser-adv
attack-interface`` evaluate it with the tier's waveform attacks at the tier's waveform budgets
(``domain="waveform"``), so its entries have the waveform's rows only.
"""

import os

import yaml
from hyperpyyaml import load_hyperpyyaml

TIERS = ("quick", "standard", "rand", "audio")
# Linf .02 and .04 on the features; the waveform at 40, 30 and 20 dB: a model fooled at 40 dB costs nothing
# more (nested budgets, early exit), and one that keeps something there is measured where the recipes' suites do.
_FEATURES_AND_WAVEFORM = {"features_linf": [0.02, 0.04], "waveform_snr": [40.0, 30.0, 20.0]}
TIER_BUDGETS = {
    "quick": _FEATURES_AND_WAVEFORM,
    "standard": _FEATURES_AND_WAVEFORM,
    "rand": _FEATURES_AND_WAVEFORM,
    "audio": {
        "waveform_universal": [40.0, 30.0, 20.0],
        "waveform_room_snr": [40.0, 30.0, 20.0],
    },
}


def threat_domain(threat_model):
    """The input a threat model perturbs, the first word of its name (``"<domain>_<norm>"``): ``features`` or
    ``waveform``, as an attack's ``domain``."""
    return threat_model.split("_")[0]


def tier_budget_grid(name, domain=None):
    """The tier's budgets, threat model -> list; with ``domain``, of the threat models on that input only.

    Example
    -------
    >>> tier_budget_grid("standard", domain="waveform")
    {'waveform_snr': [40.0, 30.0, 20.0]}
    """
    tier_file(name)
    return {t: budgets for t, budgets in TIER_BUDGETS[name].items() if domain is None or threat_domain(t) == domain}


def tier_budgets(name, domain=None):
    """``tier_budget_grid`` as a yaml flow mapping (what ``--budgets`` takes).

    Example
    -------
    >>> tier_budgets("standard")
    '{features_linf: [0.02, 0.04], waveform_snr: [40.0, 30.0, 20.0]}'
    """
    return yaml.safe_dump(tier_budget_grid(name, domain), default_flow_style=True, sort_keys=False, width=1000).strip()


def tier_file(name):
    """The yaml file of a tier; a ``ValueError`` naming the tiers for another name."""
    if name not in TIERS:
        raise ValueError(f"Unknown tier {name!r}; the tiers are {list(TIERS)}.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.yaml")


def tier_attacks(name, domain=None, output_folder=".", sample_rate=16000):
    """The tier's attacks, freshly made (each call its own objects, with their own generators); with
    ``domain`` (``"waveform"``: for a model that takes the waveform), only those on that input.
    ``output_folder`` and ``sample_rate`` are what the tier's ``<output_folder>`` and ``<sample_rate>`` refer to."""
    with open(tier_file(name), encoding="utf-8") as f:
        text = f.read()
    keys = yaml.safe_dump({"output_folder": str(output_folder), "sample_rate": int(sample_rate)})
    attacks = load_hyperpyyaml(keys + text)["attack_suite"]
    return [attack for attack in attacks if domain is None or attack.domain == domain]

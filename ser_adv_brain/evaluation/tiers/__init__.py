"""Named compositions of the attack suite, the tiers a benchmark result is evaluated in (part of its identity).

- ``quick``: what every recipe's run ends with (PGD-10, FGSM, Square Attack at 100 queries, waveform PGD-10);
- ``standard``: AutoAttack's standard composition (APGD-CE, APGD-T, Square Attack at 5,000 queries) in
  every threat model;
- ``rand``: AutoAttack's rand version, for defences whose forward pass is random (APGD-CE and APGD-DLR
  with expectation over 20 draws).

Each is a yaml file beside this one, an ``attack_suite`` list as in the recipes' yaml files; the attacks'
budgets are replaced by the run's ``suite_budgets``. A model that takes the waveform (a self-supervised
encoder's) is evaluated with a tier's waveform attacks (``tier_attacks(name, domain="waveform")``).
"""

import os

from hyperpyyaml import load_hyperpyyaml

TIERS = ("quick", "standard", "rand")


def tier_file(name):
    """The yaml file of a tier; a ``ValueError`` naming the tiers for another name."""
    if name not in TIERS:
        raise ValueError(f"Unknown tier {name!r}; the tiers are {list(TIERS)}.")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.yaml")


def tier_attacks(name, domain=None):
    """The tier's attacks, freshly made (each call its own objects, with their own generators); with
    ``domain`` (``"waveform"``: for a model that takes the waveform), only those on that input."""
    with open(tier_file(name), encoding="utf-8") as f:
        attacks = load_hyperpyyaml(f)["attack_suite"]
    return [attack for attack in attacks if domain is None or attack.domain == domain]

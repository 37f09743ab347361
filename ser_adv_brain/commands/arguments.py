"""What the subcommands of ``ser-adv`` share: ``--device``, ``--output_folder``, and yaml given inline or as a file.

Every subcommand takes ``--device`` (SpeechBrain's run option: ``cpu`` unless given, ``cuda:0``...) and
``--output_folder`` (where it writes; each says its default), lists as yaml (``--eps="[0.02, 0.04]"``),
attack plug-ins as yaml (``--attack="!new:ser_adv_brain.attacks.PGD {eps: 0.02}"``, inline or the path
of a yaml file), and, where it loads a run or a yaml file, any of its keys as ``--key=value``.
"""

import argparse
import os

import yaml
from hyperpyyaml import load_hyperpyyaml


def parser_for(command, description):
    """An ``argparse`` parser for ``ser-adv <command>``, its module docstring as help, no abbreviations."""
    return argparse.ArgumentParser(
        prog=f"ser-adv {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )


def add_device(parser):
    parser.add_argument("--device", default=None, help="SpeechBrain's run option (cpu unless given; cuda:0, ...)")


def device_options(args):
    """The run options a reloaded run gets: the device if given, no progress bars' clutter unless asked for."""
    return [] if args.device is None else [f"--device={args.device}"]


def text_or_file(text):
    """``text``, or the contents of the file it names."""
    if os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            return f.read()
    return text


def load_attack(text):
    """An attack plug-in from yaml text (``!new:ser_adv_brain.attacks.PGD {eps: 0.02}``) or a yaml file."""
    return load_hyperpyyaml(f"attack: {text_or_file(text)}")["attack"]


def load_attacks(text):
    """A yaml list of attack plug-ins (``[!new:ser_adv_brain.attacks.WaveformPGD {eps: 40}]``), inline or a file."""
    indented = "\n".join("    " + line for line in text_or_file(text).strip().splitlines())
    return load_hyperpyyaml(f"attacks:\n{indented}\n")["attacks"]


def yaml_floats(text, option):
    """A yaml list of numbers (``"[0.02, 0.04]"``); a ``SystemExit`` naming ``option`` otherwise."""
    return list_of_floats(yaml.safe_load(text), option, text)


def list_of_floats(value, option, given):
    """``value`` (parsed yaml) as a list of floats; a ``SystemExit`` naming ``option`` and what was ``given``."""
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise SystemExit(f'{option} must be a yaml list of numbers, like "[0.02, 0.04]"; got {given!r}')
    return [float(v) for v in value]


def yaml_budgets(text, option):
    """A yaml mapping of threat models to lists of budgets (``"{features_linf: [0.02], waveform_snr: [40]}"``);
    a ``SystemExit`` naming ``option`` otherwise.

    Example
    -------
    >>> yaml_budgets("{features_linf: [0.02], waveform_snr: [40]}", "--budgets")
    {'features_linf': [0.02], 'waveform_snr': [40.0]}
    >>> yaml_budgets("{features_linf: 0.02}", "--budgets")
    Traceback (most recent call last):
    SystemExit: --budgets's features_linf must be a yaml list of numbers, like "[0.02, 0.04]"; got 0.02
    """
    value = yaml.safe_load(text)
    if not isinstance(value, dict) or not value:
        raise SystemExit(f'{option} must be a yaml mapping like "{{features_linf: [0.02, 0.04]}}"; got {text!r}')
    return {str(threat): list_of_floats(budgets, f"{option}'s {threat}", budgets) for threat, budgets in value.items()}

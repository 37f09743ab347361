"""A SpeechBrain emotion interface the toolkit did not train, under the waveform attack suite: no recipe, no training.

``attack_interface`` runs what a training run ends with (the suite, robust UAR, the masking checks, the
report and its pictures) on one manifest, against a ``PretrainedClassifier``. Its emotions are the
interface's classes, reached from the manifest's labels through an explicit map. A suite with a universal
perturbation (the audio tier's) learns it on a second manifest, the training utterances, as a run's suite
learns it on the run's training split.
"""

import hashlib
import logging
import os

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset

from ser_adv_brain.audio.loading import load_audio
from ser_adv_brain.data.validation import AudioScan, DataValidationError, read_manifest, row_problems
from ser_adv_brain.evaluation.masking import destroy_plan, universal_check_plan
from ser_adv_brain.evaluation.suite import check_attacks_fit, evaluate_suite, suite_entries, suite_plan
from ser_adv_brain.evaluation.universal import CACHE_FOLDER, learn_universal
from ser_adv_brain.metrics import ConfusionMatrix
from ser_adv_brain.reports.plots import draw_run
from ser_adv_brain.reports.suite_report import write_suite_report
from ser_adv_brain.tables import write_csv
from ser_adv_brain.training.brain import EmotionBrain
from ser_adv_brain.training_steps import CleanStep

logger = logging.getLogger(__name__)

SPLIT = "test"  # the attacked manifest's name in the report's tables and its problems
# One utterance a batch, for learning and attacking: whole files of different lengths, and no padding the model
# would hear.
WHOLE_FILES = {"batch_size": 1}


def class_map(manifest_labels, interface_labels, label_map=None):
    """Each manifest label -> the interface's class index, or None where ``label_map`` leaves it out.

    Without ``label_map`` every manifest label must be one of the interface's. With it, each
    manifest label it names goes to the interface label it gives (``None``: its utterances are
    left out); the others must be the interface's own. A ``ValueError`` names every label that
    maps to nothing, before any audio is read.

    Example
    -------
    >>> class_map(["anger", "boredom"], ["ang", "hap"], {"anger": "ang", "boredom": None})
    {'anger': 0, 'boredom': None}
    >>> class_map(["anger", "fear"], ["ang", "hap"], {"anger": "ang"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: The manifest's labels ['fear'] are not classes of the interface (['ang', 'hap']): map each ...
    """
    label_map = dict(label_map or {})
    unknown_targets = sorted(str(v) for v in label_map.values() if v is not None and v not in interface_labels)
    if unknown_targets:
        raise ValueError(
            f"--label_map maps to {unknown_targets}, which are not classes of the interface ({interface_labels})."
        )
    mapped = {label: label_map.get(label, label) for label in manifest_labels}
    unmapped = sorted(
        label for label, target in mapped.items() if target is not None and target not in interface_labels
    )
    if unmapped:
        raise ValueError(
            f"The manifest's labels {unmapped} are not classes of the interface ({interface_labels}): map each "
            'with --label_map="{label: interface_label}", or to null to leave its utterances out.'
        )
    return {label: None if target is None else interface_labels.index(target) for label, target in mapped.items()}


def manifest_rows(manifest, output_folder, sample_rate, split=SPLIT):
    """The manifest's rows, checked as training checks its manifests (``DataValidationError`` with every problem,
    the manifest named by ``split``)."""
    rows, problems = read_manifest(manifest, split)
    if not problems:
        scan = AudioScan(os.path.join(output_folder, "audio_scan.json"))
        problems = row_problems(manifest, split, rows, scan, sample_rate, n_fft=1)  # any non-empty audio
        scan.save()
    if problems:
        raise DataValidationError(problems)
    return [row for _, row in rows]


def mapped_dataset(manifest, sample_rate, classes):
    """The manifest's utterances whose label maps to a class: whole files at ``sample_rate``, and that class."""

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio(wav):
        return load_audio(wav, sample_rate)

    @sb.utils.data_pipeline.takes("emo")
    @sb.utils.data_pipeline.provides("emo_encoded")
    def label(emo):
        return torch.LongTensor([classes[emo]])

    dataset = DynamicItemDataset.from_csv(
        manifest, dynamic_items=[audio, label], output_keys=["id", "sig", "emo_encoded"]
    )
    return dataset.filtered_sorted(key_test={"emo": lambda emo: classes[emo] is not None})


def parameter_digest(module):
    """A digest of a module's parameters and buffers: the model a universal perturbation was learnt on.

    Example
    -------
    >>> torch.manual_seed(0) and None
    >>> layer, other = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> parameter_digest(layer) == parameter_digest(layer), parameter_digest(layer) == parameter_digest(other)
    (True, False)
    """
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def training_problem(attacks, rows, training_rows):
    """A sentence where the training manifest does not fit the suite: missing for an attack that learns on
    training data, given for a suite with none, or sharing utterances with the manifest attacked (a universal
    perturbation must never learn on what it attacks); None where it fits."""
    learners = [repr(attack) for attack in attacks if attack.needs_training_data]
    if learners and training_rows is None:
        return f"{', '.join(learners)} learn(s) on training utterances: give their manifest (--training_manifest)"
    if not learners and training_rows is not None:
        return "--training_manifest is read only by attacks that learn on training data, and the suite has none"
    if training_rows is not None:
        attacked = {os.path.realpath(row["wav"]) for row in rows} | {row["ID"] for row in rows}
        shared = sorted(row["ID"] for row in training_rows if {os.path.realpath(row["wav"]), row["ID"]} & attacked)
        if shared:
            return (
                f"the training manifest shares {len(shared)} utterance(s) with the manifest attacked "
                f"({', '.join(shared[:3])}{', ...' if len(shared) > 3 else ''}): a universal perturbation must "
                "not learn on what it attacks"
            )
    return None


def attack_interface(
    classifier,
    manifest,
    attacks,
    budgets,
    output_folder,
    label_map=None,
    early_exit=True,
    masking_check_eps=-20.0,
    device="cpu",
    title="SpeechBrain interface",
    training_manifest=None,
):
    """The waveform suite on ``classifier`` over ``manifest``; writes the report into ``output_folder``.

    Arguments
    ---------
    classifier : PretrainedClassifier
        The interface, already checked (``gradient_problem``).
    manifest : str
        A CSV manifest (``ID``, ``wav``, ``emo``, ``spk_id``), as the recipes write them.
    attacks : list
        Waveform attack plug-ins; ``budgets``: their threat models' grids (``suite_budgets``).
    label_map : dict or None
        Manifest label -> interface label, or None to leave its utterances out (see ``class_map``); the
        training manifest's labels go through it too.
    early_exit, masking_check_eps :
        As the recipes' ``suite_early_exit`` and ``masking_check_eps`` (an SNR in dB that destroys the input).
    training_manifest : str or None
        The utterances a universal perturbation learns on (required by such an attack, refused without one,
        disjoint from ``manifest``); each ``v`` is kept in ``<output_folder>/universal_perturbations``.

    Returns
    -------
    SplitOutcomes
        Per utterance, gathered; the files are ``robustness.md``, ``attack_suite.csv``,
        ``waveform_snr.csv``, ``confusion_test.csv`` (real data), ``classes.csv`` (the label map),
        ``adversarial_wavs/``, ``robustness.png`` and ``confusion_test.png``.
    """
    os.makedirs(output_folder, exist_ok=True)
    interface = classifier.interface
    sample_rate = interface.audio_normalizer.sample_rate
    labels = [interface.hparams.label_encoder.ind2lab[i] for i in range(len(interface.hparams.label_encoder))]
    entries = suite_entries(attacks)
    check_attacks_fit(classifier, attacks, "--attacks")
    plan = suite_plan(entries, budgets)
    checks = destroy_plan(entries, masking_check_eps, waveform=True) + universal_check_plan(plan)
    rows = manifest_rows(manifest, output_folder, sample_rate)
    training_rows = (
        None if training_manifest is None else manifest_rows(training_manifest, output_folder, sample_rate, "training")
    )
    problem = training_problem(attacks, rows, training_rows)
    if problem:
        raise ValueError(problem)

    def classes_of(read_rows):
        return class_map(list(dict.fromkeys(row["emo"] for row in read_rows)), labels, label_map)

    classes = classes_of(rows)
    left_out = sorted(label for label, index in classes.items() if index is None)
    dataset = mapped_dataset(manifest, sample_rate, classes)
    brain = EmotionBrain(
        modules={"model": classifier},
        hparams={"n_classes": len(labels), "sample_rate": sample_rate},
        run_opts={"device": device, "noprogressbar": True},
        training_step=CleanStep(),
    )
    if training_rows is not None:
        learn_universal(
            brain,
            plan,
            mapped_dataset(training_manifest, sample_rate, classes_of(training_rows)),
            WHOLE_FILES,
            None,
            os.path.join(output_folder, CACHE_FOLDER),
            model_identity=["interface", parameter_digest(classifier)],
        )
    outcomes = evaluate_suite(
        brain,
        dataset,
        plan + checks,
        early_exit,
        WHOLE_FILES,
        max_key=None,
        wav_pairs=(os.path.join(output_folder, "adversarial_wavs"), 3),
    )
    confusion = ConfusionMatrix(len(labels))
    confusion.append(outcomes.clean, outcomes.targets)
    confusion.write(os.path.join(output_folder, f"confusion_{SPLIT}.csv"), labels)
    header = [
        f"# {title}: the waveform attack suite",
        "",
        f"Manifest {manifest}: {len(dataset)} of {len(rows)} utterances"
        + (f" (left out, labels mapped to null: {left_out})" if left_out else "")
        + f"; the interface's classes {labels}, reached by "
        + ", ".join(f"{label} -> {labels[index]}" for label, index in classes.items() if index is not None)
        + f". Real-data UAR {outcomes.uar(outcomes.clean_correct):.3f}.",
        "",
    ]
    with open(os.path.join(output_folder, "robustness.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(header))
    report = write_suite_report({SPLIT: outcomes}, plan, checks, output_folder, title, early_exit)
    logger.info(f"Attack suite:\n{report}")
    draw_run(output_folder)
    write_csv(
        os.path.join(output_folder, "classes.csv"),
        [{"manifest_label": k, "interface_label": "" if i is None else labels[i]} for k, i in classes.items()],
        ["manifest_label", "interface_label"],
    )
    return outcomes

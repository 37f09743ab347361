"""Exporting a checkpoint as the pretrained interface's folder: its yaml, weights and ``custom_interface.py``."""

import io
import logging
import os
import shutil

import ruamel.yaml

logger = logging.getLogger(__name__)

# What inference needs from a training run's hyperparameters (overrides applied, references resolved).
INFERENCE_KEYS = (
    "sample_rate",
    "n_fft",
    "hop_length",
    "n_frames",
    "n_classes",
    "compute_features",
    "normalizer",
    "model",
    "attack",
)
FEATURE_MODULES = ("compute_features", "normalizer")  # absent where the model takes the waveform


def inference_keys(takes_waveform):
    """``INFERENCE_KEYS``, without the feature modules for a model that takes the waveform."""
    return tuple(key for key in INFERENCE_KEYS if not (takes_waveform and key in FEATURE_MODULES))


# What inference takes where the run has it: randomised smoothing's sigma, n0, n and alpha (cnn4_smoothing_*).
OPTIONAL_INFERENCE_KEYS = ("smoothing",)


# Without explicit paths, the Pretrainer finds each loadable as <name>.ckpt in
# the source folder, so the exported folder works wherever it is moved or uploaded.
def inference_plumbing(extra_modules=(), takes_waveform=False):
    """The interface's modules and Pretrainer; ``extra_modules`` (a detector) are loaded as ``<name>.ckpt`` too."""
    features = [] if takes_waveform else list(FEATURE_MODULES)
    modules = [*features, "model", *extra_modules]
    loadables = ["model", *([] if takes_waveform else ["normalizer"]), "label_encoder", *extra_modules]
    return (
        "\nmax_audio_seconds: 600.0  # longer audio is refused instead of exhausting memory\n"
        "\nlabel_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder\n"
        "\nmodules:\n"
        + "".join(f"    {name}: !ref <{name}>\n" for name in modules)
        + "\npretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n    loadables:\n"
        + "".join(f"        {name}: !ref <{name}>\n" for name in loadables)
    )


CUSTOM_INTERFACE = '''"""Lets SpeechBrain's foreign_class load this folder (the interface lives in ser_adv_brain)."""

from ser_adv_brain.interface import EmotionRecognizer  # noqa: F401
'''


def _drop_comments(node):
    """Removes the comments ruamel attaches to a round-tripped node and its children."""
    if hasattr(node, "ca"):
        node.ca.items.clear()
        node.ca.comment = None
    children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
    for child in children:
        _drop_comments(child)


def inference_hparams_yaml(training_yaml, title, detector_yaml=None, detector_threshold=None, takes_waveform=False):
    """The interface's ``hyperparams.yaml``, made from a training run's saved hyperparameters.

    Arguments
    ---------
    training_yaml : str
        The training run's ``hyperparams.yaml`` as ``sb.create_experiment_directory``
        saves it: overrides applied, references resolved.
    title : str
        First comment line.
    detector_yaml : str or None
        A detector run's saved ``hyperparams.yaml``: its ``detector`` goes into
        the interface, with ``detector_threshold``. None: no detector.
    detector_threshold : float or None
        The ``is_adversarial`` score above which an input is flagged.
    takes_waveform : bool
        The model takes the waveform (``models.takes_waveform``): no feature modules.

    Returns
    -------
    str
    """
    yaml = ruamel.yaml.YAML()
    with open(training_yaml, encoding="utf-8") as f:
        tree = yaml.load(f)
    keys = inference_keys(takes_waveform)
    missing = [key for key in keys if key not in tree]
    if missing:
        raise KeyError(f"{training_yaml} lacks {missing}, which the inference interface needs.")
    selected = {key: tree[key] for key in keys}
    selected.update({key: tree[key] for key in OPTIONAL_INFERENCE_KEYS if tree.get(key) is not None})
    extra_modules = ()
    if detector_yaml is not None:
        with open(detector_yaml, encoding="utf-8") as f:
            selected["detector"] = yaml.load(f)["detector"]
        selected["detector_threshold"] = float(detector_threshold)
        extra_modules = ("detector",)
    _drop_comments(selected)
    stream = io.StringIO()
    yaml.indent(mapping=4, sequence=4, offset=2)  # the recipes' yaml style
    yaml.dump(selected, stream)
    header = f"# {title}\n# Inference hyperparameters of ser_adv_brain.interface.EmotionRecognizer.\n\n"
    return header + stream.getvalue() + inference_plumbing(extra_modules, takes_waveform)


def export_interface(
    checkpoint,
    label_encoder,
    training_yaml,
    folder,
    title="ser_adv_brain emotion recognizer",
    detector=None,
    takes_waveform=False,
):
    """Writes a folder that ``EmotionRecognizer.from_hparams`` and ``foreign_class`` load.

    Arguments
    ---------
    checkpoint : speechbrain.utils.checkpoints.Checkpoint
        The checkpoint to export; it must hold ``model`` and ``normalizer`` (``model`` only, for a
        model that takes the waveform).
    label_encoder : speechbrain.dataio.encoder.CategoricalEncoder
    training_yaml : str
        The run's saved ``hyperparams.yaml`` (see ``inference_hparams_yaml``).
    folder : str
        Receives ``hyperparams.yaml``, ``model.ckpt``, ``normalizer.ckpt``,
        ``label_encoder.ckpt`` (SpeechBrain's label-encoder text format) and
        ``custom_interface.py``.
    title : str
        First comment line of the yaml.
    detector : dict or None
        A fake-data detector to export too (``ser-adv detector``):
        ``yaml`` (its run's saved ``hyperparams.yaml``), ``checkpoint`` (its
        ``detector.ckpt``) and ``threshold`` (see ``inference_hparams_yaml``);
        the folder then also holds ``detector.ckpt``.
    takes_waveform : bool
        The model takes the waveform (``models.takes_waveform``): it has no feature modules to export.

    Returns
    -------
    str
        ``folder``.
    """
    if checkpoint is None:
        raise FileNotFoundError("No checkpoint to export: train at least one epoch first.")
    if not os.path.isfile(training_yaml):
        raise FileNotFoundError(
            f"{training_yaml} not found: sb.create_experiment_directory(..., hyperparams_to_save=...) writes it."
        )
    os.makedirs(folder, exist_ok=True)
    for name in ("model",) if takes_waveform else ("model", "normalizer"):
        if name not in checkpoint.paramfiles:
            raise KeyError(f"Checkpoint {checkpoint.path} has no {name!r}; it holds {sorted(checkpoint.paramfiles)}.")
        shutil.copyfile(checkpoint.paramfiles[name], os.path.join(folder, f"{name}.ckpt"))
    label_encoder.save(os.path.join(folder, "label_encoder.ckpt"))
    if detector is not None:
        shutil.copyfile(detector["checkpoint"], os.path.join(folder, "detector.ckpt"))
    with open(os.path.join(folder, "hyperparams.yaml"), "w", encoding="utf-8") as f:
        if detector is None:
            f.write(inference_hparams_yaml(training_yaml, title, takes_waveform=takes_waveform))
        else:
            f.write(
                inference_hparams_yaml(
                    training_yaml, title, detector["yaml"], detector["threshold"], takes_waveform=takes_waveform
                )
            )
    with open(os.path.join(folder, "custom_interface.py"), "w", encoding="utf-8") as f:
        f.write(CUSTOM_INTERFACE)
    logger.info(f"Exported the pretrained interface of {checkpoint.path} to {folder}")
    return folder

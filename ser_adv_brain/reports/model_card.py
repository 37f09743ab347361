"""The model card of an exported interface: the ``README.md`` of a model repository, as on the SpeechBrain hub.

The card opens with the Hugging Face metadata block (YAML front matter) that
SpeechBrain's hub cards carry (``language``, ``tags``, ``license``,
``datasets``, ``metrics``), plus a ``model-index`` with the run's own results.
Every value comes from the run: its hyperparameters, its manifests and the
attack report it wrote (``robustness.csv`` / ``robustness.md``).
"""

import csv
import dataclasses
import os

from huggingface_hub import EvalResult, ModelCardData

from ser_adv_brain import PAPER
from ser_adv_brain.audio.loading import frames_to_samples
from ser_adv_brain.models import takes_waveform
from ser_adv_brain.reports.fgsm_report import REPORT_CSV, REPORT_MD
from ser_adv_brain.tables import read_csv
from ser_adv_brain.training_steps import AdversarialStep, NoiseStep

CARD_FILE = "README.md"
SPLIT_NAMES = {"train": "Train", "valid": "Dev", "test": "Test"}


@dataclasses.dataclass(frozen=True)
class Corpus:
    """What a model card says of the data a model was trained on.

    Arguments
    ---------
    name : str
        The corpus, as the card names it.
    hub_id : str
        Its entry in the metadata's ``datasets`` and ``model-index``.
    language : str or None
        ISO 639-1 code of the speech; None for speech in no language.
    speech : str
        What the recordings are.
    terms : str
        The data's terms, and what they mean for sharing the model.
    license_name : str
        The metadata's name for those terms (``license: other``).
    """

    name: str
    hub_id: str
    language: str
    speech: str
    terms: str
    license_name: str


CORPORA = {
    "DEMoS": Corpus(
        name="DEMoS",
        hub_id="demos",
        language="it",
        speech=(
            "real Italian speech, emotions elicited from actors (Parada-Cabaleiro et al., "
            '"DEMoS: an Italian emotional speech corpus", Language Resources and Evaluation, 2020)'
        ),
        terms=(
            "DEMoS is distributed by its authors under an end-user license agreement (EULA). This model "
            "is derived from it: share it only as far as that EULA allows (ask the corpus' authors "
            "before publishing it), and point users to the EULA to obtain the data."
        ),
        license_name="demos-eula",
    ),
    "EmoDB": Corpus(
        name="EmoDB",
        hub_id="emodb",
        language="de",
        speech=(
            "real German speech, 10 actors reading emotionally neutral sentences in 7 emotions "
            '(Burkhardt et al., "A Database of German Emotional Speech", Interspeech 2005)'
        ),
        terms=(
            "EmoDB is distributed free of charge for research by its authors. This model is derived "
            "from it: use it for research, and check the corpus' terms with its authors before any other use."
        ),
        license_name="emodb-research",
    ),
    "synthetic": Corpus(
        name="the synthetic DEMoS-shaped corpus of ser_adv_brain",
        hub_id="ser-adv-brain-synthetic",
        language=None,
        speech=(
            "SYNTHETIC speech made by ser_adv_brain (harmonic synthesis with moving formants, no real "
            "voices, no language); results on it say nothing about real emotional speech"
        ),
        terms=(
            "The synthetic corpus is generated from a seed by ser_adv_brain (ser_adv_brain/data/synthetic.py) and "
            "holds no third-party recordings: the model's terms are those of the ser_adv_brain project."
        ),
        license_name="ser-adv-brain",
    ),
}

UNKNOWN_CORPUS = Corpus(
    name="the corpus of the run's manifests",
    hub_id="unknown",
    language=None,
    speech="recordings this card does not describe (the run was given its manifests, skip_prep: True)",
    terms=(
        "The run was given its manifests, so this card does not know the data's terms. Before sharing "
        "the model, fill in `language`, `datasets` and the license from the terms of the data it was "
        "trained on."
    ),
    license_name="unknown",
)


def read_report(output_folder):
    """The attack report a run wrote: its CSV rows (numbers as floats) and its markdown, or ``([], None)``.

    Rows without a numeric ``split``, ``eps`` and ``UAR`` stay out of the metadata;
    the markdown, quoted whole, still shows them.
    """
    rows, table = [], None
    csv_file, md_file = os.path.join(output_folder, REPORT_CSV), os.path.join(output_folder, REPORT_MD)
    if os.path.isfile(csv_file):
        for row in read_csv(csv_file):
            try:
                numbers = {key: float(row[key]) for key in ("eps", "UAR", "accuracy") if row.get(key)}
            except ValueError:
                continue
            if row.get("split") in SPLIT_NAMES and {"eps", "UAR"} <= numbers.keys():
                rows.append({**row, **numbers})
    if os.path.isfile(md_file):
        with open(md_file, encoding="utf-8") as f:
            table = f.read().strip()
    return rows, table


def manifest_summary(hparams):
    """Split -> (utterances, speakers) of the run's manifests."""
    summary = {}
    for split in SPLIT_NAMES:
        with open(hparams[f"{split}_annotation"], newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, skipinitialspace=True))
        summary[split] = (len(rows), len({row["spk_id"] for row in rows}))
    return summary


def eval_results(corpus, rows, attack):
    """The card's evaluation results (the hub's ``model-index``): per split, UAR on real data and on fake data
    at each eps, and accuracy."""
    results = []
    for row in sorted(rows, key=lambda row: (list(SPLIT_NAMES).index(row["split"]), row["eps"])):
        split = SPLIT_NAMES[row["split"]]
        data = "real data" if row["eps"] == 0 else f"{row.get('attack') or attack} data, eps {row['eps']:g}"
        values = [("uar", "UAR", row["UAR"])] + (
            [("accuracy", "accuracy", row["accuracy"])] if isinstance(row.get("accuracy"), float) else []
        )
        results += [
            EvalResult(
                task_type="audio-classification",
                task_name="Speech emotion recognition",
                dataset_type=corpus.hub_id,
                dataset_name=corpus.name,
                dataset_split=row["split"],
                metric_type=metric,
                metric_value=round(value, 4),
                metric_name=f"{split} {label}, {data}",
            )
            for metric, label, value in values
        ]
    return results


def metadata(hparams, corpus, rows):
    """The card's metadata, as the Hugging Face hub reads it (``huggingface_hub.ModelCardData``)."""
    model, attack = type(hparams["model"]).__name__, type(hparams["attack"]).__name__
    tags = [
        "audio-classification",
        "speechbrain",
        "emotion-recognition",
        "speech-emotion-recognition",
        "adversarial-robustness",
        attack.lower(),
        "pytorch",
        model.lower(),
    ]
    return ModelCardData(
        language=corpus.language,
        license="other",
        license_name=corpus.license_name,
        tags=tags + (["synthetic-data"] if corpus is CORPORA["synthetic"] else []),
        datasets=[corpus.hub_id],
        metrics=["uar", "accuracy"],
        library_name="speechbrain",
        pipeline_tag="audio-classification",
        model_name=hparams["experiment_name"],
        eval_results=eval_results(corpus, rows, attack) or None,
    )


def front_matter(meta):
    """``meta`` as the card's YAML front matter block."""
    return f"---\n{meta.to_yaml()}\n---\n"


def training_summary(step, attack):
    """What the model was trained on, from its training step (the yaml's ``attack`` makes the report only).

    Returns
    -------
    (str, str)
        The card's training sentence and its headline.
    """
    if isinstance(step, NoiseStep) and step.objective is None:
        return (
            f"on noisy copies only, `{step.noise!r}`: the base classifier of randomised smoothing (Cohen et al., 2019)",
            f"trained on noisy copies ({type(step.noise).__name__}) for randomised smoothing, attacked with {attack}",
        )
    if isinstance(step, NoiseStep):  # before AdversarialStep: the noise steps derive from it
        return (
            f"noise augmentation, `{step.noise!r}`, with `{step.objective!r}`",
            f"trained on noisy copies ({type(step.noise).__name__}), attacked with {attack}",
        )
    if isinstance(step, AdversarialStep):
        return (
            f"adversarial training against `{step.attack!r}`, with `{step.objective!r}`",
            f"adversarially trained against {type(step.attack).__name__}",
        )
    return "clean training (no adversarial term)", f"clean training, attacked with {attack}"


def pipeline_text(hparams, model):
    """What the model makes of the fixed-length audio: log-Mel features, or the waveform itself."""
    if takes_waveform(hparams["model"]):
        return (
            f"the {model} takes the waveform itself (a self-supervised encoder's frames, "
            f"{hparams['hop_length']} samples apart, pooled, then a linear layer)."
        )
    return (
        f"log-Mel features ({hparams['n_mels']} bins, window {hparams['n_fft']}, hop {hparams['hop_length']}) "
        f"are z-scored per bin with the training split's statistics and fed to the {model}."
    )


def smoothing_card_section(hparams):
    """The card's section on randomised smoothing, for a run that has it (``hparams["smoothing"]``); else empty."""
    smoothing = hparams.get("smoothing")
    if smoothing is None:
        return ""
    return f"""## Randomised smoothing: predictions that may abstain, and certificates

This model was trained on noisy inputs for randomised smoothing (Cohen, Rosenfeld and Kolter, ICML 2019):
`{smoothing!r}`. The smoothed classifier votes over noisy copies of the input, and may abstain
(index -1, label `abstain`); its certificate is an L2 radius within which no perturbation of the
{smoothing.domain} changes its answer, with probability 1 - alpha:

```python
out_prob, score, index, text_lab = recognizer.classify_file("speech.wav", smoothing=True)
index, text_lab, radius, snr_db = recognizer.certify_file("speech.wav")
```

The run's certificates are in its `certification.md` (`ser-adv certify`).

"""


def model_card(hparams, corpus=None):
    """The ``README.md`` of the interface exported by a run.

    Arguments
    ---------
    hparams : dict
        The run's hyperparameters, with ``label_encoder``; the manifests and
        the attack report are read from the paths and ``output_folder`` they give.
    corpus : str or None
        A key of ``CORPORA``; None when the run was given its manifests.

    Returns
    -------
    str
    """
    corpus = CORPORA[corpus] if corpus else UNKNOWN_CORPUS
    rows, table = read_report(hparams["output_folder"])
    splits = manifest_summary(hparams)
    model, attack = type(hparams["model"]).__name__, type(hparams["attack"]).__name__
    labels = hparams["label_encoder"].decode_ndim(list(range(hparams["n_classes"])))
    training, headline = training_summary(hparams["training_step"], attack)
    epochs = hparams["number_of_epochs"]
    seconds = frames_to_samples(hparams["n_frames"], hparams["hop_length"]) / hparams["sample_rate"]
    budget_domain = (
        "its waveform samples (amplitude, full scale 1)"
        if takes_waveform(hparams["model"])
        else "its z-scored log-Mel features"
    )
    eval_eps = ", ".join(f"{eps:g}" for eps in hparams["eval_eps"])
    speakers = ", ".join(
        f"{SPLIT_NAMES[split].lower()} {n_speakers} ({n_utterances} utterances)"
        for split, (n_utterances, n_speakers) in splits.items()
    )
    report = table or f"This run wrote no attack report (`{REPORT_MD}`) into its output folder."
    checkpoint = hparams.get("select_checkpoint", "best_dev")
    language = f"language `{corpus.language}`" if corpus.language else "no language"

    body = f"""
# {hparams["experiment_name"]}: speech emotion recognition with {model}, {headline}

This repository holds a {model} speech emotion recognizer trained by a recipe of the
ser_adv_brain toolkit on [SpeechBrain](https://speechbrain.github.io), following
{PAPER}. It was trained on {corpus.name} (see Limitations).

It classifies an utterance into one of {len(labels)} emotions: {", ".join(labels)}.
Training: {training};
{epochs} epoch{"s" if epochs != 1 else ""}, batch {hparams["batch_size"]}; the exported weights
are the run's `{checkpoint}` checkpoint.

## Results: UAR on real data and under attack

UAR (unweighted average recall) on the run's speaker-independent dev and test
splits, on real data (eps 0) and on {attack} data made against this model with each
budget eps on {budget_domain}. The run's own report:

{report}

## Pipeline description

Any audio file or waveform is down-mixed to mono, resampled to {hparams["sample_rate"]} Hz and
brought to {hparams["n_frames"]} frames ({seconds:.1f} s; centre crop of longer clips,
tiling of shorter ones); {pipeline_text(hparams, model)} The interface refuses, with an error, what training refuses:
missing or unreadable files, NaN or Inf samples, digital silence, and clips shorter
than one analysis window ({hparams["n_fft"]} samples).

## Install

```bash
pip install speechbrain
```

and install ser_adv_brain from its repository (`pip install -e .` in a checkout):
the interface class lives in it.

## Perform emotion recognition

```python
from speechbrain.inference.interfaces import foreign_class

recognizer = foreign_class(
    source="<this repository: a local folder or its hub id>",
    pymodule_file="custom_interface.py",
    classname="EmotionRecognizer",
    savedir="pretrained_models/{hparams["experiment_name"]}",
)
out_prob, score, index, text_lab = recognizer.classify_file("speech.wav")
print(text_lab)
```

or, with ser_adv_brain imported, attack it too (the run's attack and budget; pass `eps=` to change it):

```python
from ser_adv_brain.interface import EmotionRecognizer

recognizer = EmotionRecognizer.from_hparams(
    source="<this repository>", savedir="pretrained_models/{hparams["experiment_name"]}"
)
fake_feats, fake_prob, fake_score, fake_index, fake_lab = recognizer.attack_batch(recognizer.load_audio("speech.wav"))
```

{smoothing_card_section(hparams)}## Inference on GPU

Add `run_opts={{"device": "cuda"}}` to `foreign_class` or `from_hparams`.

## Limitations

- Trained on {corpus.name} only ({language}): {corpus.speech}.
- Speakers per split (speaker-independent): {speakers}. Expect lower accuracy on other
  speakers, languages, recording conditions and spontaneous speech.
- Robustness was measured only against {attack} on the log-Mel features, at eps {eval_eps};
  it says nothing about larger budgets, iterative attacks or attacks on the raw waveform.
- The model sees at most {seconds:.1f} s of an utterance (the centre of longer clips).
- No warranty is given for its performance on any other data.

## License

{corpus.terms}

## Citing

{PAPER}; and SpeechBrain: Ravanelli et al., "SpeechBrain: A General-Purpose Speech Toolkit", arXiv:2106.04624, 2021.
"""
    return front_matter(metadata(hparams, corpus, rows)) + body


def write_model_card(hparams, folder, corpus=None):
    """Writes ``model_card(hparams, corpus)`` as ``<folder>/README.md``; returns its path."""
    path = os.path.join(folder, CARD_FILE)
    with open(path, "w", encoding="utf-8") as f:
        f.write(model_card(hparams, corpus))
    return path


def detector_card_section(report, false_positive_rate):
    """The model card's section on an exported fake-data detector (``ser-adv detector``).

    Arguments
    ---------
    report : str
        The detector run's ``detection.md`` table.
    false_positive_rate : float
        The share of real dev utterances that the exported threshold flags.
    """
    return f"""
## Fake-data detector

This interface also holds a fake-data detector: a small network on the model's embedding,
trained on real utterances of the training split against their adversarial twins. Every
classification returns a fifth output, `is_adversarial`, the detector's probability that
the input is fake; an input is flagged when it exceeds `recognizer.hparams.detector_threshold`
(set to flag {false_positive_rate:.0%} of real dev utterances):

```python
out_prob, score, index, text_lab, is_adversarial = recognizer.classify_file("speech.wav")
flagged = is_adversarial > recognizer.hparams.detector_threshold
```

Its test results, on the attack it was trained on, on attacks it never saw, and on an
adaptive attack that attacks classifier and detector together:

{report}
A detector that an adaptive attack evades protects only against attackers who do not know
it (Carlini and Wagner, "Adversarial Examples Are Not Easily Detected", AISec 2017).
"""

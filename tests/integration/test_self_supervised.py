"""Self-supervised encoders and foreign SpeechBrain interfaces under attack, offline.

Tiny random encoders of each family are built from ``transformers`` configurations and saved with
``save_pretrained`` into a temporary folder, then loaded by the recipes' own yaml files through SpeechBrain's
Hugging Face wrappers, as a user's hub download would be (the recipes' debug rows in ``tests/recipes/EmoDB.csv``
train and attack them end to end). A tiny ``EncoderClassifier`` folder made here is attacked by
``ser-adv attack-interface``.
"""

import os

import pytest
import safetensors.torch
import torch
import yaml
from helpers import EMODB_SAMPLES, load_hparams
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

from ser_adv_brain.attacks import FGSM, WaveformPGD
from ser_adv_brain.commands import attack_interface
from ser_adv_brain.data.validation import DataValidationError
from ser_adv_brain.evaluation.suite import check_attacks_fit
from ser_adv_brain.evaluation.tiers import tier_budget_grid
from ser_adv_brain.interface.pretrained_classifier import PretrainedClassifier, load_interface, unfreeze_wrappers
from ser_adv_brain.models import SelfSupervisedClassifier
from ser_adv_brain.models.self_supervised import ENCODER_CLASSES, TINY_ENCODER, random_encoder_folder
from ser_adv_brain.runs.interface_attack import attack_interface as attack_interface_run
from ser_adv_brain.tables import read_csv

WAVS = 0.1 * torch.randn(2, 6400, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """Family -> a tiny random encoder saved as a Hugging Face folder."""
    root = tmp_path_factory.mktemp("encoders")
    return {family: random_encoder_folder(family, str(root / family), **TINY_ENCODER) for family in ENCODER_CLASSES}


def wrapper(folder, **options):
    return Wav2Vec2(folder, save_path=folder, output_all_hiddens=True, **options)


@pytest.mark.parametrize("family", sorted(ENCODER_CLASSES))
@pytest.mark.parametrize("hparams_file", ["{}_single.yaml", "wav2vec2_vanilla.yaml"])
def test_each_recipe_yaml_loads_the_saved_encoder_it_is_pointed_at(hparams_file, family, encoders, tmp_path):
    """Each family's single-training file, and the adversarial files (wav2vec2_*) with any family's weights:
    SpeechBrain's HuBERT and WavLM wrappers are its Wav2Vec2 wrapper, and the weights' config picks the encoder."""
    hparams = load_hparams(
        f"recipes/EmoDB/hparams/{hparams_file.format(family)}",
        encoder_source=encoders[family],
        data_folder=str(EMODB_SAMPLES),
        output_folder=str(tmp_path),
    )
    model = hparams["model"]
    assert isinstance(model, SelfSupervisedClassifier)
    assert type(model.encoder.model).__name__ == ENCODER_CLASSES[family][1]
    saved = safetensors.torch.load_file(os.path.join(encoders[family], "model.safetensors"))
    loaded = model.encoder.model.state_dict()
    assert saved.keys() <= loaded.keys() and all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert hparams["checkpointer"].recoverables["model"] is model


def test_a_frozen_encoder_learns_nothing_yet_passes_gradients_to_the_waveform(encoders):
    model = SelfSupervisedClassifier(wrapper(encoders["wav2vec2"]), n_classes=3, freeze_encoder=True).train()
    assert not model.encoder.training and model.classifier.training
    wavs = WAVS.clone().requires_grad_()
    logits, _ = model(wavs)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert model.classifier.weight.grad.abs().sum() > 0 and model.layer_weights.grad.abs().sum() > 0
    assert wavs.grad.abs().sum() > 0


@pytest.mark.parametrize("freeze_feature_extractor", [True, False])
def test_a_train_mode_attack_gets_the_waveforms_gradient(encoders, freeze_feature_extractor):
    """In train mode (an attack's ``model_mode: train``), Hugging Face's convolutions would set requires_grad on
    their input, which fails on a waveform that requires grad."""
    encoder = wrapper(encoders["hubert"], freeze_feature_extractor=freeze_feature_extractor)
    model = SelfSupervisedClassifier(encoder, n_classes=3).train()
    wavs = WAVS.clone().requires_grad_()
    (grad,) = torch.autograd.grad(model(wavs)[0].logsumexp(-1).sum(), wavs)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("pooling", ["mean", "attentive"])
def test_the_model_is_one_function_of_the_audio(encoders, pooling):
    """In eval mode two forwards agree and draw nothing from torch's generator: an attack and the pass that
    scores its output see the same model (SpeechBrain's mean pooling adds random noise to the mean)."""
    model = SelfSupervisedClassifier(wrapper(encoders["wav2vec2"]), n_classes=3, pooling=pooling).eval()
    state = torch.get_rng_state()
    with torch.no_grad():
        first, second = model(WAVS)[0], model(WAVS)[0]
    assert torch.equal(first, second) and torch.equal(torch.get_rng_state(), state)


def test_the_wrappers_own_freeze_is_refused_as_it_leaves_attacks_no_gradient(encoders):
    with pytest.raises(ValueError, match="freeze: True runs the encoder under torch.no_grad"):
        SelfSupervisedClassifier(wrapper(encoders["hubert"], freeze=True), n_classes=3)


def test_audio_settings_that_do_not_fit_the_encoder_are_refused_by_name(encoders):
    with pytest.raises(ValueError, match="hop_length is 160, the encoder's is 320"):
        SelfSupervisedClassifier(wrapper(encoders["wavlm"]), n_classes=3, sample_rate=16000, hop_length=160)


def test_layer_k_is_that_hidden_state_and_the_weighted_sum_starts_as_the_mean(encoders):
    encoder = wrapper(encoders["wav2vec2"]).eval()
    with torch.no_grad():
        states = encoder(WAVS)
        one = SelfSupervisedClassifier(encoder, n_classes=3, layer=1).eval()
        weighted = SelfSupervisedClassifier(encoder, n_classes=3).eval()
        assert torch.equal(one.frames(WAVS), states[1])
        torch.testing.assert_close(weighted.frames(WAVS), states.mean(dim=0))


def test_layer_drop_is_off_so_that_every_hidden_state_is_there_in_training(tmp_path):
    folder = random_encoder_folder("wav2vec2", str(tmp_path), **{**TINY_ENCODER, "layerdrop": 1.0})  # drops all
    model = SelfSupervisedClassifier(wrapper(folder), n_classes=3).train()
    assert model.encoder(WAVS).shape[0] == TINY_ENCODER["num_hidden_layers"] + 1
    assert model(WAVS)[0].shape == (2, 3)


@pytest.mark.parametrize("pooling, width", [("mean", 32), ("attentive", 64)])
def test_the_pooling_gives_the_embedding_the_head_reads(encoders, pooling, width):
    model = SelfSupervisedClassifier(wrapper(encoders["wav2vec2"]), n_classes=3, pooling=pooling).eval()
    logits, embedding = model(WAVS)
    assert embedding.shape == (2, width) and torch.allclose(logits, model.classifier(embedding))


def test_gradient_checkpointing_changes_no_gradient(encoders):
    def parameter_gradients(checkpointing):
        torch.manual_seed(0)  # the same head; the same dropout masks (the recomputation replays the random state)
        model = SelfSupervisedClassifier(
            wrapper(encoders["wav2vec2"]), n_classes=3, gradient_checkpointing=checkpointing
        ).train()
        model(WAVS)[0].logsumexp(-1).sum().backward()
        return model, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    checkpointed, with_checkpoints = parameter_gradients(True)
    assert all(layer.gradient_checkpointing for layer in checkpointed.encoder.model.encoder.layers)
    _, without = parameter_gradients(False)
    assert with_checkpoints.keys() == without.keys()
    for name, grad in without.items():
        torch.testing.assert_close(with_checkpoints[name], grad, msg=name)


def test_attacks_on_features_are_refused_for_a_model_that_takes_the_waveform(encoders):
    model = SelfSupervisedClassifier(wrapper(encoders["wav2vec2"]), n_classes=3)
    check_attacks_fit(model, [WaveformPGD(eps=30.0)], "attack_suite")
    with pytest.raises(ValueError, match="attack_suite: FGSM.* perturb.* the log-Mel features"):
        check_attacks_fit(model, [WaveformPGD(eps=30.0), FGSM(eps=0.02)], "attack_suite")


def test_frozen_hugging_face_wrappers_are_run_with_autograd(encoders):
    class Interface(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mods = torch.nn.ModuleDict({"wav2vec2": wrapper(encoders["wav2vec2"], freeze=True)})

    interface = Interface()
    wavs = WAVS.clone().requires_grad_()
    assert not interface.mods.wav2vec2(wavs).requires_grad
    assert unfreeze_wrappers(interface) == ["wav2vec2"]
    assert interface.mods.wav2vec2(wavs).requires_grad


# ---------------------------------------------------------------- ser-adv attack-interface

INTERFACE_LABELS = ["ang", "hap", "neu", "sad"]
INTERFACE_YAML = """
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: 20
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: 20
    tdnn_channels: [8, 8, 8, 8, 16]
    lin_neurons: 8
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 8
    out_neurons: 4
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
"""
# A custom interface that hides its gradients, as foreign_class loads it from the folder.
DETACHING_INTERFACE = """import torch
from speechbrain.inference.classifiers import EncoderClassifier


class NoGradClassifier(EncoderClassifier):
    def classify_batch(self, wavs, wav_lens=None):
        with torch.no_grad():
            return super().classify_batch(wavs, wav_lens)
"""
# EmoDB's labels (the sample clips' emotions) -> the interface's; the three others are left out.
LABEL_MAP = "{anger: ang, happiness: hap, neutral: neu, sadness: sad, boredom: null, disgust: null, fear: null}"


@pytest.fixture(scope="module")
def interface_folder(tmp_path_factory):
    """A tiny ``EncoderClassifier`` as SpeechBrain ships one: ``hyperparams.yaml``, ``<name>.ckpt`` weights, labels."""
    from hyperpyyaml import load_hyperpyyaml

    folder = tmp_path_factory.mktemp("interface")
    (folder / "hyperparams.yaml").write_text(INTERFACE_YAML)
    (folder / "custom_interface.py").write_text(DETACHING_INTERFACE)
    torch.manual_seed(0)
    modules = load_hyperpyyaml(INTERFACE_YAML)
    for name in ("embedding_model", "classifier"):
        torch.save(modules[name].state_dict(), folder / f"{name}.ckpt")
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(INTERFACE_LABELS)
    encoder.save(folder / "label_encoder.ckpt")
    return folder


def sample_manifest(folder, pattern, name):
    """The sample clips matching ``pattern``, as a recipe's manifest ``folder / name``."""
    letters = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness"}
    letters["N"] = "neutral"
    rows = ["ID,duration,wav,spk_id,emo"]
    for path in sorted(EMODB_SAMPLES.glob(pattern)):
        rows.append(f"{path.stem},0.4,{path},{path.stem[:2]},{letters[path.stem[5]]}")
    (folder / name).write_text("\n".join(rows) + "\n")
    return folder / name


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """The two test speakers' sample clips (03 and 08: 14 clips, 7 emotions), as a recipe's ``test.csv``."""
    return sample_manifest(tmp_path_factory.mktemp("manifest"), "0[38]*.wav", "test.csv")


def interface_command(interface_folder, manifest, folder, *options):
    return attack_interface.main(
        [str(interface_folder), str(manifest), f"--savedir={folder / 'savedir'}", f"--output_folder={folder}", *options]
    )


def test_an_encoder_classifier_folder_is_attacked_with_the_waveform_suite(interface_folder, manifest, tmp_path):
    outcomes = interface_command(
        interface_folder, manifest, tmp_path, f"--label_map={LABEL_MAP}", "--budgets={waveform_snr: [30]}"
    )
    assert len(outcomes.ids) == 8  # the 4 mapped emotions of 2 speakers
    assert [INTERFACE_LABELS[t] for t in outcomes.targets.tolist()] == ["hap", "neu", "sad", "ang"] * 2
    rows = read_csv(tmp_path / "attack_suite.csv")
    pgd = next(r for r in rows if r["attack"] == "WaveformPGD-10")
    # Early exit: the attack ran on exactly the utterances the interface got right, each costing its 10
    # gradient passes and the suite's scoring pass (the model is its own waveform model: counted once).
    assert int(pgd["attacked"]) == int(outcomes.clean_correct.sum())
    assert outcomes.forward_rows[("waveform_snr", 30.0, "WaveformPGD-10")] == 11 * int(pgd["attacked"])
    robust = next(r for r in rows if r["attack"] == "robust")
    assert float(robust["UAR_worst_so_far"]) == pytest.approx(outcomes.uar(outcomes.robust_after("waveform_snr", 30.0)))
    report = (tmp_path / "robustness.md").read_text()
    assert "8 of 14 utterances" in report and "Gradient-masking checks" in report
    for name in ("robustness.png", "confusion_test.csv", "classes.csv", "waveform_snr.csv"):
        assert (tmp_path / name).is_file(), name


def test_labels_the_interface_lacks_are_named(interface_folder, manifest, tmp_path):
    with pytest.raises(SystemExit, match=r"labels \['anger', 'boredom', 'disgust', 'fear', 'happiness', 'neutral'"):
        interface_command(interface_folder, manifest, tmp_path)


def test_an_interface_without_gradients_is_refused_in_one_line(interface_folder, manifest, tmp_path):
    with pytest.raises(SystemExit) as refusal:
        interface_command(
            interface_folder,
            manifest,
            tmp_path,
            "--pymodule_file=custom_interface.py",
            "--interface_class=NoGradClassifier",
            f"--label_map={LABEL_MAP}",
        )
    message = str(refusal.value)
    assert "cannot be attacked: its scores carry no gradient back to the waveform" in message
    assert "\n" not in message and not (tmp_path / "attack_suite.csv").exists()


def test_the_tiers_waveform_budgets_are_the_default(interface_folder, manifest):
    def budgets(*options):
        return attack_interface.parse_arguments([str(interface_folder), str(manifest), *options]).budgets

    assert budgets("--tier=audio") == tier_budget_grid("audio", "waveform")
    assert budgets() == budgets("--tier=standard") == {"waveform_snr": [40.0, 30.0, 20.0]}
    assert budgets("--attacks=[!new:ser_adv_brain.attacks.WaveformPGD {eps: 40}]") == {"waveform_snr": [40, 30, 20]}


@pytest.mark.parametrize(
    "options, culprit",
    [
        (["--tier=audio"], r"UniversalPerturbation\(.*\) learn\(s\) on training utterances: .*--training_manifest"),
        (["--tier=audio", "--training_manifest=<manifest>"], r"shares 14 utterance\(s\) with the manifest attacked"),
        (["--training_manifest=<training>"], "read only by attacks that learn on training data"),
        (["--tier=audio", "--training_manifest=<training>.missing"], r"--training_manifest .*\.missing: no such file"),
        (["--tier=audio", "--budgets={waveform_snr: [30]}"], "--budgets: suite_budgets has no budgets for"),
    ],
)
def test_a_training_manifest_that_does_not_fit_the_suite_is_refused_before_any_attack(
    interface_folder, manifest, tmp_path, options, culprit
):
    training = sample_manifest(tmp_path, "1[04]*.wav", "train.csv")
    options = [option.replace("<manifest>", str(manifest)).replace("<training>", str(training)) for option in options]
    with pytest.raises(SystemExit, match=culprit):
        interface_command(interface_folder, manifest, tmp_path, f"--label_map={LABEL_MAP}", *options)
    assert not (tmp_path / "attack_suite.csv").exists() and not (tmp_path / "universal_perturbations").exists()


def test_through_the_python_api_a_missing_training_manifest_is_named_the_training_manifest(
    interface_folder, manifest, tmp_path
):
    """The command names each manifest by its option before the interface loads; the function has no options to
    name, so its own check names the manifest that is missing."""
    classifier = PretrainedClassifier(load_interface(str(interface_folder), savedir=str(tmp_path / "savedir")))
    missing = tmp_path / "train.csv"
    with pytest.raises(DataValidationError, match=r"train\.csv: the training manifest does not exist"):
        attack_interface_run(
            classifier,
            str(manifest),
            [WaveformPGD(eps=30, steps=2)],
            {"waveform_snr": [30]},
            str(tmp_path / "out"),
            label_map=yaml.safe_load(LABEL_MAP),
            training_manifest=str(missing),
        )


def test_the_audio_tier_learns_its_universal_perturbation_on_the_training_manifest(
    interface_folder, manifest, tmp_path
):
    """The audio tier on an interface: the universal perturbation learnt on other speakers' utterances (those
    the label map keeps), kept as a run keeps it and read back by the next evaluation; over-the-air PGD."""
    training = sample_manifest(tmp_path, "1[04]*.wav", "train.csv")
    folder = tmp_path / "out"
    options = [f"--label_map={LABEL_MAP}", "--tier=audio", f"--training_manifest={training}"]
    budgets = "--budgets={waveform_universal: [30], waveform_room_snr: [30]}"
    outcomes = interface_command(interface_folder, manifest, folder, *options, budgets)
    [kept] = (folder / "universal_perturbations").glob("*.pt")
    learnt = torch.load(kept, weights_only=True)["learnt"]
    kept_labels = ("W", "F", "N", "T")  # anger, happiness, neutral, sadness: the mapped ones
    expected = sorted(p.stem for p in EMODB_SAMPLES.glob("1[04]*.wav") if p.stem[5] in kept_labels)
    assert list(learnt["training_ids"]) == expected and learnt["perturbation"].abs().sum() > 0
    rows = read_csv(folder / "attack_suite.csv")
    assert {(r["threat_model"], r["attack"]) for r in rows if r["attack"] != "robust"} >= {
        ("waveform_universal", "Universal"),
        ("waveform_room_snr", "OverTheAirPGD-10"),
    }
    assert outcomes.uar(outcomes.robust_after("waveform_universal", 30.0)) <= outcomes.uar(outcomes.clean_correct)
    # The masking check's per-utterance attack at the universal budget (the audio tier has none of its own).
    assert ("waveform_snr", 30.0, "WaveformPGD-10") in outcomes.forward_rows
    modified = kept.stat().st_mtime_ns
    interface_command(interface_folder, manifest, folder, *options, budgets)
    # Read back, not learnt again: the same model, attack and training utterances.
    assert list((folder / "universal_perturbations").glob("*.pt")) == [kept] and kept.stat().st_mtime_ns == modified

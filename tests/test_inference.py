"""The pretrained interface: a tiny run exports it, a fresh process loads it and predicts as the Brain does."""

import os
import sys

import pytest
import soundfile
import speechbrain as sb
import torch
import torchaudio.functional
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset

from helpers_iface import (
    REPO,
    TINY_FLAGS,
    evaluation_brain,
    make_tiny_corpus,
    run_command,
    run_recipe,
    one_thread,  # noqa: F401 (an autouse fixture)
)
from ser_adv_brain.audio import frames_to_samples
from ser_adv_brain.dataio import audio_pipeline

HPARAMS = "hparams/cnn4_vanilla.yaml"
EPS = 0.05


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny vanilla run (which exports its interface) and the files to classify."""
    tmp = tmp_path_factory.mktemp("inference")
    corpus = make_tiny_corpus(str(tmp / "corpus"))
    out = str(tmp / "run")
    flags = [*TINY_FLAGS, "--warmup_steps=1", f"--data_folder={corpus}", f"--output_folder={out}"]
    run_recipe(HPARAMS, *flags)
    brain, datasets, hparams = evaluation_brain(HPARAMS, *flags)
    test_wavs = sorted(datasets["test"].data[i]["wav"] for i in datasets["test"].data_ids)
    long_wav = max(test_wavs, key=lambda wav: soundfile.info(wav).frames)  # cropped to n_frames
    # 1 s of a test clip, stereo at 22.05 kHz: resampled, down-mixed and tiled to n_frames.
    audio, rate = soundfile.read(test_wavs[0], dtype="float32")
    short = torchaudio.functional.resample(torch.from_numpy(audio[:rate]), rate, 22050)
    stereo_wav = str(tmp / "stereo_22050.wav")
    soundfile.write(stereo_wav, torch.stack([short, 0.5 * short], dim=1).numpy(), 22050)
    return {"out": out, "brain": brain, "hparams": hparams, "wavs": [long_wav, stereo_wav], "tmp": tmp}


def brain_features(brain, hparams, wavs):
    """Features and log posteriors of the Brain's own evaluation pipeline (best checkpoint) on ``wavs``."""
    num_samples = frames_to_samples(hparams["n_frames"], hparams["hop_length"])
    dataset = DynamicItemDataset(
        {str(i): {"wav": wav} for i, wav in enumerate(wavs)},
        dynamic_items=[audio_pipeline(hparams["sample_rate"], num_samples, random_crop=False)],
        output_keys=["id", "sig"],
    )
    brain.on_evaluate_start(max_key="UAR")
    brain.modules.eval()
    batch = PaddedBatch([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        predictions = brain.compute_forward(batch, sb.Stage.TEST)
    return predictions["feats"], torch.log_softmax(predictions["logits"], dim=-1)


@pytest.fixture(scope="module")
def client_results(trained):
    """The interface used from a fresh process (from_hparams, foreign_class, batches, attacks)."""
    folder = os.path.join(trained["out"], "interface")
    results = str(trained["tmp"] / "client.pt")
    client = os.path.join(REPO, "tests", "inference_client.py")
    run_command([sys.executable, client, folder, str(trained["tmp"] / "pretrained"), results, str(EPS), *trained["wavs"]])
    return torch.load(results)


def test_export_writes_the_interface_folder(trained):
    folder = os.path.join(trained["out"], "interface")
    expected = {"hyperparams.yaml", "model.ckpt", "normalizer.ckpt", "label_encoder.ckpt", "custom_interface.py", "README.md"}
    assert set(os.listdir(folder)) == expected
    # The exported weights are the best checkpoint's.
    (checkpoint,) = [c for c in os.listdir(os.path.join(trained["out"], "save")) if c.startswith("CKPT")]
    for name in ("model", "normalizer"):
        exported = torch.load(os.path.join(folder, f"{name}.ckpt"))
        saved = torch.load(os.path.join(trained["out"], "save", checkpoint, f"{name}.ckpt"))
        assert exported.keys() == saved.keys() and all(torch.equal(exported[k], saved[k]) for k in saved)


def test_classify_file_matches_the_brain_evaluation(trained, client_results):
    brain, hparams = trained["brain"], trained["hparams"]
    _, log_probs = brain_features(brain, hparams, trained["wavs"])
    for i, (out_prob, score, index, text_lab) in enumerate(client_results["files"]):
        torch.testing.assert_close(out_prob[0], log_probs[i], atol=1e-5, rtol=1e-5)
        assert int(index) == int(log_probs[i].argmax())
        assert float(score) == pytest.approx(float(log_probs[i].max()), abs=1e-5)
        assert text_lab == [hparams["label_encoder"].decode_ndim(int(index))]


def test_foreign_class_raw_samples_and_padded_batches_agree(client_results):
    files = client_results["files"]
    for (out_prob, _, index, text_lab), (f_prob, _, f_index, f_lab) in zip(files, client_results["foreign_class"]):
        assert torch.equal(out_prob, f_prob) and torch.equal(index, f_index) and text_lab == f_lab
    for (out_prob, _, _, text_lab), (raw_prob, _, _, raw_lab) in zip(files, client_results["raw_samples"]):
        torch.testing.assert_close(raw_prob, out_prob, atol=1e-5, rtol=1e-5)
        assert raw_lab == text_lab
    out_prob, _, index, text_lab = client_results["padded_batch"]
    torch.testing.assert_close(out_prob, torch.cat([f[0] for f in files]), atol=1e-5, rtol=1e-5)
    assert text_lab == [f[3][0] for f in files]


def test_attack_batch_is_the_brain_attack(trained, client_results):
    brain, hparams = trained["brain"], trained["hparams"]
    feats, _ = brain_features(brain, hparams, trained["wavs"])
    for i, (fake, out_prob, _, index, _) in enumerate(client_results["attacks"]):
        clean = feats[i : i + 1]
        expected = hparams["attack"].perturb(brain.model, clean, None, eps=EPS)
        torch.testing.assert_close(fake, expected, atol=1e-5, rtol=0)
        assert float((fake - clean).abs().max()) == pytest.approx(EPS, abs=1e-5)
        with torch.no_grad():
            logits, _ = brain.model(expected)
        torch.testing.assert_close(out_prob, torch.log_softmax(logits, dim=-1), atol=1e-5, rtol=1e-5)
        assert int(index) == int(logits.argmax())
        torch.testing.assert_close(client_results["attacks_eps0"][i], clean, atol=1e-5, rtol=0)


def test_interface_refuses_audio_over_its_limit(trained):
    from ser_adv_brain.inference import EmotionRecognizer

    folder = os.path.join(trained["out"], "interface")
    recognizer = EmotionRecognizer.from_hparams(
        source=folder, savedir=str(trained["tmp"] / "limited"), overrides={"max_audio_seconds": 1.5}
    )
    long_wav = trained["wavs"][0]
    assert soundfile.info(long_wav).duration > 1.5
    with pytest.raises(ValueError, match="max_audio_seconds"):
        recognizer.classify_file(long_wav)
    with pytest.raises(ValueError, match="max_audio_seconds"):
        recognizer.classify_batch(torch.zeros(2, 32000), sample_rate=16000)  # 2 s
    recognizer.classify_batch(torch.randn(1, 16000), sample_rate=16000)  # 1 s passes


def test_interface_files_load_without_running_code(trained):
    folder = os.path.join(trained["out"], "interface")
    for name in ("model.ckpt", "normalizer.ckpt"):
        state = torch.load(os.path.join(folder, name), weights_only=True)
        assert all(torch.is_tensor(value) for value in state.values())

"""The pretrained interface: a tiny run exports it, a fresh process loads it and predicts as the Brain does."""

import builtins
import os
import shutil
import sys

import pytest
import soundfile
import speechbrain as sb
import torch
import torch.nn.functional as F
import yaml
from helpers import REPO_ROOT, run_command
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset

from ser_adv_brain.audio.loading import frames_to_samples
from ser_adv_brain.data.dataio import audio_pipeline

EPS = 0.05


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
    client = os.path.join(REPO_ROOT, "tests", "integration", "inference_client.py")
    run_command(
        [sys.executable, client, folder, str(trained["tmp"] / "pretrained"), results, str(EPS), *trained["wavs"]]
    )
    return torch.load(results)


def best_checkpoint(out):
    """The kept checkpoint with the best dev UAR (the latest one is kept too)."""
    save = os.path.join(out, "save")
    folders = [os.path.join(save, c) for c in os.listdir(save) if c.startswith("CKPT")]
    return max(folders, key=lambda c: yaml.safe_load(open(os.path.join(c, "CKPT.yaml")))["UAR"])


def test_export_writes_the_interface_folder(trained):
    folder = os.path.join(trained["out"], "interface")
    expected = {
        "hyperparams.yaml",
        "model.ckpt",
        "normalizer.ckpt",
        "label_encoder.ckpt",
        "custom_interface.py",
        "README.md",
    }
    assert set(os.listdir(folder)) == expected
    # The exported weights are the best checkpoint's, not the latest's.
    checkpoint = best_checkpoint(trained["out"])
    assert open(os.path.join(checkpoint, "counter.ckpt")).read().strip() != "12"
    for name in ("model", "normalizer"):
        exported = torch.load(os.path.join(folder, f"{name}.ckpt"))
        saved = torch.load(os.path.join(checkpoint, f"{name}.ckpt"))
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


def fgsm_written_out(model, clean, eps):
    """``clean + eps * sign(grad_x CE(model(x), predicted class))`` in eval mode, the yaml's attack
    (eps below its eta = 0.1, so nothing is clipped), computed without the attack code."""
    model.eval()
    x = clean.clone().requires_grad_(True)
    logits, _ = model(x)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, logits.argmax(dim=-1)), x)
    return (clean + eps * grad.sign()).detach()


def test_attack_batch_is_the_brain_attack(trained, client_results):
    brain, hparams = trained["brain"], trained["hparams"]
    feats, _ = brain_features(brain, hparams, trained["wavs"])
    attack = hparams["attack"]
    assert (attack.label_source, attack.model_mode, attack.eta) == ("predicted", "eval", 0.1) and EPS < attack.eta
    for i, (fake, out_prob, _, index, _) in enumerate(client_results["attacks"]):
        clean = feats[i : i + 1]
        expected = fgsm_written_out(brain.modules.model, clean, EPS)
        torch.testing.assert_close(fake, expected, atol=1e-5, rtol=0)
        assert float((fake - clean).abs().max()) == pytest.approx(EPS, abs=1e-5)
        with torch.no_grad():
            logits, _ = brain.model(expected)
        torch.testing.assert_close(out_prob, torch.log_softmax(logits, dim=-1), atol=1e-5, rtol=1e-5)
        assert int(index) == int(logits.argmax())
        torch.testing.assert_close(client_results["attacks_eps0"][i], clean, atol=1e-5, rtol=0)


def test_interface_refuses_audio_over_its_limit(trained):
    from ser_adv_brain.interface import EmotionRecognizer

    folder = os.path.join(trained["out"], "interface")
    long_wav = trained["wavs"][0]
    limit = round(soundfile.info(long_wav).duration - 0.1, 2)  # the file is over it
    recognizer = EmotionRecognizer.from_hparams(
        source=folder, savedir=str(trained["tmp"] / "limited"), overrides={"max_audio_seconds": limit}
    )
    with pytest.raises(ValueError, match="max_audio_seconds"):
        recognizer.classify_file(long_wav)
    with pytest.raises(ValueError, match="max_audio_seconds"):
        recognizer.classify_batch(torch.randn(2, int((limit + 0.5) * 16000)), sample_rate=16000)
    recognizer.classify_batch(torch.randn(1, int(limit * 16000)), sample_rate=16000)  # up to the limit passes


class OpensAFile:
    """Unpickling this calls ``open(path, "w")``: what a booby-trapped checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return builtins.open, (self.path, "w")


@pytest.mark.parametrize("name", ["model.ckpt", "normalizer.ckpt"])
def test_from_hparams_loads_weights_only(trained, name):
    """An exported folder whose checkpoint would run code when unpickled is refused by
    ``from_hparams`` itself, and the code never runs."""
    from ser_adv_brain.interface import EmotionRecognizer

    folder = trained["tmp"] / f"trapped_{name}"
    shutil.copytree(os.path.join(trained["out"], "interface"), folder)
    marker = trained["tmp"] / f"code_ran_{name}"
    torch.save({"weight": OpensAFile(str(marker))}, folder / name)
    with pytest.raises(Exception, match="[Ww]eights[ _]only"):
        EmotionRecognizer.from_hparams(source=str(folder), savedir=str(trained["tmp"] / f"trapped_save_{name}"))
    assert not marker.exists()

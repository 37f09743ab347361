"""Transfer attacks (black box): fake data made on a source model, scored by every target model (Papernot et al., 2016).

Feature-domain fake data go from one model to another as log-Mel features (each model's own
normaliser applies), so the models must share their feature settings and the split's utterances
(``check_compatible``). The models are ``ser_adv_brain.runs.TrainedModel``s.
"""

import torch

from ser_adv_brain.metrics import ConfusionMatrix

# Settings that make one model's log-Mel features another's.
FEATURE_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "n_frames")


def fake_data(source, attack, split, eps):
    """``{id: adversarial log-Mel features or waveform}`` of the split, made on ``source``."""
    fakes = {}
    for ids, wavs, targets in source.batches(split):
        if attack.domain == "waveform":
            fake = attack.perturb(source.waveform_model, wavs, targets, eps=eps, keys=ids)
        else:
            with torch.no_grad():
                feats = source.brain.compute_features(wavs)
            # Back from this model's z-score to log-Mel, which every target normalises its own way.
            fake = attack.perturb(source.model, feats, targets, eps=eps, keys=ids)
            fake = fake * source.normalizer.std + source.normalizer.mean
        fakes.update(zip(ids, fake.detach()))
    return fakes


def score(target, fakes, domain, split):
    """UAR of ``target`` on a source's fake data (``fakes`` None: on real data)."""
    confusion = ConfusionMatrix(target.hparams["n_classes"])
    for ids, wavs, targets in target.batches(split):
        with torch.no_grad():
            if fakes is None:
                logits, _ = target.model(target.brain.compute_features(wavs))
            elif domain == "waveform":
                logits, _ = target.waveform_model(torch.stack([fakes[i] for i in ids]))
            else:
                logits, _ = target.model(target.normalizer(torch.stack([fakes[i] for i in ids])))
        confusion.append(logits.argmax(dim=-1), targets)
    return confusion.uar()


def check_compatible(models, split, domain):
    """Raises a ``ValueError`` naming the folder and setting, unless every model can score every other's fake data."""
    first = models[0]
    ids = sorted(first.datasets[split].data_ids)
    for other in models[1:]:
        if sorted(other.datasets[split].data_ids) != ids:
            raise ValueError(f"{other.folder}: its {split} split holds other utterances than {first.folder}'s.")
        if other.hparams["label_encoder"].lab2ind != first.hparams["label_encoder"].lab2ind:
            raise ValueError(f"{other.folder}: its label encoder differs from {first.folder}'s.")
        keys = FEATURE_KEYS if domain == "features" else ("sample_rate", "n_frames", "hop_length")
        for key in keys:
            if other.hparams[key] != first.hparams[key]:
                raise ValueError(
                    f"{other.folder}: {key} is {other.hparams[key]!r}, {first.folder} has {first.hparams[key]!r}."
                )


def transfer_matrix(models, attack, eps_grid, split="test"):
    """``{eps: {(source, target): UAR}}`` and ``{target: UAR on real data}``; folders name the models."""
    real = {m.folder: score(m, None, attack.domain, split) for m in models}
    matrices = {}
    for eps in eps_grid:
        matrices[eps] = {}
        for source in models:
            fakes = fake_data(source, attack, split, eps)
            for target in models:
                matrices[eps][(source.folder, target.folder)] = score(target, fakes, attack.domain, split)
    return matrices, real

"""The spectrogram triptych's data: a test utterance the attack turns wrong, its features, perturbation and fake."""

import os

import numpy as np
import speechbrain as sb
import torch

TRIPTYCH_FILE = "spectrogram_triptych.npz"


def write_triptych(brain, hparams, dataset, attack, folder, max_utterances=64):
    """``spectrogram_triptych.npz``: a test utterance's features, the training attack's perturbation, its fake.

    The utterance is the first of ``dataset`` that the model gets right and the attack turns
    wrong, among the first ``max_utterances`` (else the first one). The attack is the FGSM
    report's (the run's ``attack``, at the training eps), against the model as it stands
    (evaluations restore the tested checkpoint). Returns the path.
    """
    model = brain.model
    brain.modules.eval()
    chosen = None
    loader = sb.dataio.dataloader.make_dataloader(dataset, batch_size=hparams["batch_size"])
    for start, batch in zip(range(0, max_utterances, hparams["batch_size"]), loader):
        batch = batch.to(brain.device)
        targets = brain.targets(batch)
        with torch.no_grad():
            real = brain.compute_features(batch.sig.data)
        fake = attack.perturb(model, real, targets).detach()
        with torch.no_grad():
            predicted = [model(x)[0].argmax(dim=-1) for x in (real, fake)]
        fooled = ((predicted[0] == targets) & (predicted[1] != targets)).nonzero().flatten().tolist()
        if fooled or chosen is None:
            i = fooled[0] if fooled else 0
            chosen = (batch.id[i], real[i], fake[i], [int(targets[i]), int(predicted[0][i]), int(predicted[1][i])])
        if fooled:
            break
    utterance, real, fake, labels = chosen
    names = hparams["label_encoder"].decode_ndim(labels)
    path = os.path.join(folder, TRIPTYCH_FILE)
    np.savez_compressed(
        path,
        real=real.float().cpu().numpy(),
        fake=fake.float().cpu().numpy(),
        eps=float(attack.eps),
        utterance=str(utterance),
        true=names[0],
        predicted_real=names[1],
        predicted_fake=names[2],
    )
    return path

"""A tiny emotion classifier trained once per session, for the attack-strength tests.

Four "emotions" are noisy tones a half-octave apart; a CNN-4 of width 4 learns
them in a few seconds. The waveform pipeline (log-Mel, normaliser, model) is
returned too, for the waveform attacks.
"""

import functools
import math

import torch

from ser_adv_brain.audio.loading import frames_to_samples
from ser_adv_brain.features import FeatureNormalizer, LogMel
from ser_adv_brain.models import CNN4

N_CLASSES = 4
N_FRAMES = 24
N_MELS = 20
CLASS_NAMES = ["anger", "boredom", "happiness", "sadness"]


def tones(n_utterances, seed, sample_rate=16000):
    """``[n, samples]`` waveforms and their labels (cycling through the classes)."""
    generator = torch.Generator().manual_seed(seed)
    num_samples = frames_to_samples(N_FRAMES, 256)
    time_s = torch.arange(num_samples) / sample_rate
    labels = torch.arange(n_utterances) % N_CLASSES
    pitch = 200.0 * 2 ** (labels.float() / 2)
    phase = 2 * math.pi * torch.rand(n_utterances, 1, generator=generator)
    wavs = 0.3 * torch.sin(2 * math.pi * pitch[:, None] * time_s + phase)
    wavs = wavs + 0.1 * torch.randn(n_utterances, num_samples, generator=generator)
    return wavs, labels


@functools.lru_cache(maxsize=None)
def trained_classifier():
    """``(compute_features, normalizer, model, test_wavs, test_labels)``; the model in eval mode.

    Held out utterances only, so that attacks meet a model on data it did not fit.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    compute_features = LogMel(n_mels=N_MELS, f_max=4000.0)
    normalizer = FeatureNormalizer(n_mels=N_MELS)
    train_wavs, train_labels = tones(96, seed=1)
    normalizer.fit([compute_features(train_wavs)])
    feats = normalizer(compute_features(train_wavs))
    model = CNN4(n_classes=N_CLASSES, base_channels=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(60):
        batch = torch.arange(step * 32, step * 32 + 32) % len(feats)
        loss = torch.nn.functional.cross_entropy(model(feats[batch])[0], train_labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    torch.random.set_rng_state(generator_state)
    test_wavs, test_labels = tones(32, seed=2)
    return compute_features, normalizer, model, test_wavs, test_labels

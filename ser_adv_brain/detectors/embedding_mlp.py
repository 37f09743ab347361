"""A fake-data detector on the protected model's embedding (after Metzen et al., ICLR 2017)."""

import torch


class EmbeddingDetector(torch.nn.Module):
    """``s(v) = w_2^T ReLU(W_1 BN(v) + b_1) + b_2``, ``p(fake | x) = sigmoid(s(v))``.

    ``v`` is the embedding of the frozen classifier, the pooled vector that
    feeds its final fully connected layer (``model(feats)[1]``); ``BN`` is a
    batch norm without affine terms (the embedding's channels have widely
    different scales); training minimises the binary cross-entropy of ``s``
    with label 1 for fake and 0 for real inputs. Metzen et al., "On
    Detecting Adversarial Perturbations" (ICLR 2017), attach such a detector
    subnetwork to an inner layer of the classifier; Carlini and Wagner,
    "Adversarial Examples Are Not Easily Detected" (AISec 2017), show that an
    attack that knows the detector can evade it, so the detector is also
    judged under ``ser_adv_brain.attacks.DetectorAwarePGD``.

    Why the embedding and not the log-Mel: the classifier is frozen, so the
    embedding is a small fixed vector (``8 * base_channels`` for CNN-4) and
    the detector is a two-layer network that costs nothing beside the attack
    that makes its training data; and every attack, on the features or on the
    waveform, ends in the same embedding, so one detector scores them all.

    Arguments
    ---------
    embedding_dim : int
        Width of the classifier's embedding (``model.embedding_dim``).
    hidden : int
        Width of the hidden layer.

    Example
    -------
    >>> detector = EmbeddingDetector(embedding_dim=32, hidden=8)
    >>> detector(torch.randn(5, 32)).shape
    torch.Size([5])
    """

    def __init__(self, embedding_dim, hidden=64):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.net = torch.nn.Sequential(
            torch.nn.BatchNorm1d(embedding_dim, affine=False),
            torch.nn.Linear(embedding_dim, hidden),
            torch.nn.ReLU(),
            torch.nn.Linear(hidden, 1),
        )

    def forward(self, embedding):
        """``[batch, embedding_dim]`` -> the logit ``s`` of "fake", ``[batch]``."""
        return self.net(embedding.float()).squeeze(-1)

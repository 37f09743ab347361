"""Per-Mel-bin z-scoring of the features with training-split statistics (the paper's normalisation)."""

import torch


class FeatureNormalizer(torch.nn.Module):
    """Per-Mel-bin z-score with statistics of the training split only.

    The statistics are buffers, so SpeechBrain's ``Checkpointer`` saves them
    with the model and the pretrained interface restores them.

    Arguments
    ---------
    n_mels : int
    std_floor : float
        Lower bound on the standard deviation, for bins that never vary.
    """

    def __init__(self, n_mels=64, std_floor=1e-5):
        super().__init__()
        self.std_floor = std_floor
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @property
    def fitted(self):
        """Whether statistics have been estimated (or loaded)."""
        return bool(self.count > 0)

    @torch.no_grad()
    def fit(self, feature_batches):
        """Estimates the statistics over ``[batch, frames, n_mels]`` tensors.

        Sums run in float64, so the result does not depend on how the
        data is batched.
        """
        total = sq_total = 0.0
        count = 0
        for feats in feature_batches:
            flat = feats.reshape(-1, feats.shape[-1]).double()
            total = total + flat.sum(0)
            sq_total = sq_total + (flat**2).sum(0)
            count += flat.shape[0]
        if count == 0:
            raise ValueError("Cannot fit the feature normalizer on an empty training set.")
        mean = total / count
        var = (sq_total / count - mean**2).clamp(min=0.0)
        self.mean.copy_(mean)
        self.std.copy_(var.sqrt().clamp(min=self.std_floor))
        self.count.fill_(count)

    def forward(self, feats):
        """Z-scores ``[batch, frames, n_mels]`` features."""
        return (feats - self.mean) / self.std

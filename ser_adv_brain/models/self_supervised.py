"""A self-supervised speech encoder (wav2vec 2.0, HuBERT, WavLM) with a pooled linear head: waveform -> emotion."""

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.ECAPA_TDNN import AttentiveStatisticsPooling

from ser_adv_brain.checks import check_choice

POOLINGS = ("mean", "attentive")

# The Hugging Face classes of each family's encoder: what ``random_encoder_folder`` builds.
ENCODER_CLASSES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
}


class SelfSupervisedClassifier(torch.nn.Module):
    """Waveforms ``[batch, time]`` -> ``(logits, embedding)`` through a self-supervised encoder.

    As SpeechBrain's IEMOCAP emotion recipe (``train_with_wav2vec2.py``): the
    encoder's frames, pooled over time, then one linear layer. The encoder is
    one of SpeechBrain's Hugging Face wrappers (``Wav2Vec2``, ``HuBERT``,
    ``WavLM`` of ``speechbrain.integrations.huggingface``) built with
    ``output_all_hiddens: True``, so that the layer is chosen here:

    - ``layer: null``: a weighted sum of every layer's frames, with learnt
      softmax weights (as SpeechBrain's ``WeightedSSLModel``, Yang et al.,
      SUPERB, Interspeech 2021);
    - ``layer: k``: the frames of hidden state ``k`` (0: the input of the
      first transformer layer; -1: the last layer).

    The model takes the waveform (``input_domain``): the Brain feeds it the
    audio itself, and only waveform attacks apply to it.

    Frozen encoder (``freeze_encoder``): its weights are not trained and it
    stays in eval mode (no dropout), but gradients still flow *through* it to
    the waveform, as every attack on the audio needs. The wrapper's own
    ``freeze: True`` runs the encoder under ``torch.no_grad()``, which leaves
    no such gradient: it is refused.

    Arguments
    ---------
    encoder : speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        Or its subclasses ``HuBERT``, ``WavLM``; ``output_all_hiddens: True``, ``freeze: False``.
    n_classes : int
    sample_rate, n_fft, hop_length : int or None
        The recipe's audio settings, checked against the encoder's own (None: not checked): the rate
        it was trained at (its ``preprocessor_config.json``), the samples its first frame sees (its
        convolutions' receptive field, 400 for the base models) and its frame hop (320). The recipe
        counts ``n_frames`` in these frames, and refuses clips shorter than ``n_fft`` samples.
    layer : int or None
        See above.
    pooling : str
        ``"mean"`` (mean over frames, as SpeechBrain's recipe, without its noise) or ``"attentive"``
        (attentive statistics pooling, Okabe et al., Interspeech 2018: mean and
        standard deviation under learnt frame weights).
    freeze_encoder : bool
        Train the layer weights, pooling and head only.
    gradient_checkpointing : bool
        Recompute the transformer layers' activations in the backward pass
        instead of storing them (Hugging Face's ``activation_checkpointing_enable``):
        less memory when fine-tuning, about one more forward of time. It acts in
        train mode only (Hugging Face's rule), so not in attacks, which run the
        model in eval mode.

    Example
    -------
    >>> import tempfile
    >>> from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2
    >>> folder = random_encoder_folder("wav2vec2", tempfile.mkdtemp(), **TINY_ENCODER)
    >>> encoder = Wav2Vec2(folder, save_path=folder, output_all_hiddens=True)
    >>> model = SelfSupervisedClassifier(encoder, n_classes=7, freeze_encoder=True)
    >>> wavs = (0.1 * torch.randn(2, 8000)).requires_grad_()
    >>> logits, embedding = model(wavs)
    >>> logits.shape, embedding.shape
    (torch.Size([2, 7]), torch.Size([2, 32]))
    >>> (grad,) = torch.autograd.grad(logits.sum(), wavs)  # frozen, yet the waveform has a gradient
    >>> bool(grad.abs().sum() > 0)
    True
    """

    input_domain = "waveform"

    def __init__(
        self,
        encoder,
        n_classes,
        sample_rate=None,
        n_fft=None,
        hop_length=None,
        layer=None,
        pooling="mean",
        freeze_encoder=False,
        gradient_checkpointing=False,
    ):
        super().__init__()
        check_audio_settings(encoder, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length)
        if getattr(encoder, "freeze", False):
            raise ValueError(
                "encoder: freeze: True runs the encoder under torch.no_grad(), so no attack on the waveform gets a "
                "gradient; set freeze: False in the encoder and freeze_encoder: True in the model instead."
            )
        if not getattr(encoder, "output_all_hiddens", False):
            raise ValueError("encoder: output_all_hiddens must be True: the model chooses the layer (its 'layer').")
        check_choice("pooling", pooling, POOLINGS)
        n_states = encoder.config.num_hidden_layers + 1
        if layer is not None and not -n_states <= layer < n_states:
            raise ValueError(f"layer must be None (a weighted sum) or a hidden state in [0, {n_states}), got {layer!r}")
        self.encoder, self.layer, self.freeze_encoder = encoder, layer, bool(freeze_encoder)
        dim = encoder.config.hidden_size
        # Zeros: every layer weighs the same at the start, as SpeechBrain's WeightedSSLModel.
        self.layer_weights = torch.nn.Parameter(torch.zeros(n_states)) if layer is None else None
        if pooling == "mean":
            # Written out: SpeechBrain's StatisticsPooling (its IEMOCAP recipe's) adds random noise of up to 9e-5
            # to the mean at every forward, in eval mode too, so an attack and the pass that scores its output
            # would see two different models, each drawing from torch's global generator.
            self.pooling, pooled = None, dim
        else:
            self.pooling, pooled = AttentiveStatisticsPooling(dim, attention_channels=dim), 2 * dim
        self.embedding_dim = pooled
        self.classifier = torch.nn.Linear(pooled, n_classes)
        # LayerDrop (Fan et al., 2020) skips random transformer layers in training, and their hidden states
        # with them: layer k would not be layer k, and the layer weights would not line up. Off.
        self.encoder.model.config.layerdrop = 0.0
        # The embedding that replaces frames masked by SpecAugment, which SpeechBrain's wrapper turns off
        # (apply_spec_augment): no forward uses it, and DDP would wait for its gradient at every step.
        mask_embedding = getattr(self.encoder.model, "masked_spec_embed", None)  # absent where masking is off
        if mask_embedding is not None and not self.encoder.model.config.apply_spec_augment:
            mask_embedding.requires_grad_(False)
        # Hugging Face's convolutions set requires_grad on their input in train mode (for reentrant gradient
        # checkpointing), which raises on a waveform that already requires grad: a train-mode attack's. Off:
        # the checkpointing here is non-reentrant, and needs no such input.
        self.encoder.model.feature_extractor._requires_grad = False
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
        if gradient_checkpointing:
            # Non-reentrant: the reentrant form gives no gradient where the input needs none.
            self.encoder.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.train()

    def train(self, mode=True):
        """As ``Module.train``, but a frozen encoder stays in eval mode (no dropout on features not trained)."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def frames(self, wavs):
        """The chosen layer's frames ``[batch, frames, dim]`` (or the weighted sum of all layers)."""
        states = self.encoder(wavs)  # [layers, batch, frames, dim]
        if self.layer is not None:
            return states[self.layer]
        weights = F.softmax(self.layer_weights, dim=0)
        return torch.einsum("l,lbtd->btd", weights, states)

    def forward(self, wavs):
        frames = self.frames(wavs)
        if self.pooling is None:
            embedding = frames.mean(dim=1)
        else:  # SpeechBrain's attentive pooling works on [batch, channels, frames]
            embedding = self.pooling(frames.transpose(1, 2)).squeeze(-1)
        return self.classifier(embedding), embedding


def encoder_audio_settings(encoder):
    """The encoder's own ``sample_rate``, ``n_fft`` (receptive field of its convolutions) and ``hop_length``.

    Example
    -------
    >>> from types import SimpleNamespace
    >>> base = SimpleNamespace(conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
    >>> encoder = SimpleNamespace(config=base, feature_extractor=SimpleNamespace(sampling_rate=16000))
    >>> encoder_audio_settings(encoder)
    {'sample_rate': 16000, 'n_fft': 400, 'hop_length': 320}
    """
    field = 1
    for kernel, stride in reversed(list(zip(encoder.config.conv_kernel, encoder.config.conv_stride))):
        field = (field - 1) * stride + kernel
    hop = 1
    for stride in encoder.config.conv_stride:
        hop *= stride
    return {"sample_rate": encoder.feature_extractor.sampling_rate, "n_fft": field, "hop_length": hop}


def check_audio_settings(encoder, **settings):
    """Raises a ``ValueError`` naming each yaml key that disagrees with the encoder (None: not checked)."""
    own = encoder_audio_settings(encoder)
    wrong = [
        f"{key} is {value}, the encoder's is {own[key]}"
        for key, value in settings.items()
        if value is not None and value != own[key]
    ]
    if wrong:
        raise ValueError(f"The yaml's audio settings do not fit the encoder: {'; '.join(wrong)}.")


# The tiny sizes of the offline tests and of bench/ssl_attack_step.py: 2 transformer layers of width 32, and a
# 2-layer convolutional front end with the base models' receptive field and hop (400 and 320 samples at 16 kHz).
TINY_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": (16, 16),
    "conv_kernel": (10, 40),  # a receptive field of 400 samples, as the base models'
    "conv_stride": (10, 32),
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 4,
}


def random_encoder_folder(family, folder, seed=0, **config):
    """Saves a randomly initialised encoder of ``family`` as a Hugging Face folder that SpeechBrain's wrappers load.

    For tests and speed measurements, offline: no weights are downloaded. ``config`` overrides the
    family's Hugging Face configuration, whose defaults are the base models' sizes
    (``facebook/wav2vec2-base``, ``facebook/hubert-base-ls960``, ``microsoft/wavlm-base-plus``:
    12 layers of width 768). The folder gets the model (``model.safetensors``), its ``config.json``
    and the waveform normalisation the wrappers read (``preprocessor_config.json``). Returns ``folder``.
    """
    import transformers  # the ssl extra: only self-supervised models need it

    check_choice("family", family, tuple(ENCODER_CLASSES))
    config_class, model_class = (getattr(transformers, name) for name in ENCODER_CLASSES[family])
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(seed)
        model_class(config_class(**config)).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(folder)
    return folder

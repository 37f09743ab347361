"""The pretrained interface: classify emotions with, and attack, a model a recipe exported.

``EmotionRecognizer.from_hparams`` (or SpeechBrain's ``foreign_class``) loads the
folder ``ser_adv_brain.interface.export_interface`` wrote, offline, from wherever
it has been copied or uploaded.
"""

import logging
import os

import soundfile
import torch
import torch.nn.functional as F
from speechbrain.dataio import audio_io
from speechbrain.inference.interfaces import Pretrained
from speechbrain.utils.data_utils import split_path
from speechbrain.utils.fetching import fetch

from ser_adv_brain.audio.loading import fix_length, frames_to_samples, resample, to_mono
from ser_adv_brain.audio.pcm import snr_db
from ser_adv_brain.data.validation import audio_fault, reader_error, signal_facts
from ser_adv_brain.evaluation.smoothing import ABSTAIN, ABSTAIN_LABEL
from ser_adv_brain.models import WaveformClassifier, takes_waveform

logger = logging.getLogger(__name__)

REFUSAL = "training refuses such audio, so the model's answer on it would mean nothing"


class UnusableAudioError(ValueError):
    """Audio the interface refuses because training refuses it (see ``EmotionRecognizer``).

    Arguments
    ---------
    faults : dict
        Each bad input (a file's path, or a batch row's index) -> its
        ``ser_adv_brain.data.validation.AudioFault``.
    batch_size : int or None
        The rows in the batch, when the inputs are batch rows.
    """

    def __init__(self, faults, batch_size=None):
        self.faults = dict(faults)
        self.batch_size = batch_size
        super().__init__(str(self))

    @property
    def rows(self):
        """The indices of the bad rows of a batch, in order (empty for a file)."""
        return sorted(key for key in self.faults if isinstance(key, int))

    def __str__(self):
        if self.batch_size is None:
            return "; ".join(f"{where} {fault}" for where, fault in self.faults.items()) + f": {REFUSAL}."
        listing = "; ".join(f"row {row} {self.faults[row]}" for row in self.rows)
        return (
            f"Unusable rows {self.rows} in a batch of {self.batch_size} ({listing}): {REFUSAL}. "
            "Leave them out and classify the others."
        )


class EmotionRecognizer(Pretrained):
    """Speech emotion recognition with a CNN-4, VGG-16, ResNet-50 or self-supervised encoder trained by this toolkit.

    A waveform goes through the Brain's evaluation pipeline: mono, the
    model's sample rate, ``n_frames`` long (centred crop of long clips,
    tiling of short ones), log-Mel, per-bin z-score, model (or, for a model
    that takes the waveform, the model at once). So predictions
    equal those of the recipe's evaluation on the same file.

    Audio longer than ``max_audio_seconds`` is refused before it is decoded
    or featurised, rather than exhausting memory (the model only looks at
    ``n_frames`` of it anyway); ``from_hparams(..., overrides={"max_audio_seconds": 60})``
    changes the limit.

    The interface refuses what training refuses, through the same check
    (``ser_adv_brain.data.validation.audio_fault``): a missing file raises
    ``FileNotFoundError``; an unreadable file, and a file or batch row with NaN
    or Inf samples, all zeros (digital silence), or fewer samples than one
    analysis window (``n_fft`` at the model's rate) raise ``UnusableAudioError``
    naming the file, or listing the bad rows of a batch (``error.rows``). These
    are errors, not warnings with a result: the model never saw such input, so
    its answer (confident "guilt" for NaN, "sadness" for silence) would be
    invented, and a warning would let it flow into results unnoticed.

    Expected hparams: ``sample_rate``, ``n_fft``, ``hop_length``, ``n_frames``, ``n_classes``,
    ``max_audio_seconds``, ``label_encoder`` and ``attack`` (used by ``attack_batch``); modules:
    ``compute_features``, ``normalizer`` (not for a model that takes the waveform), ``model``.

    With a fake-data detector (exported by ``ser-adv detector``:
    a ``detector`` module and a ``detector_threshold`` hparam), every
    classification also returns ``is_adversarial``, the detector's probability
    that the input is fake, ``[batch]``: ``classify_*`` return
    ``(out_prob, score, index, text_lab, is_adversarial)`` and ``attack_batch``
    adds it after the predictions. ``is_adversarial > hparams.detector_threshold``
    flags an input (the threshold flags ``false_positive_rate`` of real dev
    utterances). Without a detector everything is as it was: four outputs.

    With randomised smoothing (a run of a ``cnn4_smoothing_*`` yaml file: a
    ``smoothing`` hparam, ``ser_adv_brain.evaluation.smoothing.RandomizedSmoothing``,
    with its sigma, n0, n and alpha), ``classify_file(path, smoothing=True)``
    is Cohen et al.'s PREDICT: a vote of the model on ``n`` noisy copies, which
    may abstain (index ``-1``, label ``"abstain"``); ``certify_file`` (or
    ``certify_batch``) is CERTIFY: the class or an abstention, and the L2 radius
    within which no perturbation changes the smoothed classifier's answer
    (with probability ``1 - alpha``), also as the signal's SNR in dB.

    Example
    -------
    >>> recognizer = EmotionRecognizer.from_hparams(
    ...     source="results/cnn4_vanilla/1234/interface", savedir="pretrained/cnn4_vanilla"
    ... )  # doctest: +SKIP
    >>> out_prob, score, index, label = recognizer.classify_file("speech.wav")  # doctest: +SKIP
    >>> index, label, radius, snr_db = recognizer.certify_file("speech.wav")  # doctest: +SKIP
    >>> fake_feats, fake_prob, _, _, fake_label = recognizer.attack_batch(
    ...     recognizer.load_audio("speech.wav"), eps=0.05
    ... )  # doctest: +SKIP
    """

    HPARAMS_NEEDED = [
        "sample_rate",
        "n_fft",
        "hop_length",
        "n_frames",
        "n_classes",
        "max_audio_seconds",
        "label_encoder",
        "attack",
    ]
    MODULES_NEEDED = ["model"]  # and the feature modules, for a model on log-Mel features (checked below)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.takes_waveform:
            missing = [name for name in ("compute_features", "normalizer") if name not in self.mods]
            if missing:
                raise ValueError(
                    f"The interface's model takes log-Mel features, but hyperparams.yaml has no {missing}."
                )
            if not self.mods.normalizer.fitted:
                raise ValueError("The feature normalizer has no statistics: was normalizer.ckpt loaded?")
        self.hparams.label_encoder.expect_len(self.hparams.n_classes)
        self.hparams.attack.set_class_names(self.hparams.label_encoder)  # resolves a targeted attack's emotion

    def load_audio(self, path, savedir=None):
        """Reads an audio file of any rate and channel count as a mono signal at the model's rate.

        ``path`` is a local file, or else anything SpeechBrain's ``fetch``
        resolves (a URL, a Hugging Face ``repo/file``). Raises
        ``FileNotFoundError`` if there is no such file, ``UnusableAudioError``
        if training would refuse it (see the class docstring).
        """
        path = self.locate(path, savedir)
        try:
            info = soundfile.info(path)  # the header only: nothing is decoded yet
        except Exception as error:  # whatever the reader raises, the file is named
            raise UnusableAudioError({path: self.audio_fault({"error": reader_error(error)})}) from error
        self.check_duration(info.frames / info.samplerate, path)
        try:
            wav, rate = audio_io.load(path, channels_first=False, dtype=torch.float32)
        except Exception as error:
            raise UnusableAudioError({path: self.audio_fault({"error": reader_error(error)})}) from error
        fault = self.audio_fault(signal_facts(wav, rate))
        if fault:
            raise UnusableAudioError({path: fault})
        return resample(to_mono(wav), rate, self.hparams.sample_rate).to(self.device)

    def audio_fault(self, facts):
        """Training's verdict (``validation.audio_fault``) on audio with these ``signal_facts`` at this model's rate."""
        return audio_fault(facts, self.hparams.sample_rate, self.hparams.n_fft)

    @staticmethod
    def locate(path, savedir=None):
        """The local file ``path`` names, fetched first if it is a URL or a Hugging Face ``repo/file``."""
        path = str(path)
        if os.path.isfile(path):
            return path
        source, filename = split_path(path)
        if "://" not in path and (os.path.isabs(path) or os.path.isdir(source)):
            raise FileNotFoundError(f"{path}: no such audio file.")
        try:
            return str(fetch(filename, source=source, savedir=savedir))
        except Exception as error:  # offline, no such repo or URL: all mean the file is not there
            raise FileNotFoundError(
                f"{path} is not a local audio file, and fetching it failed ({reader_error(error)})."
            ) from error

    def check_duration(self, seconds, what):
        """Raises a ``ValueError`` if ``seconds`` of audio exceed ``max_audio_seconds``."""
        limit = self.hparams.max_audio_seconds
        if seconds > limit:
            raise ValueError(
                f"{what} is {seconds:.1f} s long, over this interface's limit of {limit} s "
                f"(max_audio_seconds): cut it into shorter segments, or load the interface with "
                f"overrides={{'max_audio_seconds': ...}} if you have the memory."
            )

    def prepare_batch(self, wavs, wav_lens=None, sample_rate=None):
        """Brings every signal of a batch to the model's rate and input length.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, time]``, ``[batch, time, channels]`` or one ``[time]`` signal.
        wav_lens : torch.Tensor or None
            Relative lengths (1.0 = the whole row), as in SpeechBrain's padded
            batches; the padding after each signal is ignored.
        sample_rate : int or None
            The rate of ``wavs``; None means the model's rate.

        Returns
        -------
        torch.Tensor
            ``[batch, samples]``, exactly the length the model was trained on.

        Raises
        ------
        UnusableAudioError
            Listing every row that training would refuse (``error.rows``).
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        num_samples = frames_to_samples(self.hparams.n_frames, self.hparams.hop_length)
        rate = sample_rate or self.hparams.sample_rate
        self.check_duration(wavs.shape[1] / rate, f"A batch of {wavs.shape[0]} signal(s) of {wavs.shape[1]} samples")
        signals, faults = [], {}
        for row, (wav, rel_length) in enumerate(zip(wavs, wav_lens.tolist())):
            wav = wav[: round(rel_length * wav.shape[0])].float()
            fault = self.audio_fault(signal_facts(wav, rate))
            if fault:
                faults[row] = fault
                continue
            signals.append(fix_length(resample(to_mono(wav), rate, self.hparams.sample_rate), num_samples))
        if faults:
            raise UnusableAudioError(faults, batch_size=wavs.shape[0])
        return torch.stack(signals).to(self.device)

    @property
    def takes_waveform(self):
        """Whether the model takes the waveform itself (a self-supervised encoder's; ``models.takes_waveform``)."""
        return takes_waveform(self.mods.model)

    def compute_features(self, wavs):
        """Prepared waveforms ``[batch, samples]`` -> the model's input: normalised log-Mel
        ``[batch, frames, n_mels]``, or the waveforms themselves for a model that takes them."""
        if self.takes_waveform:
            return wavs
        with torch.no_grad():
            return self.mods.normalizer(self.mods.compute_features(wavs))

    def classify_features(self, feats):
        """Predictions on normalised features, as ``(out_prob, score, index, text_lab)``.

        ``out_prob`` holds the log posterior probabilities (``[batch, n_classes]``),
        ``score`` the best one, ``index`` its class and ``text_lab`` its emotion,
        as in SpeechBrain's ``EncoderClassifier``; with a detector, a fifth
        output ``is_adversarial`` (see the class docstring).
        """
        with torch.no_grad(), self.inference_ctx:
            logits, embedding = self.mods.model(feats)
        out_prob = F.log_softmax(logits.float(), dim=-1)
        score, index = out_prob.max(dim=-1)
        outputs = (out_prob, score, index, self.hparams.label_encoder.decode_torch(index))
        if "detector" not in self.mods:
            return outputs
        with torch.no_grad():
            return (*outputs, torch.sigmoid(self.mods.detector(embedding)))

    def classify_batch(self, wavs, wav_lens=None, sample_rate=None, smoothing=False, keys=None):
        """Classifies a batch of waveforms (see ``prepare_batch`` for the arguments).

        With ``smoothing``, the smoothed classifier's vote (``smoothed_predictions``); ``keys``
        (one per row) then seed each row's noise.

        Returns
        -------
        out_prob, score, index, text_lab (, is_adversarial)
            See ``classify_features``.

        Raises
        ------
        UnusableAudioError
            If any row is audio that training refuses; ``error.rows`` lists them all.
        """
        wavs = self.prepare_batch(wavs, wav_lens, sample_rate)
        if smoothing:
            return self.smoothed_predictions(wavs, keys)
        return self.classify_features(self.compute_features(wavs))

    def classify_file(self, path, savedir=None, smoothing=False):
        """Classifies one audio file of any sample rate, channel count and length.

        With ``smoothing``, the smoothed classifier's vote, which may abstain
        (``smoothed_predictions``), its noise keyed by ``path``: the same file
        gets the same answer. Raises ``FileNotFoundError`` or ``UnusableAudioError``
        naming the file for audio that training refuses (see the class docstring).
        """
        return self.classify_batch(self.load_audio(path, savedir), smoothing=smoothing, keys=[str(path)])

    @property
    def smoothing(self):
        """The exported ``RandomizedSmoothing``; a ``ValueError`` if the run had none."""
        smoothing = getattr(self.hparams, "smoothing", None)
        if smoothing is None:
            raise ValueError(
                "This interface has no randomised smoothing (no 'smoothing' in its hyperparams.yaml): its model "
                "was not trained on noisy inputs. Export a run of a cnn4_smoothing_* yaml file."
            )
        return smoothing

    def smoothed_input(self, wavs):
        """The smoothing's base classifier and its input for prepared waveforms: the model on the features,
        or the whole pipeline on the samples."""
        if self.smoothing.domain == "features":
            return self.mods.model, self.compute_features(wavs)
        return WaveformClassifier(self.mods.compute_features, self.mods.normalizer, self.mods.model), wavs

    def smoothed_predictions(self, wavs, keys=None):
        """Cohen et al.'s PREDICT on prepared waveforms, as ``(out_prob, score, index, text_lab)``.

        ``out_prob`` holds the log share of the ``n`` noisy copies' votes for
        each class, ``score`` the top one; ``index`` is ``-1`` and ``text_lab``
        ``"abstain"`` where a binomial test cannot tell the top two classes
        apart at level ``alpha``. With a detector, its score on the input
        itself comes fifth.
        """
        base, inputs = self.smoothed_input(wavs)
        with self.inference_ctx:
            index, counts = self.smoothing.predict(base, inputs, keys)
        out_prob = torch.log(counts.double() / counts.sum(dim=1, keepdim=True)).to(self.device)
        score = out_prob.max(dim=-1).values
        outputs = (out_prob, score, index.to(self.device), self.decode_or_abstain(index))
        if "detector" not in self.mods:
            return outputs
        return (*outputs, self.classify_features(self.compute_features(wavs))[4])

    def decode_or_abstain(self, index):
        """The emotions of class indices, ``"abstain"`` for ``-1``."""
        return [ABSTAIN_LABEL if i == ABSTAIN else self.hparams.label_encoder.ind2lab[i] for i in index.tolist()]

    def certify_batch(self, wavs, wav_lens=None, sample_rate=None, keys=None):
        """Cohen et al.'s CERTIFY on a batch (see ``prepare_batch`` for the arguments; ``keys``, one per
        row, seed each row's noise).

        Returns
        -------
        index : torch.Tensor
            ``[batch]`` the certified classes, ``-1`` where it abstains.
        text_lab : list of str
            Their emotions, ``"abstain"`` for ``-1``.
        radius : torch.Tensor
            ``[batch]`` the certified L2 radius (0 where it abstains), on the samples in full-scale
            units (the signal at the model's rate and input length, see ``prepare_batch``), or on the
            z-scored features for a smoothing on the features.
        snr_db : torch.Tensor
            ``[batch]`` the radius as the signal's SNR, ``20 log10(|x|_2 / radius)`` (inf where it
            abstains): the certificate covers every perturbation of a higher SNR. NaN for a
            smoothing on the features, whose radius has no dB value.
        """
        wavs = self.prepare_batch(wavs, wav_lens, sample_rate)
        base, inputs = self.smoothed_input(wavs)
        with self.inference_ctx:
            certificate = self.smoothing.certify(base, inputs, keys)
        if self.smoothing.domain == "waveform":
            snr = 20 * torch.log10(wavs.detach().double().norm(dim=1).cpu() / certificate.radius)
        else:
            snr = torch.full_like(certificate.radius, float("nan"))
        return certificate.prediction, self.decode_or_abstain(certificate.prediction), certificate.radius, snr

    def certify_file(self, path, savedir=None):
        """``certify_batch`` on one audio file (any rate, channels, length), its noise keyed by ``path``."""
        return self.certify_batch(self.load_audio(path, savedir), keys=[str(path)])

    def attack_batch(self, wavs, wav_lens=None, eps=None, targets=None, sample_rate=None):
        """The exported attack's fake features of a batch (FGSM, PGD, ...), and the model's predictions on them.

        Arguments
        ---------
        wavs, wav_lens, sample_rate :
            See ``prepare_batch``.
        eps : float or None
            The attack's budget; None uses the exported one (the training eps).
        targets : list of str, torch.Tensor or None
            True emotions (labels or indices): needed only when the exported
            attack attacks the true label (``label_source: target``).

        Returns
        -------
        fake_feats : torch.Tensor
            The adversarial features, ``[batch, frames, n_mels]`` (the adversarial waveforms
            ``[batch, samples]``, for a model that takes the waveform).
        out_prob, score, index, text_lab (, is_adversarial)
            The predictions on them (see ``classify_features``).
        """
        attack = self.hparams.attack
        if targets is None and attack.label_source == "target":
            raise ValueError(f"This interface's attack {attack!r} attacks the true labels: pass targets=[emotions].")
        if targets is not None and not torch.is_tensor(targets):
            targets = self.hparams.label_encoder.encode_sequence_torch(list(targets))
        if targets is not None:
            targets = targets.to(self.device)
        feats = self.compute_features(self.prepare_batch(wavs, wav_lens, sample_rate))
        fake_feats = attack.perturb(self.mods.model, feats, targets, eps=eps)
        return (fake_feats, *self.classify_features(fake_feats))

    def attack_file(self, path, attack, out_wav, eps=None, target=None):
        """Writes an adversarial version of an audio file, to listen to, and says what it did to the model.

        The file holds what the model hears: the signal at the model's rate
        and input length (see ``prepare_batch``) plus the perturbation, as
        16-bit PCM, which is also what the returned prediction is made on.

        Arguments
        ---------
        path : str
            Any audio file ``load_audio`` reads.
        attack : ser_adv_brain.attacks.Attack
            A waveform-domain attack (``attack.domain == "waveform"``).
        out_wav : str
            Where the adversarial wav goes.
        eps : float or None
            The attack's budget in its norm's unit (an SNR in dB for ``norm="snr"``);
            None uses the attack's own.
        target : str or None
            The true emotion, for an attack on the true label; None attacks
            the model's own prediction.

        Returns
        -------
        dict
            ``before`` and ``after`` (the predicted emotions), ``snr_db`` (the
            realised SNR of the file against the clean signal).
        """
        if getattr(attack, "domain", None) != "waveform":
            raise ValueError(
                f"attack_file needs a waveform-domain attack to write audio; {attack!r} perturbs the "
                f"{getattr(attack, 'domain', None)}."
            )
        wav = self.prepare_batch(self.load_audio(path))
        before = self.classify_batch(wav)
        targets = (
            before[2] if target is None else self.hparams.label_encoder.encode_sequence_torch([target]).to(self.device)
        )
        model = (
            self.mods.model
            if self.takes_waveform
            else WaveformClassifier(self.mods.compute_features, self.mods.normalizer, self.mods.model)
        )
        # A waveform attack returns audio on the 16-bit PCM grid: the file holds exactly what is scored.
        adversarial = attack.perturb(model, wav, targets, eps=eps).detach()
        soundfile.write(out_wav, adversarial[0].cpu().numpy(), self.hparams.sample_rate, subtype="PCM_16")
        after = self.classify_batch(adversarial)
        return {"before": before[3][0], "after": after[3][0], "snr_db": float(snr_db(wav, adversarial)[0])}

    def forward(self, wavs, wav_lens=None):
        """Classifies a batch: see ``classify_batch``."""
        return self.classify_batch(wavs, wav_lens)

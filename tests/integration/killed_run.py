"""Shared by the reliability tests: a tiny corpus, tiny runs of the real recipe, and their outcomes.

Run as a script, it runs the recipe of the yaml file (DEMoS, or EmoDB for the
files under ``recipes/EmoDB``) and kills itself with SIGKILL at a chosen point,
as an out-of-memory killer or a cluster scheduler would:

    python tests/helpers_reliability.py after:4 hparams/cnn4_vanilla.yaml --output_folder=...
    python tests/helpers_reliability.py during:3 hparams/cnn4_vanilla.yaml --output_folder=...

``after:N``: right after the process's N-th intra-epoch checkpoint is
complete; ``during:N``: while the N-th one is being written, just after
its model file; ``epoch_save:N``: while the N-th end-of-epoch checkpoint is
being written, just after its model file; ``valid:N``: while epoch N is
validated, at its first dev batch; ``export:1``: while the pretrained
interface is being exported, just after its model file.
"""

import os
import pathlib
import runpy
import signal
import subprocess
import sys

import pytest
import torch
from conftest import save_hyperparams
from hyperpyyaml import load_hyperpyyaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN = ROOT / "recipes" / "DEMoS" / "train.py"
HPARAMS = ROOT / "hparams"
EMODB_SAMPLES = ROOT / "tests" / "samples" / "emodb" / "wav"  # 42 real EmoDB clips, 6 speakers
sys.path.insert(0, str(TRAIN.parent))
from demos_prepare import prepare_demos  # noqa: E402

from ser_adv_brain.synthetic import generate_synthetic_demos  # noqa: E402

# 4 speakers (2 train, 1 dev, 1 test), one utterance per emotion: 14 training clips.
CORPUS = dict(n_speakers=4, utterances_per_emotion=1, neutral_per_speaker=0, min_duration=0.4, max_duration=0.8)
# Sizes only: the code paths are those of the full recipe.
TINY = dict(base_channels=2, n_frames=20, batch_size=4, number_of_epochs=3, seed=7)


def tiny(yaml):
    """The tiny sizes for ``yaml``; adversarial training starts after 3 clean steps."""
    return TINY if yaml.endswith("_single.yaml") else {**TINY, "warmup_steps": 3}
EVERY_STEP = dict(ckpt_interval_minutes=0, ckpt_interval_steps=1)  # an intra-epoch checkpoint after each step


def make_corpus(folder, seed=1):
    """Writes the tiny synthetic DEMoS-shaped corpus (skipped if already there)."""
    return generate_synthetic_demos(str(folder), seed=seed, **CORPUS)


def override_args(**overrides):
    """``--key=value`` arguments for train.py."""
    return [f"--{key}={value}" for key, value in overrides.items()]


def subprocess_env():
    """This checkout first on the path; one thread, so the shared cores are not oversubscribed."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def recipe_files(yaml):
    """``(train.py, yaml path)``: a bare name is a DEMoS yaml of ``hparams/``; ``recipes/EmoDB/...`` an EmoDB one."""
    path = ROOT / yaml if "/" in yaml else HPARAMS / yaml
    return path.parents[1] / "train.py" if "/" in yaml else TRAIN, path


def train_command(output_folder, data_folder, yaml="cnn4_vanilla.yaml", kill=None, **overrides):
    """The command line of a tiny training run (``kill``: a ``when:N`` spec, see the module docstring)."""
    script, hparams = recipe_files(yaml)
    script = [__file__, kill] if kill else [str(script)]
    args = override_args(**{**tiny(yaml), "output_folder": output_folder, "data_folder": data_folder, **overrides})
    return [sys.executable, *script, str(hparams), *args, "--noprogressbar"]


def run_training(output_folder, data_folder, **kwargs):
    """Runs a tiny training in a subprocess; returns the ``CompletedProcess``."""
    return subprocess.run(
        train_command(output_folder, data_folder, **kwargs),
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def completed_run(folder, data_folder, **kwargs):
    """The output folder of a tiny run that completed, run once per pytest session and folder."""
    folder = pathlib.Path(folder)
    if not (folder / "robustness.csv").exists():
        result = run_training(folder, data_folder, **kwargs)
        assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture(scope="session")
def shared_corpus(tmp_path_factory):
    """The tiny corpus, made once per session."""
    return make_corpus(tmp_path_factory.getbasetemp() / "reliability_corpus")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, shared_corpus):
    """An uninterrupted tiny run with a checkpoint after each step, run once per session."""
    return completed_run(tmp_path_factory.getbasetemp() / "reliability_reference", shared_corpus, **EVERY_STEP)


def make_lazy_modules_inspectable():
    """Lets hypothesis's pytest plugin collect tests in a process that imported SpeechBrain.

    SpeechBrain puts lazy modules in ``sys.modules`` whose attribute access
    raises ``ImportError`` when an optional dependency (k2) is missing; the
    plugin reads every module's ``__file__`` while collecting, and crashes.
    An explicit ``__file__ = None`` on the unloaded ones keeps it out of
    their way. (It would belong in a ``conftest.py``.)
    """
    from speechbrain.utils.importutils import LazyModule

    for module in list(sys.modules.values()):
        if isinstance(module, LazyModule) and module.lazy_module is None:
            module.__file__ = None


def checkpoints(save_folder):
    """Complete checkpoint folders, oldest first."""
    return sorted(path for path in pathlib.Path(save_folder).glob("CKPT+*") if (path / "CKPT.yaml").exists())


def run_outcome(folder):
    """What two equivalent runs must share: the logs, the robustness table, the final parameters."""
    folder = pathlib.Path(folder)
    latest = checkpoints(folder / "save")[-1]
    return {
        "train_log": (folder / "train_log.txt").read_text(),
        "robustness": (folder / "robustness.csv").read_text(),
        "parameters": {
            name: torch.load(latest / f"{name}.ckpt", weights_only=True)
            for name in ("model", "normalizer", "optimizer")
        },
    }


def assert_same_outcome(first, second):
    assert first["train_log"] == second["train_log"]
    assert first["robustness"] == second["robustness"]
    for name in ("model", "normalizer"):
        state_a, state_b = first["parameters"][name], second["parameters"][name]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), f"{name}.{key} differs"
    assert repr(first["parameters"]["optimizer"]) == repr(second["parameters"]["optimizer"])


def load_hparams(output_folder, data_folder=None, yaml="cnn4_vanilla.yaml", prepare=True, **overrides):
    """The recipe's hparams at the tiny size, loaded in this process; manifests prepared if asked."""
    overrides = {**tiny(yaml), "output_folder": str(output_folder), **overrides}
    with open(HPARAMS / yaml, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    save_hyperparams(str(HPARAMS / yaml), str(output_folder), overrides)
    if prepare:
        prepare_demos(str(data_folder), str(output_folder), seed=hparams["seed"])
    return hparams


def _run_and_kill(spec, argv):
    """Runs train.py with ``argv`` and SIGKILLs this process at ``spec`` (see the module docstring)."""
    import shutil

    import speechbrain.core
    import speechbrain.utils.checkpoints

    when, n = spec.split(":")
    n, count, epoch_saves = int(n), 0, 0
    brain_save, torch_save, copyfile = speechbrain.core.Brain._save_intra_epoch_ckpt, torch.save, shutil.copyfile
    evaluate_batch = speechbrain.core.Brain.evaluate_batch
    write_meta = speechbrain.utils.checkpoints.Checkpointer._save_checkpoint_metafile

    def save_intra_epoch_checkpoint(self):
        nonlocal count
        count += 1
        brain_save(self)
        if when == "after" and count == n:
            os.kill(os.getpid(), signal.SIGKILL)

    def save_meta(self, fpath, meta_to_include=None, end_of_epoch=True):
        nonlocal epoch_saves
        epoch_saves += bool(end_of_epoch)  # SpeechBrain writes a checkpoint's meta file first
        return write_meta(self, fpath, meta_to_include, end_of_epoch)

    def save(obj, path, *args, **kwargs):
        torch_save(obj, path, *args, **kwargs)
        if str(path).endswith("model.ckpt") and (
            (when == "during" and count == n) or (when == "epoch_save" and epoch_saves == n)
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    def evaluate_dev_batch(self, batch, stage):
        if when == "valid" and stage == speechbrain.Stage.VALID and self.hparams.epoch_counter.current == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return evaluate_batch(self, batch, stage)

    def copy(source, target, *args, **kwargs):
        copyfile(source, target, *args, **kwargs)
        if when == "export" and pathlib.Path(target).match("interface/model.ckpt"):
            os.kill(os.getpid(), signal.SIGKILL)

    speechbrain.core.Brain._save_intra_epoch_ckpt = save_intra_epoch_checkpoint
    speechbrain.utils.checkpoints.Checkpointer._save_checkpoint_metafile = save_meta
    speechbrain.core.Brain.evaluate_batch = evaluate_dev_batch
    torch.save = save
    shutil.copyfile = copy
    hparams = pathlib.Path(argv[0]).resolve()
    script = TRAIN if hparams.parent == HPARAMS else hparams.parents[1] / "train.py"
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(script.parent))
    runpy.run_path(str(script), run_name="__main__")


if __name__ == "__main__":
    _run_and_kill(sys.argv[1], sys.argv[2:])

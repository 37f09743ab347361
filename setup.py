"""Installs ser_adv_brain, adversarially robust speech emotion recognition on SpeechBrain."""

from setuptools import find_packages, setup

SSL = ["transformers==5.23.0"]

setup(
    name="ser_adv_brain",
    version="0.1.0",
    description=(
        "Adversarial attacks on, and adversarial training of, speech emotion "
        "recognition models (Ren et al., ICASSP 2020) as SpeechBrain recipes"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ser_adv_brain", "ser_adv_brain.*"]),
    package_data={"ser_adv_brain.evaluation.tiers": ["*.yaml"]},
    entry_points={"console_scripts": ["ser-adv = ser_adv_brain.commands.cli:main"]},
    python_requires=">=3.10",
    # Versions verified to work together: the CUDA build of torch is the one
    # PyPI's torchaudio links against (it needs libc10_cuda), and it runs on CPU.
    install_requires=[
        "torch==2.14.1",
        "torchaudio==2.11.0",
        "speechbrain==1.1.2",
        "hyperpyyaml==1.2.3",
        "librosa==0.11.0",
        "soundfile==0.14.0",
        "numpy>=1.26,<3",
        "scipy==1.17.1",  # randomised smoothing's binomial test and Clopper-Pearson bound (also SpeechBrain's)
        "matplotlib==3.11.2",  # the pictures every run draws (ser_adv_brain/reports/plots.py)
        "tabulate==0.10.0",  # the reports' markdown tables
        "tqdm==4.70.1",  # progress bars of the attack suite and the FGSM report
        "ruamel.yaml==0.18.17",  # the exported interface's yaml, comments and tags kept
        "PyYAML==6.0.3",  # reading yaml without running it (the sweep's keys, the model card)
        "huggingface_hub==2.4.0",  # the model card's metadata (ModelCardData, EvalResult)
        "pyroomacoustics==0.10.1",  # the over-the-air attack's simulated rooms (ser_adv_brain/audio/rooms.py)
    ],
    extras_require={
        # Self-supervised encoders (wav2vec 2.0, HuBERT, WavLM) through SpeechBrain's Hugging Face wrappers:
        # a large package that the log-Mel recipes do not need. The tests need it, so dev pulls it in.
        "ssl": SSL,
        "dev": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            "hypothesis==6.170.17",
            "import-linter==2.17",
            "ruff==0.17.6",
            *SSL,
        ],
    },
)

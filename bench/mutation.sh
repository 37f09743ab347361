#!/usr/bin/env bash
# Mutation testing of the core modules (issue 13); not part of CI. About an hour on 2 CPU cores.
#
#   python -m pip install mutmut==3.8.1   # once; not a dependency of the package or its tests
#   bash bench/mutation.sh
#
# mutmut copies the package and the tests into mutants/ (git-ignored), makes small changes to
# the code (a flipped operator, a changed constant) one at a time, and runs the tests that reach
# the changed function: a change no test notices "survives". setup.cfg's [mutmut] section names
# the modules and the tests (the fast unit tests and doctests of those modules). Mutated here:
# attacks, objectives, metrics, features, checkpoints and the benchmark's intervals whole; of audio.py
# only fix_length, of manifests.py only the speaker split (split_sizes, largest_remainder,
# speaker_independent_split).
# Afterwards `mutmut results` lists the survivors and `mutmut show NAME` shows one; the ones
# known to be equivalent (no test can tell them apart) are listed in docs/mutation.md.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
rm -rf mutants
log=$(mktemp)
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" \
  "ser_adv_brain.attacks*" "ser_adv_brain.objectives*" "ser_adv_brain.metrics*" \
  "ser_adv_brain.features*" "ser_adv_brain.training.checkpoints*" "ser_adv_brain.audio.loading.x_fix_length*" \
  "ser_adv_brain.data.manifests.x_split_sizes*" "ser_adv_brain.data.manifests.x_largest_remainder*" \
  "ser_adv_brain.data.manifests.x_speaker_independent_split*" "ser_adv_brain.evaluation.intervals*" > "$log" 2>&1 || { tail -40 "$log"; exit 1; }
mutmut results --all true | python bench/mutation_score.py

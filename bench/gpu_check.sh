#!/usr/bin/env bash
# GPU check (issues 3 and 4): the vanilla and similarity recipes on CUDA in bf16 and fp16,
# the CUDA-only tests, then step-cost ratios, samples/s and the robustness-curve speed-up
# of VGG-16 (and CNN-4) at the paper's full size. About 5 minutes on one H100.
#
#   bash bench/gpu_check.sh [results_folder]
#
# Needs the package's requirements importable (pip install -e . or PYTHONPATH).
set -uo pipefail
out=${1:-results/gpu_check}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
status=0
step() { echo "=== $*"; "$@" || { echo "FAILED ($?): $*"; status=1; }; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python -c "import torch, speechbrain; print('torch', torch.__version__, 'speechbrain', speechbrain.__version__, torch.cuda.get_device_name(0))"

corpus="$out/synthetic_demos"
for objective in vanilla similarity; do
  for precision in bf16 fp16; do
    run="$out/vgg16_${objective}_${precision}"
    data=()
    [ -f "$corpus/.complete" ] && data=(--data_folder="$corpus")
    start=$(date +%s)
    step python recipes/DEMoS/train.py "hparams/vgg16_${objective}.yaml" --device=cuda:0 \
      --precision="$precision" --eval_precision="$precision" --number_of_epochs=3 --warmup_steps=10 \
      --output_folder="$run" "${data[@]}" --noprogressbar
    echo "wall $(( $(date +%s) - start )) s for $run"
    [ -f "$corpus/.complete" ] || cp -r "$run/synthetic_demos" "$corpus" 2>/dev/null
    tail -n 2 "$run/train_log.txt"; cat "$run/robustness.md"
  done
done

step python -m pytest -q -p no:cacheprovider tests/test_brain.py tests/test_attacks.py
step python bench/step_cost.py --device cuda --precision bf16 --models vgg16,cnn4 --steps 15 --warmup 3
step python bench/step_cost.py --device cuda --precision fp32 --models vgg16 --steps 15 --warmup 3
step python bench/fgsm_curve_cost.py --device cuda --models vgg16,cnn4
exit $status

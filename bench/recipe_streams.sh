#!/usr/bin/env bash
# Runs stage-III arms of bench/ablate_pointcmt.py one after another in one
# process stream (one thread), each arm a "<variant spec>@<seed>" argument:
#   OMP_NUM_THREADS=1 bench/recipe_streams.sh runs/mn10_t12 6 baseline:plain=1@0 kd:recipe=kd@0
# Arg 2 is the student epochs. Results: <run>/ablation/results.jsonl; one log per arm in logs/.
set -euo pipefail
run=$1; epochs=$2; shift 2
mkdir -p logs
for arm in "$@"; do
  spec=${arm%@*}; seed=${arm##*@}; name=${spec%%:*}
  case $spec in *:) sep="";; *:*) sep=",";; *) sep=":";; esac
  python bench/ablate_pointcmt.py "$run" --no-progress --seed "$seed" \
    --variant "${spec}${sep}epochs=${epochs}" > "logs/$(basename "$run")_${name}_s${seed}.log" 2>&1
done

#!/usr/bin/env bash
# Submits the whole pipeline as one Slurm dependency chain:
#
#     stage0_array (FER_SHARDS tasks) -> stage0_merge -> stage1_embed -> stage2_train
#
#     scripts/slurm/submit.sh [--from stage0|merge|embed|train] [--to ...] [key=value ...]
#
# Settings (paths, partition, nodes, GPUs, shards, time limits) come from the environment or
# the file named by FER_ENV; scripts/slurm/defaults.sh lists them all. Trailing key=value
# config overrides go to every step (one config serves all stages). Prints one job id per line.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${FER_ROOT:=$(cd "$here/../.." && pwd)}"
# shellcheck source=defaults.sh
source "$here/defaults.sh"
export FER_SHARDS=${FER_SHARDS:-8}       # the array tasks read N from it

steps=(stage0 merge embed train)
from=stage0
to=train
while [[ $# -gt 0 ]]; do
    case "$1" in
        --from) from=$2; shift 2 ;;
        --to) to=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        --*) echo "submit.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
index_of() {
    local i
    for i in "${!steps[@]}"; do [[ "${steps[$i]}" == "$1" ]] && { echo "$i"; return; }; done
    echo "submit.sh: unknown step '$1' (one of: ${steps[*]})" >&2
    exit 2
}
first=$(index_of "$from") || exit 2
last=$(index_of "$to") || exit 2

(cd "$FER_ROOT" && mkdir -p "$FER_LOGS")       # log paths are relative to the jobs' --chdir
common=(--parsable --chdir="$FER_ROOT")
[[ -n "$FER_PARTITION" ]] && common+=(--partition="$FER_PARTITION")
[[ -n "$FER_ACCOUNT" ]] && common+=(--account="$FER_ACCOUNT")

dep=()
submit() {
    # submit <script> [sbatch options...] -- [script args...]; chains on the previous job
    local script=$1; shift
    local opts=()
    while [[ $1 != -- ]]; do opts+=("$1"); shift; done
    shift
    local out
    out=$(sbatch "${common[@]}" "${dep[@]}" "${opts[@]}" "$here/$script" "$@")
    local id=${out%%;*}                 # --parsable prints "id" or "id;cluster"
    echo "$id"
    dep=(--dependency=afterok:"$id")
}

gpu_opts=(--gpus-per-node="$FER_GPUS_PER_NODE" --ntasks-per-node=1 --cpus-per-task="$FER_CPUS_PER_NODE")
for ((i = first; i <= last; i++)); do
    case "${steps[$i]}" in
        stage0) submit stage0_array.sbatch --array=1-"$FER_SHARDS" --cpus-per-task="$FER_STAGE0_CPUS" \
                    --time="$FER_TIME_STAGE0" --output="$FER_LOGS/%x-%A_%a.out" -- "$@" ;;
        merge) submit stage0_merge.sbatch --output="$FER_LOGS/%x-%j.out" -- "$@" ;;
        embed) submit stage1_embed.sbatch --nodes="$FER_EMBED_NODES" "${gpu_opts[@]}" \
                    --time="$FER_TIME_EMBED" --output="$FER_LOGS/%x-%j.out" -- "$@" ;;
        train) submit stage2_train.sbatch --nodes="$FER_TRAIN_NODES" "${gpu_opts[@]}" \
                    --time="$FER_TIME_TRAIN" --output="$FER_LOGS/%x-%j.out" -- "$@" ;;
    esac
done

# Shared by the job scripts: settings, the working directory, and the torchrun launch line.
# shellcheck shell=bash
set -euo pipefail
# shellcheck source=defaults.sh
source "$FER_ROOT/scripts/slurm/defaults.sh"
cd "$FER_ROOT"

# `--config FILE` when FER_CONFIG is set, for every fer-pipeline command
FER_CONFIG_ARGS=()
if [[ -n "$FER_CONFIG" ]]; then
    FER_CONFIG_ARGS=(--config "$FER_CONFIG")
fi

fer() {
    # fer-pipeline through the environment's interpreter (no reliance on PATH)
    echo "+ $FER_PYTHON -m fer_pipeline $*" >&2
    "$FER_PYTHON" -m fer_pipeline "$@"
}

first_node() {
    if [[ -n "${SLURM_JOB_NODELIST:-}" ]]; then
        scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p
    else
        echo 127.0.0.1
    fi
}

fer_torchrun() {
    # One torchrun agent per node, FER_NPROC_PER_NODE ranks each, meeting through the c10d
    # rendezvous on the first node: RANK/WORLD_SIZE/LOCAL_RANK reach fer_pipeline.distributed,
    # which picks NCCL on GPUs and gloo on CPUs. Outside Slurm it runs on this machine alone.
    local nnodes=${SLURM_NNODES:-1}
    local nproc=${FER_NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
    local addr=${FER_MASTER_ADDR:-$(first_node)}
    local port=${FER_MASTER_PORT:-$((29500 + ${SLURM_JOB_ID:-0} % 1000))}
    local cmd=("$FER_PYTHON" -m torch.distributed.run
               --nnodes="$nnodes" --nproc_per_node="$nproc"
               --rdzv_backend=c10d --rdzv_endpoint="$addr:$port" --rdzv_id="${SLURM_JOB_ID:-local}"
               -m fer_pipeline "$@")
    echo "+ ${cmd[*]}" >&2
    if [[ -n "${SLURM_JOB_ID:-}" ]]; then
        # srun does not inherit --cpus-per-task from sbatch (Slurm >= 22.05): pass it on
        srun --nodes="$nnodes" --ntasks="$nnodes" --ntasks-per-node=1 --kill-on-bad-exit=1 \
            ${SLURM_CPUS_PER_TASK:+--cpus-per-task="$SLURM_CPUS_PER_TASK"} "${cmd[@]}"
    else
        "${cmd[@]}"
    fi
}

# Site settings for the Slurm scripts: every variable the job scripts and submit.sh read, with
# its default. Set them in the environment, or in a file named by FER_ENV (sourced first):
#
#     export FER_ENV=$HOME/fer-cluster.env      # e.g. FER_PARTITION=gpu FER_VIDEOS=/data/videos
#     scripts/slurm/submit.sh
#
# Paths must be on a filesystem every node sees; relative paths are relative to FER_ROOT.
# shellcheck shell=bash
if [[ -n "${FER_ENV:-}" ]]; then
    # shellcheck source=/dev/null
    source "$FER_ENV"
fi

# ---- code and environment
: "${FER_ROOT:?FER_ROOT: the repository checkout}"
: "${FER_PYTHON:=$FER_ROOT/.venv/bin/python}"    # interpreter with the project installed
: "${FER_CONFIG:=}"                              # optional --config YAML over pipeline.yaml

# ---- data (stage 0 takes FER_VIDEOS, or FER_AFFWILD2 to re-detect Aff-Wild2's raw videos)
: "${FER_VIDEOS:=}"                              # video files and/or folders, space-separated
: "${FER_AFFWILD2:=}"                            # Aff-Wild2 root (raw videos + EXPR labels)
: "${FER_STAGE0_OUT:=artifacts/stage0}"          # crops + manifest.parquet
: "${FER_STAGE1_RUN:=}"                          # stage-1 run whose encoder embeds; empty =
                                                 #   stage1.model of the config
: "${FER_STORE:=artifacts/embeddings/cluster}"   # embedding store written by stage 1
: "${FER_EXPORT_H5:=}"                           # also export the store as one HDF5 file
: "${FER_STAGE2_RUN:=artifacts/runs/stage2/cluster}"
: "${FER_RESUME:=}"                              # non-empty: stage 2 continues FER_STAGE2_RUN

# ---- launch (optional; decided inside each job when unset, see common.sh)
# FER_NPROC_PER_NODE   ranks per node (default: the GPUs Slurm gave the node, else 1)
# FER_MASTER_ADDR      rendezvous host (default: the job's first node)
# FER_MASTER_PORT      rendezvous port (default: 29500 + job id % 1000)

# ---- resources (read by submit.sh; each becomes an sbatch option)
: "${FER_PARTITION:=}"                           # --partition
: "${FER_ACCOUNT:=}"                             # --account
# FER_SHARDS                                     stage-0 array size N (--shard K/N); submit.sh:
#                                                  8 when unset; a job alone: its array's last index
: "${FER_STAGE0_CPUS:=16}"                       # cores per stage-0 task (= videos in parallel)
: "${FER_GPUS_PER_NODE:=8}"                      # --gpus-per-node for stage 1 and 2
: "${FER_EMBED_NODES:=1}"                        # nodes for stage-1 embedding
: "${FER_TRAIN_NODES:=1}"                        # nodes for stage-2 training
: "${FER_CPUS_PER_NODE:=64}"                     # --cpus-per-task of the one task per node
: "${FER_LOGS:=artifacts/slurm}"                # job logs (relative to FER_ROOT)
: "${FER_TIME_STAGE0:=12:00:00}"
: "${FER_TIME_EMBED:=04:00:00}"
: "${FER_TIME_TRAIN:=04:00:00}"

export FER_ROOT FER_PYTHON FER_CONFIG FER_VIDEOS FER_AFFWILD2 FER_STAGE0_OUT FER_STAGE1_RUN \
    FER_STORE FER_EXPORT_H5 FER_STAGE2_RUN FER_RESUME

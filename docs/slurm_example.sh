#!/bin/bash
# Example SLURM job: 2 nodes x 4 GPUs, one task per GPU; adapt partition, time and the config to your cluster.
#   sbatch docs/slurm_example.sh
# The node and task counts must match configs/trainer/slurm.yaml (num_nodes, devices) or be overridden below.
#SBATCH --job-name=syn2real-dann
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=12:00:00
#SBATCH --output=%x-%j.out

set -euo pipefail
export WANDB_MODE=${WANDB_MODE:-offline}
# one SLURM task per GPU: srun starts nodes x ntasks-per-node processes; Lightning reads their rank from SLURM
srun syn2real fit \
    --config configs/visda17/base.yaml --config configs/visda17/dann.yaml \
    --config configs/trainer/slurm.yaml \
    --trainer.num_nodes "$SLURM_JOB_NUM_NODES" \
    --trainer.devices "$SLURM_NTASKS_PER_NODE" \
    --trainer.default_root_dir "runs/visda17/dann_${SLURM_JOB_ID}"

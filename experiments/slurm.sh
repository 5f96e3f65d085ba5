#!/bin/bash
# Multi-node training on SLURM: 2 nodes x 4 GPUs, one task per GPU (Lightning reads the SLURM environment).
# Usage: sbatch experiments/slurm.sh experiments/cityscapes_hrnet_contrast.yaml --data.init_args.root=/data/cityscapes
#SBATCH --job-name=contrastseg
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=48:00:00
#SBATCH --signal=SIGUSR1@120   # Lightning saves a checkpoint and requeues on this signal
#SBATCH --requeue
set -euo pipefail
CONFIG="$1"; shift
# devices/num_nodes must match the allocation; per-GPU batch stays as in the config (anchors are sampled per GPU).
srun contrastseg fit --config "$CONFIG" --trainer.devices=4 --trainer.num_nodes=2 --ckpt_path=last "$@"

#!/usr/bin/env bash
# Show whether the local ptctl Slurm cluster daemons run, and the node and queue.
# Exit 0 when slurmctld answers, 1 otherwise.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

for d in munged:/run/munge/munged.pid slurmctld:"$STATE/run/slurmctld.pid" \
         slurmd:"$STATE/run/slurmd.pid" slurmdbd:"$STATE/run/slurmdbd.pid" \
         MariaDB:"$STATE/run/mariadb.pid"; do
    name="${d%%:*}" file="${d#*:}"
    if pid_alive "$file"; then step "$name running (pid $(cat "$file"))"; else step "$name not running"; fi
done
if ! timeout 10 scontrol ping >/dev/null 2>&1; then
    step "slurmctld does not answer"
    exit 1
fi
sinfo -h -N -o '%N %t %c CPUs, %G, partition %P' | sed 's/^/[ptctl-slurm] /'
squeue | sed 's/^/[ptctl-slurm] /'

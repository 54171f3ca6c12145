#!/usr/bin/env bash
# Stop the local ptctl Slurm cluster: slurmd, slurmctld, and (when start.sh started them)
# slurmdbd, MariaDB and munged. Job state stays in the state dir for the next start.sh.
# Usage: stop.sh [--keep-munge]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

keep_munge=0
for arg in "$@"; do
    case "$arg" in
        --keep-munge) keep_munge=1 ;;
        -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
        *) die "unknown option: $arg" ;;
    esac
done
[[ "$(id -u)" == 0 ]] || die "run as root"

stop_pidfile slurmd "$STATE/run/slurmd.pid"
stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
stop_pidfile MariaDB "$STATE/run/mariadb.pid"
if [[ -e "$STATE/run/munged.ours" ]] && (( ! keep_munge )); then
    stop_pidfile munged /run/munge/munged.pid
    rm -f "$STATE/run/munged.ours"
fi
step "stopped"

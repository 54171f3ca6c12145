#!/usr/bin/env bash
# Install the packages for the local ptctl Slurm cluster (Debian 12), only those missing.
# Usage: install.sh [--accounting]   (--accounting adds slurmdbd and MariaDB for sacct)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

accounting=0
for arg in "$@"; do
    case "$arg" in
        --accounting) accounting=1 ;;
        -h|--help) sed -n '2,3p' "$0"; exit 0 ;;
        *) die "unknown option: $arg" ;;
    esac
done

[[ "$(id -u)" == 0 ]] || die "run as root (apt-get and daemons need it)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian/Ubuntu only"

packages=(slurmctld slurmd slurm-client munge)
(( accounting )) && packages+=(slurmdbd mariadb-server)

missing=()
for p in "${packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
        missing+=("$p")
    fi
done

if (( ${#missing[@]} == 0 )); then
    step "packages already installed: ${packages[*]}"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh machine has empty package lists; refresh them only then.
if ! compgen -G '/var/lib/apt/lists/*_Packages' >/dev/null; then
    step "apt-get update"
    apt-get update -q
fi
step "apt-get install ${missing[*]}"
apt-get install -y -q --no-install-recommends "${missing[@]}"
step "installed: ${missing[*]}"

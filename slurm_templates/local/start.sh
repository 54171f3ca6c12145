#!/usr/bin/env bash
# Start (or keep running) the single-node local Slurm cluster for ptctl tests and trials:
# one node = this host, 16 CPUs, 8 fake GPUs (see common.sh), partition "debug". No systemd.
# Usage: start.sh [--accounting | --no-accounting]
#   --accounting also runs MariaDB + slurmdbd so that sacct works; later runs keep it on
#   until --no-accounting. Idempotent: running daemons are kept, and restarted only when the
#   rendered config changed (job state survives a restart).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

accounting=0
no_accounting=0
for arg in "$@"; do
    case "$arg" in
        --accounting) accounting=1 ;;
        --no-accounting) no_accounting=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) die "unknown option: $arg" ;;
    esac
done
[[ "$(id -u)" == 0 ]] || die "run as root (it writes /etc/slurm and starts daemons)"
t0=$SECONDS

mkdir -p "$STATE"/{ctld,spool,run,log,dev,etc}
# The marker of an earlier --accounting run keeps accounting on, so that a plain start.sh
# does not silently drop it.
if (( no_accounting )); then
    rm -f "$STATE/run/accounting" "$ETC/slurmdbd.conf"
    stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
    stop_pidfile MariaDB "$STATE/run/mariadb.pid"
elif [[ -e "$STATE/run/accounting" ]]; then
    accounting=1
fi
if (( accounting )); then "$HERE/install.sh" --accounting; else "$HERE/install.sh"; fi

step "GPU device files: $STATE/dev/gpu[0-$((GPUS - 1))] -> /dev/null"
for ((i = 0; i < GPUS; i++)); do ln -sfn /dev/null "$STATE/dev/gpu$i"; done

# --- render and install the config ---------------------------------------------------------
db_pass_file="$STATE/etc/db_pass"
if (( accounting )) && [[ ! -s "$db_pass_file" ]]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$db_pass_file")
fi
accounting_block="AccountingStorageType=accounting_storage/none"
if (( accounting )); then
    accounting_block="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu"
fi

render() {  # render TEMPLATE OUTPUT
    local text
    text="$(<"$HERE/$1")"
    text="${text//@HOST@/$NODE}"
    text="${text//@STATE@/$STATE}"
    text="${text//@CPUS@/$CPUS}"
    text="${text//@GPUS@/$GPUS}"
    text="${text//@LAST_GPU@/$((GPUS - 1))}"
    text="${text//@MEM_MB@/$MEM_MB}"
    text="${text//@MESSAGE_TIMEOUT@/$MESSAGE_TIMEOUT}"
    text="${text//@ACCOUNTING@/$accounting_block}"
    if [[ "$1" == slurmdbd.conf.in ]]; then text="${text//@DB_PASS@/$(<"$db_pass_file")}"; fi
    (umask 077; printf '%s\n' "$text" >"$2")
}

changed=0
install_conf() {  # install_conf NAME MODE: copy $STATE/etc/NAME to /etc/slurm/NAME if it differs
    local src="$STATE/etc/$1" dst="$ETC/$1"
    if [[ -e "$dst" ]] && cmp -s "$src" "$dst"; then
        return 0
    fi
    if [[ -e "$dst" ]] && ! grep -q 'slurm_templates/local/start.sh' "$dst"; then
        step "backing up foreign $dst to $dst.ptctl-backup"
        cp -p "$dst" "$dst.ptctl-backup"
    fi
    install -m "$2" "$src" "$dst"
    changed=1
}

mkdir -p "$ETC"
render slurm.conf.in "$STATE/etc/slurm.conf"
render gres.conf.in "$STATE/etc/gres.conf"
install_conf slurm.conf 0644
install_conf gres.conf 0644
if (( accounting )); then
    render slurmdbd.conf.in "$STATE/etc/slurmdbd.conf"
    install_conf slurmdbd.conf 0600
fi
if (( changed )); then step "config installed in $ETC (changed)"; else step "config in $ETC unchanged"; fi

# --- munge ---------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    step "creating munge key /etc/munge/munge.key"
    mkdir -p /etc/munge
    (umask 077; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
fi
chown munge:munge /etc/munge /etc/munge/munge.key
chmod 0700 /etc/munge
chmod 0400 /etc/munge/munge.key
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    step "munged already running"
else
    step "starting munged"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged --force
    touch "$STATE/run/munged.ours"
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
fi

# --- accounting: MariaDB + slurmdbd --------------------------------------------------------
if (( accounting )); then
    if mysqladmin --protocol=socket ping >/dev/null 2>&1; then
        step "MariaDB already running"
    else
        step "starting MariaDB"
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        if [[ ! -d /var/lib/mysql/mysql ]]; then
            mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$STATE/log/mariadb-install.log" 2>&1
        fi
        nohup mariadbd --user=mysql >"$STATE/log/mariadb.log" 2>&1 &
        echo $! >"$STATE/run/mariadb.pid"
        for _ in $(seq 1 300); do
            mysqladmin --protocol=socket ping >/dev/null 2>&1 && break
            sleep 0.1
        done
        mysqladmin --protocol=socket ping >/dev/null 2>&1 || die "MariaDB did not start in 30 s (see $STATE/log/mariadb.log)"
    fi
    step "MariaDB: database slurm_acct_db and user slurm"
    mysql --protocol=socket -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$(<"$db_pass_file")';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$(<"$db_pass_file")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
    touch "$STATE/run/accounting"
    if pid_alive "$STATE/run/slurmdbd.pid" && (( changed )); then
        stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
    fi
    if pid_alive "$STATE/run/slurmdbd.pid"; then
        step "slurmdbd already running"
    else
        step "starting slurmdbd"
        /usr/sbin/slurmdbd
        for _ in $(seq 1 100); do
            sacctmgr -n -i show cluster >/dev/null 2>&1 && break
            sleep 0.2
        done
        sacctmgr -n -i show cluster >/dev/null 2>&1 || die "slurmdbd does not answer (see $STATE/log/slurmdbd.log)"
    fi
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx ptctl; then
        step "registering cluster ptctl in slurmdbd"
        sacctmgr -i add cluster ptctl >/dev/null
    fi
fi

# --- slurmctld + slurmd --------------------------------------------------------------------
if (( changed )); then
    # A new config needs fresh daemons; job state survives in $STATE/ctld.
    pid_alive "$STATE/run/slurmd.pid" && stop_pidfile slurmd "$STATE/run/slurmd.pid"
    pid_alive "$STATE/run/slurmctld.pid" && stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
fi
if pid_alive "$STATE/run/slurmctld.pid"; then
    step "slurmctld already running"
else
    step "starting slurmctld (state in $STATE/ctld)"
    /usr/sbin/slurmctld || die "slurmctld failed to start (see $STATE/log/slurmctld.log)"
fi
if pid_alive "$STATE/run/slurmd.pid"; then
    step "slurmd already running"
else
    step "starting slurmd on node $NODE"
    /usr/sbin/slurmd || die "slurmd failed to start (see $STATE/log/slurmd.log)"
fi

# --- wait until the node takes jobs --------------------------------------------------------
step "waiting up to ${WAIT_S}s for node $NODE to be idle"
deadline=$((SECONDS + WAIT_S))
resumed=0
state=""
while (( SECONDS < deadline )); do
    state="$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n1 || true)"
    case "$state" in
        idle|mix|alloc|comp) break ;;
        drain*|down*|drng|fail*)
            if (( ! resumed )); then
                step "node is $state: resuming it"
                scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    sleep 0.5
done
case "$state" in
    idle|mix|alloc|comp) ;;
    *)
        reason="$(sinfo -h -n "$NODE" -o %E 2>/dev/null || true)"
        die "node $NODE is '${state:-unknown}' after ${WAIT_S}s (reason: ${reason:-none}); see $STATE/log/slurmctld.log and slurmd.log"
        ;;
esac
step "cluster ready in $((SECONDS - t0))s: node $NODE is $state ($CPUS CPUs, $GPUS GPUs, partition debug$( (( accounting )) && echo ', accounting on'))"

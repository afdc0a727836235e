#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM integration test (tests/test_slurm.py) and CI.
#
#   sudo scripts/slurm_local.sh start    # install slurm-wlm + munge if missing, configure, start, wait for an idle node
#   sudo scripts/slurm_local.sh status   # the daemons this script started and `sinfo`
#   sudo scripts/slurm_local.sh stop     # stop exactly the daemons this script started (by recorded PID)
#
# Debian/Ubuntu only (apt-get), run as root. The configuration follows ../shared/SLURM-LOCAL.md: one node (this
# host, all its CPUs, 80% of its memory), partition `main`, munge authentication, no accounting database (so
# Snakemake needs `--slurm-status-command squeue` and `--slurm-no-account`). Every step is idempotent: `start` on a
# running cluster changes nothing, `stop` without a recorded daemon does nothing. A slurm.conf not written by this
# script is never overwritten.
set -euo pipefail

CONF=/etc/slurm/slurm.conf
STATE_DIR=/run/primkd-slurm          # <daemon>.pid for each daemon this script started
LOG_DIR=/var/log/slurm
MARKER="# Written by primkd scripts/slurm_local.sh"
DAEMONS=(munged slurmctld slurmd)     # start order; stopped in reverse
READY_TIMEOUT_S=60

die() { echo "slurm_local.sh: $*" >&2; exit 1; }
log() { echo "slurm_local.sh: $*"; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (the daemons run as root on this one-node cluster); use sudo"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sinfo >/dev/null; then
        return
    fi
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and apt-get is not available; install them"
    log "installing slurm-wlm and munge with apt-get (a minute or two)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

# slurm.conf for this host: its name, all its CPUs, 80% of its memory in MiB.
render_conf() {
    local host cpus mem_mib
    host=$(hostname)
    cpus=$(nproc)
    mem_mib=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)
    cat <<EOF
$MARKER (host $host); \`scripts/slurm_local.sh stop\` leaves it in place.
ClusterName=local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmdSpoolDir=/var/spool/slurmd
StateSaveLocation=/var/spool/slurmctld
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

configure() {
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" /run/munge "$STATE_DIR"
    chown munge:munge /run/munge 2>/dev/null || true
    [[ -s /etc/munge/munge.key ]] || die "/etc/munge/munge.key is missing; reinstall munge (it creates the key)"
    local wanted
    wanted=$(render_conf)
    if [[ -f $CONF ]]; then
        grep -qF "$MARKER" "$CONF" || die "$CONF exists and was not written by this script; move it away to use it"
        [[ $(cat "$CONF") == "$wanted" ]] && return
    fi
    log "writing $CONF"
    printf '%s\n' "$wanted" >"$CONF"
}

# PID this script recorded for a daemon, if that process still runs that daemon.
recorded_pid() {
    local name=$1 file="$STATE_DIR/$1.pid" pid
    [[ -f $file ]] || return 1
    pid=$(<"$file")
    if [[ -d /proc/$pid && $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
        echo "$pid"
        return 0
    fi
    rm -f "$file"   # stale record: the daemon exited on its own
    return 1
}

# Start one daemon in the foreground mode of its own session and record its PID.
start_daemon() {
    local name=$1 pid
    if pid=$(recorded_pid "$name"); then
        log "$name already running (pid $pid, started by this script)"
        return
    fi
    if pgrep -x "$name" >/dev/null; then
        log "$name already running, not started by this script: leaving it alone"
        return
    fi
    case $name in
        munged) setsid munged --foreground --force >>"$LOG_DIR/munged.out" 2>&1 </dev/null & ;;
        slurmctld) setsid slurmctld -D >>"$LOG_DIR/slurmctld.out" 2>&1 </dev/null & ;;
        slurmd) setsid slurmd -D >>"$LOG_DIR/slurmd.out" 2>&1 </dev/null & ;;
    esac
    pid=$!
    echo "$pid" >"$STATE_DIR/$name.pid"
    sleep 1
    recorded_pid "$name" >/dev/null || die "$name exited at start; see $LOG_DIR/$name.out and $LOG_DIR/*.log"
    log "started $name (pid $pid)"
}

wait_for_idle_node() {
    local waited=0
    until sinfo -h -N -t idle -o %N 2>/dev/null | grep -q .; do
        ((waited >= READY_TIMEOUT_S)) && die "no idle node after ${READY_TIMEOUT_S}s; sinfo says: $(sinfo 2>&1)"
        sleep 1
        waited=$((waited + 1))
    done
    sinfo
}

start() {
    require_root
    install_packages
    configure
    for name in "${DAEMONS[@]}"; do
        start_daemon "$name"
        [[ $name == munged ]] && { munge -n | unmunge >/dev/null || die "munge does not work; see $LOG_DIR/munged.out"; }
    done
    wait_for_idle_node
}

stop() {
    require_root
    local i name pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        pid=$(recorded_pid "$name") || continue
        kill -TERM "$pid"
        for _ in $(seq 20); do [[ -d /proc/$pid ]] || break; sleep 0.5; done
        [[ -d /proc/$pid ]] && kill -KILL "$pid"
        rm -f "$STATE_DIR/$name.pid"
        log "stopped $name (pid $pid)"
    done
}

status() {
    local name pid
    for name in "${DAEMONS[@]}"; do
        if pid=$(recorded_pid "$name"); then
            echo "$name: running (pid $pid, started by this script)"
        elif pgrep -x "$name" >/dev/null; then
            echo "$name: running (not started by this script)"
        else
            echo "$name: not running"
        fi
    done
    if command -v sinfo >/dev/null; then sinfo 2>&1 || true; else echo "sinfo: not installed"; fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac

#!/usr/bin/env bash
# A one-node Slurm cluster on localhost for tests, without systemd or cgroups.
#
#   scripts/services/slurm.sh start   installs Debian's slurmctld, slurmd, slurm-client and munge
#                                     if missing, writes slurm.conf, starts munged, slurmctld and
#                                     slurmd in the background, waits until the node is idle and
#                                     prints `export PEDINORM_SLURM=1` (for `eval`).
#   scripts/services/slurm.sh stop    stops the daemons it started, by their PIDs.
#   scripts/services/slurm.sh status  prints the node state.
#
# Needs root (it writes /etc/slurm/slurm.conf and runs the daemons as root). State, logs and
# PID files live in $PEDINORM_SLURM_STATE (default /var/lib/pedinorm-slurm).
set -euo pipefail

state_dir="${PEDINORM_SLURM_STATE:-/var/lib/pedinorm-slurm}"
conf=/etc/slurm/slurm.conf
log() { echo "slurm.sh: $*" >&2; }

install_if_missing() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >&2
        apt-get install -y -qq "${missing[@]}" >&2
    fi
}

write_config() {
    local host cpus memory_mb
    host="$(hostname -s)"
    cpus="$(nproc)"
    # Leave a quarter of the memory to the system.
    memory_mb="$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.75}' /proc/meminfo)"
    mkdir -p /etc/slurm "$state_dir/ctld" "$state_dir/d"
    cat >"$conf" <<EOF
# One-node test cluster written by scripts/services/slurm.sh.
ClusterName=pedinorm
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
# No cgroups: track processes by parent PID, no task containment.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# Jobs whose dependency can never be satisfied are cancelled instead of pending forever.
SchedulerParameters=kill_invalid_depend
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
# Jobs that do not ask for memory get 1 GB per CPU, not the whole node.
DefMemPerCPU=1024
MpiDefault=none
ReturnToService=2
# Keep finished jobs visible to scontrol/squeue for 10 minutes (no accounting database).
MinJobAge=600
SchedulerTimeSlice=5
StateSaveLocation=${state_dir}/ctld
SlurmdSpoolDir=${state_dir}/d
SlurmctldPidFile=${state_dir}/slurmctld.pid
SlurmdPidFile=${state_dir}/slurmd.pid
SlurmctldLogFile=${state_dir}/slurmctld.log
SlurmdLogFile=${state_dir}/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    if [ -f "$state_dir/munged.pid" ] && kill -0 "$(cat "$state_dir/munged.pid")" 2>/dev/null; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown -R munge:munge /etc/munge 2>/dev/null || true
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    local pidfile=/run/munge/munged.pid
    rm -f "$pidfile"
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- /usr/sbin/munged --pid-file="$pidfile" >&2
    else
        /usr/sbin/munged --force --pid-file="$pidfile" >&2
    fi
    for _ in $(seq 50); do [ -s "$pidfile" ] && break; sleep 0.1; done
    cp "$pidfile" "$state_dir/munged.pid"
}

start_daemon() {
    local name="$1"
    local pidfile="$state_dir/$name.foreground.pid"
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        return
    fi
    # -D: stay in the foreground (no systemd); backgrounded here and detached from the shell.
    setsid "/usr/sbin/$name" -D >>"$state_dir/$name.stdout" 2>&1 </dev/null &
    echo $! >"$pidfile"
}

wait_idle() {
    local host state
    host="$(hostname -s)"
    for _ in $(seq 300); do
        state="$(sinfo -h -n "$host" -o '%T' 2>/dev/null || true)"
        case "$state" in
            idle*|mixed*|allocated*) log "node $host is $state"; return 0 ;;
            down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    log "node did not become idle; see $state_dir/*.log"
    return 1
}

case "${1:-}" in
    start)
        [ "$(id -u)" -eq 0 ] || { log "must run as root"; exit 1; }
        install_if_missing
        mkdir -p "$state_dir"
        write_config
        start_munge
        start_daemon slurmctld
        start_daemon slurmd
        wait_idle
        echo "export PEDINORM_SLURM=1"
        ;;
    stop)
        for name in slurmd slurmctld munged; do
            pidfile="$state_dir/$name.foreground.pid"
            [ "$name" = munged ] && pidfile="$state_dir/munged.pid"
            if [ -f "$pidfile" ]; then
                pid="$(cat "$pidfile")"
                if kill -0 "$pid" 2>/dev/null; then
                    kill "$pid"
                    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                fi
                rm -f "$pidfile"
            fi
        done
        log "stopped"
        ;;
    status)
        sinfo -N -o '%N %T %c %m'
        ;;
    *)
        echo "usage: $0 start|stop|status" >&2
        exit 2
        ;;
esac

#!/usr/bin/env bash
# The workflow on a real SLURM, not a mock: brings up a throw-away single-node SLURM (munged, slurmctld,
# slurmd from Debian packages, installed when missing), runs an experiment through workflow/profiles/slurm
# into one work dir and locally into another, checks that every non-local job ran as a SLURM job that
# completed, and that both runs produced the same numbers (scripts/compare_runs.py). Stops every daemon it
# started, by PID, also on failure.
#
#   sudo scripts/slurm_test.sh [WORKDIR]          (default: a new /tmp/advkd-slurm.* dir, kept for inspection)
#   ADVKD_SLURM_CONFIG=experiments/ci.yaml        (the experiment; ci by default)
#
# Everything SLURM needs (config, state, logs) lives under WORKDIR/slurm, on free ports, and munge's key and socket
# in a folder of its own under /run (removed at the end), so the machine's own /etc/slurm and any other SLURM or
# munge instance are left alone, and WORKDIR may lie where only root can enter.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$REPO/.venv/bin:$PATH" HF_HUB_OFFLINE=1
# This checkout's package, also where .venv holds an editable install of another checkout.
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
CONFIG=$(realpath "${ADVKD_SLURM_CONFIG:-$REPO/experiments/ci.yaml}")
WORK=$(realpath "${1:-$(mktemp -d /tmp/advkd-slurm.XXXXXX)}")
T0=$SECONDS
say() { echo "slurm_test [$((SECONDS - T0))s]: $*"; }
fail() { echo "slurm_test: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "run as root: it starts munged, slurmctld and slurmd"
missing=()
for p in slurmctld slurmd slurm-client munge; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

S=$WORK/slurm
mkdir -p "$S"/{state,spool,log}
# munged runs as the munge user, which must reach its key and socket through every folder above them. WORK may lie
# where only root can enter (pytest's temporary folders are mode 700, and so is /root), so munge gets a folder of
# its own under /run, removed at the end (its log is copied to $S/log first).
M=$(mktemp -d /run/advkd-munge.XXXXXX)
chmod 755 "$M"
mkdir -p "$M"/{munge,munge-socket}
export SLURM_CONF=$S/slurm.conf
PIDS=()
RUNS=()
cleanup() {
  local rc=$?
  # Snakemake runs still going (after a failure or a signal) first. On SIGTERM the local run stops its jobs,
  # but the SLURM run waits for every job it submitted, so it gets 20 s before SIGKILL and scancel.
  for pid in "${RUNS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 20); do
    alive=0
    for pid in "${RUNS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 1 ] || break
    sleep 1
  done
  for pid in "${RUNS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  # Then any job left queued or running, and only once SLURM has ended them the daemons, newest first: a job
  # step that cannot reach slurmctld to report its end keeps slurmd from exiting.
  if [ ${#PIDS[@]} -ge 2 ]; then
    scancel --partition=advkd >/dev/null 2>&1 || true
    for _ in $(seq 30); do [ -z "$(squeue -h -t running,pending,completing 2>/dev/null)" ] && break; sleep 1; done
  fi
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill "${PIDS[i]}" 2>/dev/null || true
    for _ in $(seq 15); do kill -0 "${PIDS[i]}" 2>/dev/null || break; sleep 1; done
    kill -KILL "${PIDS[i]}" 2>/dev/null || true
    wait "${PIDS[i]}" 2>/dev/null || true
  done
  cp "$M/munge/munged.log" "$S/log/" 2>/dev/null || true
  rm -rf "$M"
  [ $rc -eq 0 ] || echo "slurm_test: failed after $((SECONDS - T0))s; logs under $WORK" >&2
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# munge: its own key and socket; the daemon runs as the munge user, in the foreground so that $! is its PID.
# Clients must reach the socket through every directory above it, but only munge may write next to it.
chmod 755 "$WORK" "$S" "$M"
chown munge:munge "$M/munge" "$M/munge-socket" && chmod 700 "$M/munge" && chmod 755 "$M/munge-socket"
dd if=/dev/urandom of="$M/munge/munge.key" bs=1024 count=1 status=none
chown munge:munge "$M/munge/munge.key" && chmod 600 "$M/munge/munge.key"
setpriv --reuid=munge --regid=munge --clear-groups /usr/sbin/munged -F --socket="$M/munge-socket/munge.socket" \
  --key-file="$M/munge/munge.key" --log-file="$M/munge/munged.log" --pid-file="$M/munge/munged.pid" \
  --seed-file="$M/munge/munged.seed" >"$S/log/munged.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do [ -S "$M/munge-socket/munge.socket" ] && break; sleep 0.2; done
[ -S "$M/munge-socket/munge.socket" ] || fail "munged did not start: $(cat "$M/munge/munged.log" 2>/dev/null)"

HOST=$(hostname -s)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$SLURM_CONF" <<EOF
ClusterName=advkdtest
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$M/munge-socket/munge.socket
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/log/slurmctld.log
SlurmdLogFile=$S/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# Without slurmdbd there is no sacct: the completion log is the record of every job that ran and how it ended.
JobCompType=jobcomp/filetxt
JobCompLoc=$S/log/jobcomp.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Finished jobs stay visible to squeue, Snakemake's status command here.
MinJobAge=600
# A cancelled job's processes get 5 s to stop before SIGKILL, so a failed test stops quickly.
KillWait=5
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$MEM_MB State=UNKNOWN
PartitionName=advkd Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

# snakemake-executor-plugin-slurm-jobstep 0.6.1 removes SLURM_CONF from the environment of the srun it runs
# inside each job, so srun would look for /etc/slurm/slurm.conf, where a real cluster keeps it (or fetch it
# configless). This test keeps its config private instead, and hands it back to that srun through PATH.
mkdir -p "$S/bin"
printf '#!/bin/sh\nSLURM_CONF=%s exec /usr/bin/srun "$@"\n' "$SLURM_CONF" > "$S/bin/srun"
chmod +x "$S/bin/srun"
export PATH="$S/bin:$PATH"

/usr/sbin/slurmctld -D -f "$SLURM_CONF" >"$S/log/slurmctld.out" 2>&1 &
PIDS+=($!)
/usr/sbin/slurmd -D -f "$SLURM_CONF" -N "$HOST" >"$S/log/slurmd.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 60); do [ "$(sinfo -h -o %t 2>/dev/null)" = idle ] && break; sleep 1; done
[ "$(sinfo -h -o %t 2>/dev/null)" = idle ] || fail "the node did not come up: $(sinfo 2>&1; tail -5 "$S"/log/*.log)"
say "SLURM $(sinfo -V | cut -d' ' -f2) up: node $HOST, $(nproc) CPUs, ${MEM_MB} MB, partition advkd"
# The plugin runs each rule with srun inside its sbatch job: check both before spending minutes on the DAG.
sbatch --wait --quiet -o "$S/log/probe.out" --wrap 'env | grep ^SLURM_CONF; srun true && echo srun-ok' \
  || fail "a probe job failed: $(cat "$S/log/probe.out")"
grep -q srun-ok "$S/log/probe.out" || fail "srun inside a job failed: $(cat "$S/log/probe.out")"

# Same seeds and the same threads per job in both runs, so the numbers must agree bit for bit. The local run
# goes alongside: the SLURM run spends much of its time starting and polling jobs, not computing.
CORES=$(nproc)
say "SLURM run -> $WORK/slurm-run, local run -> $WORK/local-run"
snakemake -s "$REPO/Snakefile" -d "$WORK/slurm-run" --profile "$REPO/workflow/profiles/slurm" \
  --configfile "$CONFIG" --cores "$CORES" --slurm-no-account --slurm-status-command squeue \
  --slurm-keep-successful-logs --slurm-init-seconds-before-status-checks 1 --seconds-between-status-checks 2 \
  >"$WORK/slurm-run.log" 2>&1 &
RUNS=($!)
snakemake -s "$REPO/Snakefile" -d "$WORK/local-run" --profile "$REPO/workflow/profiles/local" \
  --configfile "$CONFIG" --cores "$CORES" >"$WORK/local-run.log" 2>&1 &
RUNS+=($!)
# `wait` on background jobs, unlike a foreground command, lets the INT/TERM trap stop everything at once.
wait "${RUNS[0]}" || fail "the SLURM run failed: $(tail -40 "$WORK/slurm-run.log")"
say "SLURM run done"
wait "${RUNS[1]}" || fail "the local run failed: $(tail -40 "$WORK/local-run.log")"
RUNS=()
say "local run done"

# Every job Snakemake did not run on the submit host ("rule X:", not "localrule X:") got a SLURM job id,
# completed in SLURM with exit code 0, and left its per-job log from the plugin.
remote=$(grep -c '^rule ' "$WORK/slurm-run.log" || true)
local_jobs=$(grep -c '^localrule ' "$WORK/slurm-run.log" || true)
mapfile -t ids < <(grep -oP "submitted with SLURM jobid \K[0-9]+" "$WORK/slurm-run.log")
steps=$(grep -oP '^[0-9]+ of \K[0-9]+(?= steps \(100%\) done)' "$WORK/local-run.log" | tail -1)
[ "$remote" -gt 0 ] || fail "the SLURM run ran no job"
[ "${#ids[@]}" -eq "$remote" ] || fail "$remote non-local jobs but ${#ids[@]} SLURM submissions"
[ "$((remote + local_jobs))" = "$steps" ] || fail "SLURM run: $remote + $local_jobs jobs, local run: $steps"
for id in "${ids[@]}"; do
  grep -q "JobId=$id .*JobState=COMPLETED.* ExitCode=0:0" "$S/log/jobcomp.log" \
    || fail "SLURM job $id did not complete with exit 0: $(grep "JobId=$id " "$S/log/jobcomp.log")"
  [ -n "$(find "$WORK/slurm-run/.snakemake/slurm_logs" -name "$id.log")" ] || fail "no plugin log for job $id"
done
completed=$(grep -c 'JobState=COMPLETED' "$S/log/jobcomp.log")
say "$remote jobs ran as SLURM jobs (ids ${ids[0]}..${ids[-1]}; SLURM completed $completed with the probe)," \
  "$local_jobs ran on the submit host"

EXP=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["experiment"])' "$CONFIG")
python "$REPO/scripts/compare_runs.py" "$WORK/local-run/results/$EXP" "$WORK/slurm-run/results/$EXP" \
  || fail "the SLURM run's results differ from the local run's"
say "PASS in $((SECONDS - T0))s (work dir $WORK)"

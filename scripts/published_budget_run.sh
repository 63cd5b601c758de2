#!/usr/bin/env bash
# Train experiments/published-budget.yaml's three students (issue 34) from a fixed commit in a git worktree, at low
# priority in the background, so that code changes on main meanwhile cannot invalidate the resume (a run's identity
# includes the students' code). Rerun after any stop: the distill jobs resume from their per-epoch checkpoints.
#   bash scripts/published_budget_run.sh [COMMIT] [WORKTREE] [METHOD...]
#     defaults: the run's commit, /work/pb-run, advkd-published advkd-control denoising-student
# The run lives in the worktree's results/, which is not in git: on another host (a session may not get its machine
# back) it starts again from the teacher runs, which are host-dependent at the bit level (the run identity holds
# their digest), so a checkpoint carried over would not be resumed anyway.
# Progress: WORKTREE/run.log and WORKTREE/results/published-budget/students/*/loss.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMIT=${1:-cc2db07}
DIR=$(realpath -m "${2:-/work/pb-run}")   # as /proc/PID/cwd reads it, for the checks below
METHODS=("${@:3}")
[ ${#METHODS[@]} -gt 0 ] || METHODS=(advkd-published advkd-control denoising-student)
[ -x .venv/bin/python ] || bash scripts/setup.sh
[ -d "$DIR" ] || git worktree add --detach "$DIR" "$COMMIT"
[ "$(git -C "$DIR" rev-parse --short=7 HEAD)" = "${COMMIT:0:7}" ] || { echo "$DIR is not at $COMMIT" >&2; exit 1; }
[ -e "$DIR/.venv" ] || ln -s "$PWD/.venv" "$DIR/.venv"
cd "$DIR"
# the venv's editable install points at main: the worktree's own package comes first on the path
export PYTHONPATH="$DIR" PATH="$DIR/.venv/bin:$PATH" HF_HUB_OFFLINE=1
R=results/published-budget/students
# The epochs' seconds in loss.csv are wall time, and a resumed job's benchmark counts its last invocation only: the
# CPU seconds of every distill process are logged every 30 s (method, pid, utime + stime), so that the run's CPU
# seconds add up across stops (each process's last line is its invocation's total, to within 30 s; a process is its
# pid and start time, field 22 of /proc/PID/stat). The logger ends with the Snakemake run (its pid: the argument).
cpu_log() {   # $1: the Snakemake run's pid
  pgrep -f "published-budget-cpu-log $DIR" > /dev/null && return
  setsid nohup bash -c 'while sleep 30 && kill -0 "$2" 2> /dev/null; do
    for p in $(pgrep -f "advkd distill --method"); do
      [ "$(cat /proc/$p/comm)" != bash ] || continue   # the python process, not the job shell nor this loop
      [ "$(readlink /proc/$p/cwd)" = "$1" ] || continue
      m=$(tr "\0" " " < /proc/$p/cmdline | sed -n "s/.*--method \([^ ]*\).*/\1/p")
      echo "$(date -u +%FT%TZ) $m $p $(awk -v t="$(getconf CLK_TCK)" "{print (\$14 + \$15) / t, \$22}" /proc/$p/stat)"
    done
  done' published-budget-cpu-log "$DIR" "$1" >> "$DIR/cpu_seconds.log" 2>/dev/null < /dev/null &
}
# a session's end kills the run and leaves Snakemake's lock behind: clear it, unless a run of it is still going
for p in $(pgrep -f "snakemake.*published-budget.yaml"); do
  [ "$(readlink "/proc/$p/cwd")" = "$DIR" ] && { cpu_log "$p"; echo "already running in $DIR" >&2; exit 1; }
done
snakemake --unlock --configfile experiments/published-budget.yaml > /dev/null
# one thread per distill job, two jobs side by side: a second thread buys a job 10-49% per step (docs), less than
# a second job gets from that core; DISTILL_THREADS=2 for a run left alone on the host (the last one to finish)
TARGETS=()
for m in "${METHODS[@]}"; do TARGETS+=("$R/$m/student.safetensors"); done
# the first two methods named are the runs the issue requires: with three distill jobs and two cores, they go first
# and the third starts on the core the first one to finish frees
PRIORITY=()
[ ${#TARGETS[@]} -le 2 ] || PRIORITY=(--prioritize "${TARGETS[@]:0:2}")
setsid nohup nice -n 19 snakemake "${TARGETS[@]}" "${PRIORITY[@]}" \
  --cores 2 --set-threads distill="${DISTILL_THREADS:-1}" --rerun-incomplete --configfile experiments/published-budget.yaml \
  >> "$DIR/run.log" 2>&1 < /dev/null &
# setsid made a session of its own, and with the kernel's autogroups a process's nice counts only inside its
# session: the session's autogroup gets the low priority too, or the run takes an equal share of the cores
# (once setsid has made it: written before, it lands on this shell's autogroup and the run keeps nice 0)
for _ in 1 2 3 4 5 6 7 8 9 10; do
  [ "$(cut -d' ' -f1 "/proc/$!/autogroup")" != "$(cut -d' ' -f1 /proc/self/autogroup)" ] && break
  sleep 0.5
done
[ -w "/proc/$!/autogroup" ] && echo 19 > "/proc/$!/autogroup" && cat "/proc/$!/autogroup"
echo "started (pid $!): $DIR/run.log"
cpu_log "$!"

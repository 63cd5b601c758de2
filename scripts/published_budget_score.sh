#!/usr/bin/env bash
# Score experiments/published-budget.yaml's finished students (issue 34) at this checkout's code, retraining nothing:
# a git worktree of HEAD gets the teacher, the 20,000 teacher runs and the three students' folders as hard links
# from the worktree that trained them, then `snakemake --cores 2` samples and scores every row on the validation
# half, memorisation against the 20,000 runs, quality by phase, and the report (paper_figures/published-budget/).
#   bash scripts/published_budget_score.sh [WORKTREE] [SNAKEMAKE ARGS...]      (default /work/pb-score)
#   PB_RUN: the training worktree (default /work/pb-run)
#   PB_METHODS: the students to score (default all three; e.g. "advkd-published advkd-control" while the third row
#     still trains): the others are left out of an untracked copy of the config in the worktree (the same experiment
#     name and results folder; the results' provenance names that file); a later run with all three adds theirs
# The students' folders carry no Snakemake metadata in the new worktree, so Snakemake takes them as they are; the
# script refuses to start if its plan would train or remake anything the runs made.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(realpath -m "${1:-/work/pb-score}")
shift $(( $# > 0 ? 1 : 0 ))
RUN=${PB_RUN:-/work/pb-run}
R=results/published-budget
ALL=(advkd-published advkd-control denoising-student)
read -ra SCORE <<< "${PB_METHODS:-${ALL[*]}}"
for m in "${SCORE[@]}"; do
  [[ " ${ALL[*]} " == *" $m "* ]] || { echo "PB_METHODS: $m is none of ${ALL[*]}" >&2; exit 1; }
  [ -f "$RUN/$R/students/$m/student.safetensors" ] \
    || { echo "$m has not finished training: no $RUN/$R/students/$m/student.safetensors" >&2; exit 1; }
done
[ -x .venv/bin/python ] || bash scripts/setup.sh
[ -d "$DIR" ] || git worktree add --detach "$DIR" HEAD
[ "$(git -C "$DIR" rev-parse HEAD)" = "$(git rev-parse HEAD)" ] \
  || { echo "$DIR is at $(git -C "$DIR" rev-parse --short HEAD), not this checkout's HEAD: git -C $DIR checkout --detach $(git rev-parse --short HEAD)" >&2; exit 1; }
[ -e "$DIR/.venv" ] || ln -s "$PWD/.venv" "$DIR/.venv"
mkdir -p "$DIR/$R/students"
for d in teacher trajectories; do [ -d "$DIR/$R/$d" ] || cp -al "$RUN/$R/$d" "$DIR/$R/"; done
for m in "${SCORE[@]}"; do [ -d "$DIR/$R/students/$m" ] || cp -al "$RUN/$R/students/$m" "$DIR/$R/students/"; done
cd "$DIR"
export PYTHONPATH="$DIR" PATH="$DIR/.venv/bin:$PATH" HF_HUB_OFFLINE=1
CONFIG=experiments/published-budget.yaml
if [ ${#SCORE[@]} -lt ${#ALL[@]} ]; then
  CONFIG=published-budget.$(IFS=+; echo "${SCORE[*]}").yaml
  python - "$CONFIG" "${ALL[*]}" "${SCORE[@]}" <<'EOF'
import sys, yaml
cfg = yaml.safe_load(open("experiments/published-budget.yaml"))
out = [m for m in sys.argv[2].split() if m not in sys.argv[3:]]
for m in out:
    del cfg["methods"][m]
report = cfg.get("report", {})
if "phase_quality" in report:   # scored by phase only where the run is scored at all
    report["phase_quality"] = [m for m in report["phase_quality"] if m not in out]
with open(sys.argv[1], "w") as f:
    f.write(f"# experiments/published-budget.yaml without {', '.join(out)} (scripts/published_budget_score.sh)\n")
    yaml.safe_dump(cfg, f, sort_keys=False)
EOF
fi
CFG=(--configfile "$CONFIG" "$@")
out=$(snakemake -n "${CFG[@]}" 2>&1) || { echo "$out" >&2; exit 1; }
plan=$(sed -n '/^Job stats/,/^$/p' <<< "$out")
if grep -qE '^(train_teacher|teacher|trajectories|distill) ' <<< "$plan"; then
  echo "refusing: the plan would remake what the training runs made:" >&2
  echo "$plan" >&2
  exit 1
fi
snakemake --cores 2 "${CFG[@]}"

#!/usr/bin/env bash
# Train many zoo models side by side, one `robust-vae train` process each: a GPU machine with
# many cores (--device cuda) or a CPU cluster node. Every run resumes from its checkpoint in
# $ROBUST_VAE_CACHE when started again, so an interrupted batch loses at most checkpoint_every steps.
#
#   scripts/train_many.sh -j 8 -o OUT [-l LOGS] [-d cuda] [-t 1] [-p PYTHON] SPEC ...
#
# SPEC is "FAMILY DATASET SEED [more train arguments]", e.g.
#   "factorvae mnist 0"   "betavae dsprites 1 --image-size 32 --steps 50000 --set beta=1 --name betavae-b1"
# Weights and cards go to OUT/<dataset>/, one log per run to LOGS/ (default OUT/logs/); the last lines printed
# are one per run: its exit status, recon_accuracy and log. Exit status: 0 when every run succeeded.
set -u
jobs=2 out="" logs="" device=cpu threads=1 python=${PYTHON:-python3}
while getopts "j:o:l:d:t:p:" flag; do
  case $flag in
    j) jobs=$OPTARG ;; o) out=$OPTARG ;; l) logs=$OPTARG ;; d) device=$OPTARG ;; t) threads=$OPTARG ;; p) python=$OPTARG ;;
    *) echo "usage: $0 -j JOBS -o OUT [-l LOGS] [-d DEVICE] [-t THREADS] [-p PYTHON] SPEC ..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ -z "$out" ] || [ $# -eq 0 ]; then
  echo "usage: $0 -j JOBS -o OUT [-l LOGS] [-d DEVICE] [-t THREADS] [-p PYTHON] SPEC ..." >&2; exit 2
fi
logs=${logs:-$out/logs}
mkdir -p "$logs"

one() {  # one SPEC: train it, then print "rc=N recon_accuracy=X log"
  read -r family dataset seed rest <<< "$1"
  local tag="$family-$dataset-$seed"
  case "$rest" in *"--name "*) tag="$(sed -E 's/.*--name ([^ ]+).*/\1/' <<< "$rest")-$dataset-$seed" ;; esac
  local log="$logs/$tag.log"
  # shellcheck disable=SC2086  # the extra arguments are meant to split
  OMP_NUM_THREADS=$threads "$python" -m robust_vae train --model "$family" --dataset "$dataset" --seed "$seed" \
    --device "$device" --threads "$threads" --out "$out/$dataset" $rest > "$log" 2>&1
  local rc=$?
  local accuracy
  accuracy=$(grep -o '"recon_accuracy": [0-9.]*' "$log" | tail -1 | cut -d' ' -f2)
  echo "rc=$rc recon_accuracy=${accuracy:-none} $log"
  return $rc
}
export -f one
export out logs device threads python

printf '%s\0' "$@" | xargs -0 -P "$jobs" -I{} bash -c 'one "$1"' _ {}

#!/usr/bin/env bash
# Train the dSprites zoo of issue "Does disentanglement predict robustness?" (resumable: rerun
# after an interruption; finished runs only rewrite their cards). The choices, measured in
# reports/dsprites/study/README.md:
#   - the 32×32 thesis network on the full training split (663,552 renders, --data-option samples=0);
#   - --recon-scale 4: each 32×32 pixel stands for the 4 of the 64×64 image it replaces, so the
#     64×64 papers' β, γ and capacities (nats) are used as published;
#   - 50,000 steps of Adam 1e-4 at batch 64 (the pilot's scores settle by then: see the README).
#
#   reports/dsprites/study/train_zoo.sh [-j JOBS] [-d cuda] [-o OUT] [-l LOGS] [-n]   (-n: print the specs only)
# (default: 2 jobs on CPU into the package's zoo, logs in reports/dsprites/study/logs/, not committed)
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
jobs=2 device=cpu out="$root/robust_vae/zoo/weights" logs="$here/logs" dry=0
while getopts "j:d:o:l:n" flag; do
  case $flag in j) jobs=$OPTARG ;; d) device=$OPTARG ;; o) out=$OPTARG ;; l) logs=$OPTARG ;; n) dry=1 ;;
    *) echo "usage: $0 [-j JOBS] [-d DEVICE] [-o OUT] [-l LOGS]" >&2; exit 2 ;; esac
done
common="--steps 50000 --recon-scale 4 --data-option samples=0"
specs=()
for seed in 0 1 2; do
  specs+=("vae dsprites $seed $common" "betavae dsprites $seed $common" "betatcvae dsprites $seed $common")
done
for seed in 0 1; do
  for beta in 2 8 16; do specs+=("betavae dsprites $seed $common --set beta=$beta --name betavae-b$beta"); done
  specs+=("factorvae dsprites $seed $common" "lvae dsprites $seed $common" "ae dsprites $seed $common"
          # L-VAE's dSprites set point; the plain ELBO holds about 19 nats here, so β may exceed 1
          "controlvae dsprites $seed $common --set kl_set=18 --set beta_max=10 --name controlvae-kl18"
          # the categorical for the 3 shapes: its capacity at log 3 nats, the most a 3-way KL can be
          "jointvae dsprites $seed $common --set categorical_dim=3 --set capacity_c_max=1.0986 --name jointvae-c3")
done
if [ "$dry" = 1 ]; then printf '%s\n' "${specs[@]}"; exit 0; fi
exec "$root/scripts/train_many.sh" -j "$jobs" -d "$device" -o "$out" -l "$logs" "${specs[@]}"

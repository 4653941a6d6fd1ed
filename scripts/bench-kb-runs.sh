#!/usr/bin/env bash
# The HPO knowledge-base runs of docs/results-kb.md: defaults, both C-IP objectives, and a
# small sweep over the differential size K, the differential itself (world seed) and the
# number of test games. About 15-30 minutes on a shared 2-core machine. Reports under
# ${OUT:-var/kb}/<run>/report.{json,md}.
set -euo pipefail
OUT=${OUT:-var/kb}
P=cip,cip-nominal,ip,random
run() { name=$1; shift; echo "== $name"; .venv/bin/pursuit bench-kb --kb hpo --policies "$P" --out "$OUT/$name" "$@"; }
# Defaults: K 15, world seed 0, 1000 test + 500 calibration games, budget 15, alpha 0.1.
run default-set_size --objective set_size
run default-entropy_bound --objective entropy_bound
# K sweep (world seed 0).
run k10-set_size --candidates 10 --objective set_size
run k20-set_size --candidates 20 --objective set_size
# Other differentials at K 15.
run world1-set_size --world-seed 1 --objective set_size
run world2-set_size --world-seed 2 --objective set_size
# Fewer games (the interval widths at G 300).
run g300-set_size --games 300 --calibration-games 300 --objective set_size
# The question choice without the stop rule (every game to the budget: fixed-step pairs).
run default-nostop-set_size --objective set_size --no-early-stop
# A patient closer to the model (no ancestor reports, background findings or unsure
# answers; the per-finding frequencies still differ from the model's one sensitivity).
run cleaner-patient-set_size --objective set_size --ancestor-rate 0 --false-positive 0 --unsure-rate 0

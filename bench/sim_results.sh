#!/usr/bin/env bash
# Regenerates bench/results/sim.md: the paper preset replayed on the WITS trace (when it is
# beside the repository) and the replay speed. Usage: bash bench/sim_results.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
wits=../shared/traces/wits_logs.txt
out=bench/results/sim.md
run() { echo '```'; echo "\$ $*"; "$@"; echo '```'; echo; }
{
  echo "# Simulator results"
  echo
  echo "Made by \`bash bench/sim_results.sh\` on $(nproc) cores, $(date -u +%Y-%m-%d)."
  echo
  if [ -f "$wits" ]; then
    echo "## Paper preset, first 400 epochs of the WITS trace (the paper's replay)"
    echo
    run $bin/serflow simulate -f preset:paper --trace "$wits" --epochs 400 --plot bench/results/paper-wits-400.png
    echo "## The same, routed as the operator routes (Envoy's split, worker budgets)"
    echo
    run $bin/serflow simulate -f preset:paper --trace "$wits" --epochs 400 --routing envoy
    echo "## Paper preset, the whole WITS trace"
    echo
    run $bin/serflow simulate -f preset:paper --trace "$wits"
  else
    echo "(the WITS trace was not beside the repository: synthetic trace only)"
    echo
  fi
  echo "## Paper preset, synthetic bursty trace (seed 0, 5000 epochs)"
  echo
  run $bin/serflow simulate -f preset:paper --trace synthetic --epochs 5000
  echo "## Speed: 45,000 epochs, every policy, CPU seconds (best of 5)"
  echo
  run $bin/python bench/sim_speed.py
} > "$out"
sed -i "s#$wits#../shared/traces/wits_logs.txt#g" "$out"
echo "wrote $out"

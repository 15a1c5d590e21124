#!/usr/bin/env bash
# `serflow plan` on each shipped profile (the digits VGG, the digits ResNet and the sequence
# model) at a low and a high steady rate; writes bench/results/runtime-plan.md.
# Usage: bash bench/runtime_plan.sh   (after `make venv`)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
out=bench/results/runtime-plan.md
{
    echo "# \`serflow plan\` on the shipped profiles"
    echo
    echo "Made by \`bash bench/runtime_plan.sh\` on $(date -u +%Y-%m-%d). Each profile was written by"
    echo
    echo '```'
    echo 'serflow-runtime profile --artefact NAME --batch 100 --taus 0.5,0.7,0.85,0.95,0.99,0.999 --config c6i.large --config c6i.xlarge --config fn-2048 --config fn-4096 --repeats 7 --name NAME --out images/serflow_runtime/profiles/NAME.yaml'
    echo '```'
    echo
    echo "(ONNX Runtime, the images' runtime; the measurements and what was assumed are in each"
    echo "profile's annotations). Top of each candidate table and the choice; the full table lists"
    echo "every tau and setup."
    for name in digits-vgg16-w025 digits-resnet seq-chatterbot-langid-transformer; do
        for rate in 20 5000; do
            f="images/serflow_runtime/profiles/$name.yaml"
            echo
            echo "## \`serflow plan -f $f --rate $rate\`"
            echo
            echo '```'
            "$BIN/serflow" plan -f "$f" --rate "$rate" | awk 'NR <= 24 || /^Chosen/ { print } NR == 25 { print "..." }'
            echo '```'
        done
    done
} > "$out"
echo "wrote $out"

#!/usr/bin/env bash
# The offline proof of models/tools/edgeclip_tools/cli.py on real CLIP architectures, with random
# weights (nothing is downloaded): export (OpenCLIP ViT-B/32, MobileCLIP2-S0, TinyCLIP through
# transformers, OpenAI CLIP through transformers, timm's MobileCLIP-S0 image tower), quantize,
# distill (from the demo bundle and from a random TinyCLIP), and the refusals. Every bundle ends
# with `python3 -m edgeclip_tools check` (the edgeclip binary against onnxruntime); the script stops at the
# first failure. A developer check, not part of `cargo test`.
#
#   cargo build --release                      # the binary the checks run
#   python3 -m edgeclip_tools.demo eval          # the image folder (target/demo-eval), if missing
#   models/tools/check_real_clips.sh           # about 20 min on 2 cores; ~3 GB in target/bundles/
#
# EDGECLIP=path/to/edgeclip and EVAL=image-folder override the defaults.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/models/tools${PYTHONPATH:+:$PYTHONPATH}"  # python3 -m edgeclip_tools

export HF_HUB_OFFLINE=1 # use the built-in Hugging Face configs, the same on every machine
export EDGECLIP="${EDGECLIP:-${CARGO_TARGET_DIR:-target}/release/edgeclip}"
EVAL="${EVAL:-target/demo-eval}"
O=target/bundles
P=models/tools/camera-prompts.txt
T="nice -n 10 python3 -m edgeclip_tools"

[ -x "$EDGECLIP" ] || { echo "no edgeclip binary at $EDGECLIP: cargo build --release (or set EDGECLIP)"; exit 1; }
[ -d "$EVAL" ] || { echo "no image folder $EVAL: python3 -m edgeclip_tools.demo eval (or set EVAL)"; exit 1; }
mkdir -p "$O"
step() { echo; echo "=== $*"; }

step "OpenCLIP ViT-B/32 (laion2b_s34b_b79k's preprocessing)"
$T export --openclip ViT-B-32 --pretrained laion2b_s34b_b79k --random-init --prompts $P --out $O/openclip-vitb32-random
$T quantize --bundle $O/openclip-vitb32-random --out $O/openclip-vitb32-random-int8

step "MobileCLIP2-S0 (open_clip: timm fastvit_mci0 image tower + CLIP text transformer)"
$T export --mobileclip 2-S0 --random-init --prompts $P --out $O/mobileclip2-s0-random
$T quantize --bundle $O/mobileclip2-s0-random --out $O/mobileclip2-s0-random-int8

step "TinyCLIP ViT-8M/16 (transformers)"
$T export --tinyclip ViT-8M-16-Text-3M-YFCC15M --random-init --prompts $P --out $O/tinyclip-8m-random
$T quantize --bundle $O/tinyclip-8m-random --calib "$EVAL" --n-calib 16 --n-eval 8 --out $O/tinyclip-8m-random-int8

step "OpenAI CLIP ViT-B/32 (transformers)"
$T export --hf openai/clip-vit-base-patch32 --random-init --prompts $P --out $O/hf-openai-vitb32-random

step "timm fastvit_mci0.apple_mclip (MobileCLIP-S0's image tower alone)"
$T export --timm fastvit_mci0.apple_mclip --random-init --out $O/timm-mci0-random

step "distill: demo-conv student of the demo bundle"
$T distill --teacher models/demo --images "$EVAL" --arch demo-conv --steps 1200 --views 6 --log-every 200 \
    --out $O/demo-student
$T quantize --bundle $O/demo-student --calib "$EVAL" --out $O/demo-student-int8

step "distill: demo-conv student of the random TinyCLIP"
$T distill --teacher $O/tinyclip-8m-random --images "$EVAL" --arch demo-conv --size 128 --views 3 --steps 500 \
    --out $O/tinyclip-student

step "refusals (each must fail with a reason)"
for args in "--openclip ViT-B-16-SigLIP" "--openclip xlm-roberta-base-ViT-B-32" "--mobileclip S0"; do
    if $T export $args --random-init --out $O/refused 2>&1 | tail -1; then
        echo "export $args was not refused"; exit 1
    fi
done

step "ok"
du -sh $O/* | sort -k2

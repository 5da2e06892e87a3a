#!/usr/bin/env bash
# The demo student's image tower as dynamic int8, measured the way the model card measures the
# shipped static (QDQ) int8: accuracy with edgeclip on the evaluation set, speed with edgeclip's
# `bench` on this x86 and instructions on emulated Cortex cores (benches/INT8.md part D).
#
#   bash models/tools/demo_int8_dynamic.sh [X86_EDGECLIP] [AARCH64_EDGECLIP]
#
# Writes a scratch copy of models/demo to target/demo-int8-dynamic/ with one more image variant,
# visual.int8-dynamic.onnx: onnxruntime quantize_dynamic of the shipped visual.fp32.onnx
# (bundle_tools.make_int8_dynamic, QInt8 weights, ConvInteger / MatMulInteger; no calibration).
# The shipped bundle is not touched: with this variant it would weigh 15.7 MB, over the 15 MB
# budget. Needs the evaluation set (`python3 models/tools/demo.py eval` writes target/demo-eval/),
# an x86 release build and an aarch64 release build (cross/build.sh aarch64).
set -euo pipefail
cd "$(dirname "$0")/../.."
x86=${1:-target/release/edgeclip}
arm=${2:-target/aarch64-unknown-linux-gnu/release/edgeclip}
dir=target/demo-int8-dynamic
rm -rf "$dir"
cp -r models/demo "$dir"
python3 - "$dir" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "models/tools")
import bundle_tools as bt
d = Path(sys.argv[1])
bt.make_int8_dynamic(d / "visual.fp32.onnx", d / "visual.int8-dynamic.onnx")
EOF
cat >> "$dir/bundle.toml" <<'EOF'

[[image.variants]]
onnx = "visual.int8-dynamic.onnx"
precision = "int8-dynamic"
EOF
"$x86" info --model "$dir" | grep -i variant
echo "## accuracy (edgeclip classify, 48 colour-shape prompts)"
for p in int8-dynamic int8-qdq fp32; do
  python3 models/tools/score_rust.py --bin "$x86" --model "$dir" --precision "$p"
done
echo "## x86: edgeclip bench, 1 thread, 500 runs"
for p in int8-dynamic int8-qdq fp32; do
  "$x86" bench --model "$dir" --precision "$p" --threads 1 --iters 500 --json
done
echo "## emulated Arm cores: instructions per inference"
ARM_INSN_CPUS="cortex-a76 cortex-a72" bash benches/arm-insn.sh "$arm" \
  "$dir:fp32" "$dir:int8-dynamic" "$dir:int8-qdq"

#!/usr/bin/env bash
# The demo student's image tower in the int8 forms that run on tract's integer kernels,
# measured the way the model card measures the shipped static (QDQ) int8: accuracy with edgeclip
# on the evaluation set, speed with edgeclip's `bench` on this x86 and instructions on emulated
# Cortex cores (benches/INT8.md parts D and E).
#
#   bash models/tools/demo_int8_integer.sh [X86_EDGECLIP] [AARCH64_EDGECLIP]
#
# Writes three scratch copies of models/demo, each with one more image variant:
# - target/demo-int8-dynamic/: visual.int8-dynamic.onnx, onnxruntime quantize_dynamic of the
#   shipped visual.fp32.onnx (bundle_tools.make_int8_dynamic, QInt8 weights, ConvInteger /
#   MatMulInteger; no calibration);
# - target/demo-int8-static/: visual.int8-static.onnx, the same file with each
#   DynamicQuantizeLinear replaced by a QuantizeLinear calibrated (min / max) on the 100 scenes
#   demo.py's export calibrates the QDQ file on (bundle_tools.make_int8_static_integer);
# - target/demo-int8-static-fc/: the same with the first convolution left in float (the best
#   of quant_recipes.py's static-integer rows on its validation frames).
#   The runtime knows no precision name for this form, and a precision is only the label by
#   which it picks a file (how a file runs does not depend on it), so this copy lists it under
#   "int8-dynamic", the label of the integer-kernel form: `--precision int8-dynamic` selects it.
# The shipped bundle is not touched: with either variant it would weigh 15.7 MB, over the 15 MB
# budget. Needs the evaluation set (`python3 models/tools/demo.py evalset` writes target/demo-eval/),
# an x86 release build and an aarch64 release build (cross/build.sh aarch64).
set -euo pipefail
cd "$(dirname "$0")/../.."
x86=${1:-target/release/edgeclip}
arm=${2:-target/aarch64-unknown-linux-gnu/release/edgeclip}
dyn=target/demo-int8-dynamic
static=target/demo-int8-static
fc=target/demo-int8-static-fc
rm -rf "$dyn" "$static" "$fc"
for d in "$dyn" "$static" "$fc"; do cp -r models/demo "$d"; done
python3 - "$dyn" "$static" "$fc" <<'PY'
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, "models/tools")
import bundle_tools as bt
import demo
dyn, static, fc = (Path(p) for p in sys.argv[1:4])
cal = demo._Calib(0, 100)  # demo.py export's calibration scenes (seed 0, 100 scenes)
x = np.concatenate([f["pixel_values"] for f in iter(cal.get_next, None)])
bt.make_int8_dynamic(dyn / "visual.fp32.onnx", dyn / "visual.int8-dynamic.onnx")
bt.make_int8_dynamic(fc / "visual.fp32.onnx", fc / "visual.int8-dynamic-fc.onnx",
                     exclude=["/features/features.0/Conv"])
for src, dst in ((dyn / "visual.int8-dynamic.onnx", static / "visual.int8-static.onnx"),
                 (fc / "visual.int8-dynamic-fc.onnx", fc / "visual.int8-static.onnx")):
    print(dst)
    for name, (scale, zp) in bt.make_int8_static_integer(src, dst, "pixel_values", x).items():
        print(f"  {name}: scale {scale:.5f}, zero point {zp}")
(fc / "visual.int8-dynamic-fc.onnx").unlink()
PY
printf '\n[[image.variants]]\nonnx = "visual.int8-dynamic.onnx"\nprecision = "int8-dynamic"\n' >> "$dyn/bundle.toml"
for d in "$static" "$fc"; do
  printf '\n[[image.variants]]\nonnx = "visual.int8-static.onnx"\nprecision = "int8-dynamic"\n' >> "$d/bundle.toml"
done
echo "## accuracy (edgeclip classify, 48 colour-shape prompts)"
for m in "$dyn:int8-dynamic" "$static:int8-dynamic" "$fc:int8-dynamic" "$dyn:int8-qdq" "$dyn:fp32"; do
  python3 models/tools/score_rust.py --bin "$x86" --model "${m%:*}" --precision "${m##*:}"
done
echo "## x86: edgeclip bench, 1 thread, 500 runs (the int8 files also with TRACT_CPU_ISA=-avx2)"
for m in "$dyn:int8-dynamic" "$static:int8-dynamic" "$fc:int8-dynamic" "$dyn:int8-qdq" "$dyn:fp32"; do
  "$x86" bench --model "${m%:*}" --precision "${m##*:}" --threads 1 --iters 500 --json
done
for m in "$dyn:int8-dynamic" "$static:int8-dynamic" "$fc:int8-dynamic"; do
  TRACT_CPU_ISA=-avx2 "$x86" bench --model "${m%:*}" --precision "${m##*:}" --threads 1 --iters 500 --json
done
echo "## emulated Arm cores: instructions per inference"
ARM_INSN_CPUS="cortex-a76 cortex-a72" bash benches/arm-insn.sh "$arm" \
  "$dyn:fp32" "$dyn:int8-dynamic" "$static:int8-dynamic" "$fc:int8-dynamic" "$dyn:int8-qdq"

#!/usr/bin/env bash
# The demo student's image tower in each int8 form, measured the way the model card measures the
# shipped one: accuracy with edgeclip on the evaluation set, speed with edgeclip's `bench` on this
# x86 and instructions on emulated Cortex cores (benches/INT8.md parts D and E).
#
#   bash models/tools/demo_int8_integer.sh [X86_EDGECLIP] [AARCH64_EDGECLIP]
#
# Forms, all from the shipped visual.fp32.onnx and calibrated (where they are) on the 100 scenes
# edgeclip_tools.demo export calibrates on:
# - int8-static, first convolution in float: the shipped visual.onnx (edgeclip_tools.demo.export.quantize_visual);
# - int8-static, every convolution quantized: target/demo-int8-static-whole/ (a copy of the
#   bundle with that file as its visual.onnx);
# - int8-dynamic (bundle_tools.make_int8_dynamic: QInt8 weights, ConvInteger / MatMulInteger, no
#   calibration) and int8-qdq (export.quantize_visual_qdq: the QDQ file shipped until part E):
#   target/demo-int8-forms/, a copy of the bundle with both as extra variants;
# - fp32 (visual.fp32.onnx), for reference.
# The shipped bundle is not touched. Needs the evaluation set (`python3 -m edgeclip_tools.demo
# evalset` writes target/demo-eval/), an x86 release build and an aarch64 release build
# (cross/build.sh aarch64).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/models/tools${PYTHONPATH:+:$PYTHONPATH}"  # python3 -m edgeclip_tools
x86=${1:-target/release/edgeclip}
arm=${2:-target/aarch64-unknown-linux-gnu/release/edgeclip}
forms=target/demo-int8-forms
whole=target/demo-int8-static-whole
rm -rf "$forms" "$whole"
cp -r models/demo "$forms"
cp -r models/demo "$whole"
python3 - "$forms" "$whole" <<'PY'
import sys
from pathlib import Path
from edgeclip_tools import bundle_tools as bt
from edgeclip_tools.demo.common import bundle_input_size
from edgeclip_tools.demo.export import calibration_inputs, quantize_visual, quantize_visual_qdq
forms, whole = Path(sys.argv[1]), Path(sys.argv[2])
fp32 = str(forms / "visual.fp32.onnx")
size = bundle_input_size(str(forms))
bt.make_int8_dynamic(Path(fp32), forms / "visual.int8-dynamic.onnx")
quantize_visual_qdq(fp32, str(forms / "visual.int8-qdq.onnx"), 0, 100, size)
ranges = quantize_visual(fp32, str(whole / "visual.onnx"), calibration_inputs(0, 100, size),
                         float_nodes=None)
for name, (scale, zp) in ranges.items():
    print(f"  {name}: scale {scale:.5f}, zero point {zp}")
PY
printf '\n[[image.variants]]\nonnx = "visual.int8-dynamic.onnx"\nprecision = "int8-dynamic"\n' >> "$forms/bundle.toml"
printf '\n[[image.variants]]\nonnx = "visual.int8-qdq.onnx"\nprecision = "int8-qdq"\n' >> "$forms/bundle.toml"
towers=(models/demo:int8-static "$whole:int8-static" "$forms:int8-dynamic" "$forms:int8-qdq" models/demo:fp32)
echo "## accuracy (edgeclip classify, 48 colour-shape prompts)"
for m in "${towers[@]}"; do
  python3 -m edgeclip_tools.demo.score_rust --bin "$x86" --model "${m%:*}" --precision "${m##*:}"
done
# On an x86 with AVX-512 / VNNI / AMX, tract's instruction-set knob also gives what an
# AVX2 + FMA x86 (no VNNI: AMD Zen 3, Intel before Ice Lake) dispatches, and, with -avx2 on top,
# the AVX kernels tract falls back to without AVX2.
no_vnni=-avx512f,-avx512vnni,-avx512fp16,-avxvnni,-amx-int8,-amx-bf16
echo "## x86: edgeclip bench, 1 thread, 500 runs: this CPU; TRACT_CPU_ISA=$no_vnni; and ,-avx2"
for isa in "" "$no_vnni" "$no_vnni,-avx2"; do
  for m in "${towers[@]}"; do
    echo "TRACT_CPU_ISA=$isa ${m%:*} ${m##*:}"
    TRACT_CPU_ISA=$isa "$x86" bench --model "${m%:*}" --precision "${m##*:}" --threads 1 --iters 500 --json
  done
done
echo "## emulated Arm cores (the boards' cache geometry): instructions per inference"
ARM_INSN_CPUS="cortex-a76 cortex-a72" bash benches/arm-insn.sh "$arm" "${towers[@]}"

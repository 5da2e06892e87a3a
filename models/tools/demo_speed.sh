#!/usr/bin/env bash
# Speed of the demo's image towers under edgeclip (tract), for the model card (issue 6):
# the shipped int8 student, the fp32 student and the teacher (not shipped; `edgeclip_tools.demo export`
# writes its image tower to target/demo-train/teacher_visual.onnx).
#
#   bash models/tools/demo_speed.sh [X86_EDGECLIP] [AARCH64_EDGECLIP]
#
# x86: `edgeclip bench`, 1 thread, 500 timed runs -> target/demo-train/speed_x86.jsonl.
# ARM: instructions per inference on an emulated Cortex-A76 (benches/arm-insn.sh, which runs
# ../shared/tools/arm-insn-count) -> target/demo-train/speed_arm.md.
# Then `python3 -m edgeclip_tools.demo card` puts both into models/demo/MODEL_CARD.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
x86=${1:-target/release/edgeclip}
arm=${2:-target/aarch64-unknown-linux-gnu/release/edgeclip}
work=target/demo-train
teacher=$work/teacher-bundle
# the teacher's image tower in a copy of the demo bundle, in the fp32 slot, at the teacher's input
# size (edgeclip_tools.demo's SIZE; the student's may be larger)
rm -rf "$teacher"
cp -r models/demo "$teacher"
cp "$work/teacher_visual.onnx" "$teacher/visual.fp32.onnx"
sed -i 's/^height = .*/height = 96/; s/^width = .*/width = 96/' "$teacher/bundle.toml"
towers=(models/demo:int8-static models/demo:fp32 "$teacher:fp32")
for t in "${towers[@]}"; do
  "$x86" bench --model "${t%:*}" --precision "${t##*:}" --threads 1 --iters 500 --json
done > "$work/speed_x86.jsonl"
ARM_INSN_CPUS=cortex-a76 bash benches/arm-insn.sh "$arm" "${towers[@]}" > "$work/speed_arm.md"
cat "$work/speed_x86.jsonl" "$work/speed_arm.md"

#!/usr/bin/env bash
# The demo model's teacher and student candidates trained on a GPU, in one device call of under
# 10 minutes (data on the machine's cores, teacher and students with edgeclip_tools.demo --device cuda).
# Status: prepared and dry-run on a CPU with tiny counts; NOT yet run on a GPU (session 8 was
# refused a machine). What it brings back under $OUT (8 files at most):
#   explore.log    every step's log (versions, data hashes, the students' quick-val accuracy)
#   teacher.pt     the teacher (seed 0, edgeclip_tools.demo defaults)
#   students1.tar  students a (10,000 steps), b (10,000 steps, caption weight 1.0), c (5,000
#                  steps: the committed recipe) + their time files
#   student_d.pt   15,000 steps, if it finishes in time
#   meta.tar       data / teacher / student time files
# Student a is trained twice (a, a2) to check that a GPU run is repeatable (weights compared).
# The shipped bundle stays CPU-trained; these are candidates for the next recipe: export and
# score one here with `edgeclip_tools.demo export --tag _a` / `eval --tag _a` after copying it into
# target/demo-train/ (rename to student_a.pt, teacher.pt -> teacher_a.pt).
#
# Before the call, on this machine (the GPU machine has no open_clip and no network):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 -d .whl \
#     open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.7.0
# Then: run(command="bash models/tools/demo_gpu.sh", carry=[".whl"], timeout_s=595); carry
# target/gpu-kit too (benches/gpu/prepare.sh) to run the CUDA check of the shipped bundle
# (benches/gpu/run.sh, steps 2-7) in the background, brought back as gpu.tar.
# A dry run on a CPU, in a scratch copy of the repository (it writes target/demo-train/):
#   TINY=1 DEVICE=cpu EXTRA="--train-dtype fp32" OUT=/tmp/out bash models/tools/demo_gpu.sh
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
L=$OUT/explore.log
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
stamp() { echo "[$(el)s] $*" | tee -a "$L"; }
D="python3 -m edgeclip_tools.demo"
# TINY=1: tiny counts (a dry run); DEVICE=cpu; EXTRA: more edgeclip_tools.demo flags for training
EXTRA="--device ${DEVICE:-cuda} ${EXTRA:-}"
if [ -n "${TINY:-}" ]; then
  DATA="--teacher-groups 16 --student-scenes 64"; TSTEPS="--teacher-steps 3"; K=1000
else
  DATA=""; TSTEPS=""; K=1
fi
W=$ROOT/target/demo-train

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$ROOT/models/tools || { stamp "wheels failed"; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$L"
python3 -c 'import torch, numpy, PIL, skimage, scipy, onnx, onnxruntime, open_clip
print("versions: torch", torch.__version__, "numpy", numpy.__version__, "pillow", PIL.__version__,
      "skimage", skimage.__version__, "scipy", scipy.__version__, "onnx", onnx.__version__,
      "ort", onnxruntime.__version__, "open_clip", open_clip.__version__, "cuda", torch.cuda.is_available())' >> "$L" 2>&1
nproc >> "$L"

stamp "smoke (tiny counts, a copy of models/ in /tmp/smk)"
rm -rf /tmp/smk && mkdir -p /tmp/smk && cp -r models /tmp/smk/
( cd /tmp/smk && export PYTHONPATH=/tmp/site:/tmp/smk/models/tools && S="python3 -m edgeclip_tools.demo" &&
  $S data --seed 0 --teacher-groups 16 --student-scenes 64 &&
  $S teacher --seed 0 --teacher-steps 3 $EXTRA && $S student --seed 0 --student-steps 3 $EXTRA ) >> "$L" 2>&1 \
  || { stamp "SMOKE FAILED"; tail -30 "$L"; exit 3; }
stamp "smoke ok"

$D data --seed 0 $DATA >> "$L" 2>&1 || { stamp "data failed"; tail -20 "$L"; exit 4; }
( cd "$W" && sha256sum teacher_imgs.npy student_imgs_*.npy teacher_objs.json student_objs_*.json ) >> "$L"
stamp "data done"

if [ -f target/gpu-kit/edgeclip.xz ]; then
  ( EDGECLIP_GPU_STEPS=234567 OUT=/tmp/gpuout timeout 400 bash benches/gpu/run.sh > /tmp/gpucheck.log 2>&1
    echo "gpu check rc $?" >> /tmp/gpucheck.log ) &
  GP=$!
fi

$D teacher --seed 0 $TSTEPS $EXTRA 2>&1 | sed -u 's/^/[teacher] /' >> "$L"
[ -f "$W/teacher.pt" ] || { stamp "teacher failed"; tail -20 "$L"; exit 5; }
cp "$W/teacher.pt" "$OUT/"
T=$(el)
stamp "teacher done"

student() {  # tag, flags...
  local tag=$1; shift
  timeout $(( 580 - $(el) )) $D student --seed 0 --tag "$tag" $EXTRA "$@" 2>&1 | sed -u "s/^/[$tag] /" >> "$L"
}
for t in _a _a2 _b _c _d; do cp "$W/teacher.pt" "$W/teacher$t.pt"; done
student _a --student-steps $(( 10000 / K )) & PA=$!
student _a2 --student-steps $(( 10000 / K )) & PA2=$!
PIDS="$PA $PA2"
if [ "$T" -lt 300 ]; then
  student _b --student-steps $(( 10000 / K )) --label-weight 1.0 & PIDS="$PIDS $!"
  student _c --student-steps $(( 5000 / K )) & PIDS="$PIDS $!"
  timeout $(( 555 - T )) $D student --seed 0 --tag _d --student-steps $(( 15000 / K )) $EXTRA 2>&1 | sed -u 's/^/[_d] /' >> "$L" &
  PD=$!
fi
wait $PIDS
stamp "students a, a2, b, c done"
python3 -c 'import sys, torch
a, b = (torch.load(p, map_location="cpu") for p in sys.argv[1:])
same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
print("student_a vs student_a2 (same run twice): weights", "IDENTICAL" if same else "DIFFER",
      max(float((a[k].float() - b[k].float()).abs().max()) for k in a))' "$W/student_a.pt" "$W/student_a2.pt" 2>&1 | tee -a "$L"
( cd "$W" && tar cf "$OUT/students1.tar" student_a.pt student_b.pt student_c.pt student_*_time.json 2>/dev/null )
[ -n "${PD:-}" ] && wait "$PD"
[ -f "$W/student_d.pt" ] && cp "$W/student_d.pt" "$OUT/"
( cd "$W" && tar cf "$OUT/meta.tar" data_time.json teacher_time.json student_*_time.json 2>/dev/null )
if [ -n "${GP:-}" ]; then
  wait "$GP"
  cp /tmp/gpucheck.log /tmp/gpuout/ 2>/dev/null
  tar cf "$OUT/gpu.tar" -C /tmp gpuout 2>/dev/null
  grep -E "^\[|rc " /tmp/gpucheck.log | tail -30
fi
stamp "all done"
grep -E "done in|step (4999|9999|14999)/|imgs.npy|objs.json|versions|FAIL|IDENTICAL|DIFFER" "$L" | tail -30

#!/usr/bin/env bash
# The GPU check of the CUDA path (issue 5), in one run of under 8 minutes on a machine with an
# NVIDIA GPU, in a copy of this repository, with the kit benches/gpu/prepare.sh builds
# (target/gpu-kit: the `cuda` release binary and the GPU test binary). No Rust, no network.
#
#   bash benches/gpu/prepare.sh                                   # on the build machine, first
#   run(command="bash benches/gpu/run.sh", carry=["target/gpu-kit"], timeout_s=540)
#
# Writes $OUT/report.md (the figures for benches/README.md), $OUT/results.jsonl, $OUT/steps.log
# and $OUT/logs.tar.gz (every command's output; OUT defaults to target/gpu-out), and prints the
# report. Steps, each bounded in time so that one hang cannot eat
# the others:
#   0. CUDA's libraries: pip's nvidia-* packages' lib folders (and the toolkit's, the driver's)
#      on LD_LIBRARY_PATH; CUDA_HOME for the headers NVRTC needs to compile tract's kernels.
#   1. in the background: the full-size random-weight ViT-B/32 bundle (fp32 + fp16), made with
#      PyTorch + transformers (models/tools/edgeclip_tools/make_vitb32.py; skipped when they are missing).
#   2. `edgeclip warmup` on an empty kernel cache: the first compile, timed.
#   3. the second start: `classify` of one image on the GPU, timed from process start (<= 5 s).
#   4. `classify --json` on clip frames, CPU against GPU.
#   5. the GPU tests (tests/gpu.rs, --include-ignored): per-image cosine GPU vs CPU >= 0.999
#      (demo and ViT-B/32), the daemon's events on the GPU vs the CPU, the kernel cache.
#   6. the daemon on the recorded clip, CPU and GPU side by side: events compared, stats lines.
#   7. latency: `edgeclip bench` and PyTorch (benches/gpu/torch_anchor.py), fp32 and fp16.
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/models/tools${PYTHONPATH:+:$PYTHONPATH}"  # the model tools (python3 -m edgeclip_tools...)
ROOT=$PWD
KIT=${EDGECLIP_GPU_KIT:-$ROOT/target/gpu-kit}
OUT=${OUT:-$ROOT/target/gpu-out}
WORK=$(mktemp -d /tmp/edgeclip-gpu.XXXXXX)
LOGS=$WORK/logs                # packed into $OUT/logs.tar.gz at the end ($OUT brings back 8 files)
mkdir -p "$OUT" "$LOGS"
KC=$WORK/kernel-cache          # empty: step 2 measures the first compile
VIT=$WORK/vit-b32
START=$(date +%s)
export RUST_LOG=${RUST_LOG:-info} PYTHONUNBUFFERED=1
# EDGECLIP_GPU_STEPS: which of the steps 1-7 to run (default all; "15": the ViT-B/32 bundle and
# the GPU tests only, for rerunning the tests). Step 0 always runs.
STEPS=${EDGECLIP_GPU_STEPS:-1234567}
want() { [[ $STEPS == *$1* ]]; }
: > "$OUT/results.jsonl"

log() { printf '[%4ss] %s\n' "$(( $(date +%s) - START ))" "$*" | tee -a "$OUT/steps.log"; }
record() { python3 -c 'import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))' "$@" >> "$OUT/results.jsonl"; }
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

# The kit's binaries travel xz-compressed: unpack them into the work folder.
for name in edgeclip gpu-tests; do
  [ -f "$KIT/$name.xz" ] || { echo "no $KIT/$name.xz: run benches/gpu/prepare.sh first and carry target/gpu-kit" >&2; exit 2; }
  python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.decompress(open(sys.argv[1], "rb").read()))' \
    "$KIT/$name.xz" "$WORK/$name" && chmod +x "$WORK/$name"
done
BIN=$WORK/edgeclip
TESTS=$WORK/gpu-tests
cat "$KIT/BUILD" 2>/dev/null | tee "$LOGS/kit.txt"

# --- 0. CUDA's libraries and headers ------------------------------------------------------------
sites=$(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
pip_libs=$(for s in $sites; do [ -d "$s/nvidia" ] && find "$s/nvidia" -maxdepth 3 -type d -name lib; done | sort -u)
libpath=$(printf '%s\n' $pip_libs /usr/local/cuda/lib64 /usr/local/nvidia/lib64 /usr/local/nvidia/lib |
  while read -r d; do [ -d "$d" ] && printf '%s:' "$d"; done)
export LD_LIBRARY_PATH=${libpath}${LD_LIBRARY_PATH:-}
log "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for lib in libcuda.so.1 libcudart.so.13 libnvrtc.so.13 libcublas.so.13 libcudnn.so.9; do
  found=$( (ldconfig -p | grep -o "/.*/$lib\$"; for d in ${LD_LIBRARY_PATH//:/ }; do ls "$d/$lib" 2>/dev/null; done) | head -n 1)
  log "  $lib: ${found:-NOT FOUND}"
done
# NVRTC compiles tract's kernels against the toolkit's headers (cuda_fp16.h, math_constants.h)
# and CCCL's (cuda/std/...): the toolkit's when there is one, else pip's include folders merged.
if [ -z "${CUDA_HOME:-}" ] || [ ! -f "$CUDA_HOME/include/cuda_fp16.h" ]; then
  if [ -f /usr/local/cuda/include/cuda_fp16.h ]; then
    export CUDA_HOME=/usr/local/cuda
  else
    mkdir -p "$WORK/cuda-home/include"
    for s in $sites; do
      [ -d "$s/nvidia" ] || continue
      find "$s/nvidia" -maxdepth 4 -type d -name include | while read -r inc; do
        cp -rsn "$inc/." "$WORK/cuda-home/include/" 2>/dev/null
      done
    done
    export CUDA_HOME=$WORK/cuda-home
  fi
fi
for h in cuda_fp16.h math_constants.h; do
  log "  $h: $(ls "$CUDA_HOME/include/$h" 2>/dev/null || echo NOT FOUND)"
done
cccl="NOT FOUND"
for c in "$CUDA_HOME/include/cccl" "$CUDA_HOME/include"; do [ -f "$c/cuda/std/cstdint" ] && { cccl=$c; break; }; done
log "  CCCL (cuda/std/cstdint): $cccl"
gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
log "GPU: ${gpu:-nvidia-smi failed}"
record step gpu name "${gpu:-unknown}"
if python3 -c 'import torch, transformers; assert torch.cuda.is_available()' 2>/dev/null; then
  torch_v=$(python3 -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}")')
  HAVE_TORCH=1
else
  torch_v="not installed (or sees no GPU): no ViT-B/32 bundle, no PyTorch anchor"
  HAVE_TORCH=0
fi
log "PyTorch: $torch_v"
record step torch status "$torch_v"

# --- 1. ViT-B/32 bundle, in the background ------------------------------------------------------
if want 1; then
if [ "$HAVE_TORCH" = 1 ]; then
  log "1. building the ViT-B/32 bundle in the background"
  (timeout 300 python3 -m edgeclip_tools.make_vitb32 --out "$VIT" --no-int8 --fp16 > "$LOGS/vit-bundle.log" 2>&1;
   echo $? > "$WORK/vit.rc") &
  VIT_PID=$!
fi

fi

# --- 2. warmup on an empty kernel cache -----------------------------------------------------------
if want 2; then
log "2. edgeclip warmup (empty kernel cache: compiles tract-cuda's kernels)"
t0=$(now)
timeout 300 "$BIN" warmup --model models/demo --kernel-cache "$KC" > "$LOGS/warmup-1.log" 2>&1
rc=$?; t1=$(now)
cat "$LOGS/warmup-1.log" | grep -v "Compiling" | tail -n 12
log "   first warmup: rc $rc, $(secs "$t0" "$t1") s"
record step warmup-first rc "$rc" seconds "$(secs "$t0" "$t1")"
t0=$(now)
timeout 120 "$BIN" warmup --model models/demo --kernel-cache "$KC" > "$LOGS/warmup-2.log" 2>&1
rc=$?; t1=$(now)
log "   second warmup: rc $rc, $(secs "$t0" "$t1") s"
record step warmup-second rc "$rc" seconds "$(secs "$t0" "$t1")"
mkdir -p "$KC"
find "$KC" -name '*.cubin' | sed "s|$KC/||" > "$LOGS/kernel-cache.txt"
cubins=$(wc -l < "$LOGS/kernel-cache.txt")
cubin_dir=$(head -n 1 "$LOGS/kernel-cache.txt" | xargs -r dirname)
log "   kernel cache: $cubins cubins under \$KC/$cubin_dir ($(du -sh "$KC" | cut -f1))"
record step kernel-cache cubins "$cubins" dir "<kernel cache>/$cubin_dir" size "$(du -sh "$KC" | cut -f1)"

fi

# --- 3. second start to first inference -----------------------------------------------------------
if want 3; then
log "3. second start: classify one frame on the GPU"
t0=$(now)
timeout 60 "$BIN" classify --model models/demo --runtime cuda --kernel-cache "$KC" --json \
  tests/data/clip/frame_0040.jpg > "$LOGS/second-start.json" 2> "$LOGS/second-start.log"
rc=$?; t1=$(now)
log "   process start to first result: rc $rc, $(secs "$t0" "$t1") s (target <= 5 s)"
[ "$rc" = 0 ] || tail -n 5 "$LOGS/second-start.log"
record step second-start rc "$rc" seconds "$(secs "$t0" "$t1")"

fi

# --- 4. classify: CPU vs GPU ------------------------------------------------------------------------
if want 4; then
log "4. classify --json on every 4th clip frame, CPU vs GPU"
frames=$(ls tests/data/clip/frame_*.jpg | awk 'NR % 4 == 1')
for p in default fp32; do
  prec=(); [ "$p" = fp32 ] && prec=(--precision fp32)
  for rt in cpu cuda; do
    timeout 120 "$BIN" classify --model models/demo --runtime $rt --kernel-cache "$KC" "${prec[@]}" --json $frames \
      > "$LOGS/classify-$rt-$p.jsonl" 2> "$LOGS/classify-$rt-$p.log"
  done
  python3 - "$LOGS/classify-cpu-$p.jsonl" "$LOGS/classify-cuda-$p.jsonl" "$p" >> "$OUT/results.jsonl" <<'EOF'
import json, sys
cpu = [json.loads(l) for l in open(sys.argv[1])]
gpu = [json.loads(l) for l in open(sys.argv[2])]
same = sum(a["top"]["prompt"] == b["top"]["prompt"] for a, b in zip(cpu, gpu))
diff = max((abs(x["score"] - y["score"]) for a, b in zip(cpu, gpu) for x, y in zip(a["scores"], b["scores"])), default=None)
print(json.dumps({"step": "classify", "precision": sys.argv[3], "images": len(cpu), "gpu_images": len(gpu),
                  "same_top1": same, "max_abs_score_diff": diff}))
EOF
  tail -n 1 "$OUT/results.jsonl"
done

fi

# The ViT-B/32 bundle (steps 5 and 7), when step 1 is building it.
if [ "${VIT_PID:-}" ]; then
  log "   waiting for the ViT-B/32 bundle"
  wait "$VIT_PID"
  log "   ViT-B/32 bundle: rc $(cat "$WORK/vit.rc" 2>/dev/null)"; tail -n 8 "$LOGS/vit-bundle.log"
fi
[ -f "$VIT/bundle.toml" ] || VIT=""

# --- 5. the GPU tests -------------------------------------------------------------------------------
if want 5; then
log "5. GPU tests (tests/gpu.rs --include-ignored)"
# The same kernel cache for the tests (tract-cuda reads XDG_CACHE_HOME) and the binary they run
# (its default kernel cache is the daemon's cache folder, $CACHE_DIRECTORY first).
EDGECLIP_ROOT=$ROOT EDGECLIP_BIN=$BIN EDGECLIP_GPU_BUNDLES=$VIT XDG_CACHE_HOME=$KC CACHE_DIRECTORY=$KC timeout 300 \
  "$TESTS" --include-ignored --test-threads 1 --nocapture > "$LOGS/gpu-tests.log" 2>&1
rc=$?
grep -E "^test |min cosine|against fp32|test result|panicked|kernel libraries|second load" "$LOGS/gpu-tests.log"
record step gpu-tests rc "$rc"
grep -E "min cosine|against fp32" "$LOGS/gpu-tests.log" | while read -r line; do record step cosine line "$line"; done

fi

# --- 6. the daemon on the clip, CPU and GPU -------------------------------------------------------
if want 6; then
log "6. the daemon on the recorded clip (15 fps replay), CPU and GPU side by side"
for rt in cpu cuda; do
  sed -e "s|\.\./|$ROOT/|g" -e "s|^runtime = .*|runtime = \"$rt\"\nkernel_cache = \"$KC\"|" \
    firmware-config/demo.toml > "$WORK/demo-$rt.toml"
  timeout 60 "$BIN" run --config "$WORK/demo-$rt.toml" --lossless > "$LOGS/daemon-$rt.jsonl" 2> "$LOGS/daemon-$rt.log" &
done
wait
python3 - "$LOGS/daemon-cpu.jsonl" "$LOGS/daemon-cuda.jsonl" >> "$OUT/results.jsonl" <<'EOF'
import json, sys
def events(p):
    out = []
    for line in open(p):
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("type") in ("start", "end"):
            out.append((e["type"], e["label"], e["frame"]))
    return out
cpu, gpu = events(sys.argv[1]), events(sys.argv[2])
print(json.dumps({"step": "daemon", "cpu_events": len(cpu), "gpu_events": len(gpu), "identical": cpu == gpu,
                  "cpu": cpu, "gpu": gpu}))
EOF
tail -n 1 "$OUT/results.jsonl"
grep -hE "runtime|loaded in|stats:|stopped" "$LOGS/daemon-cpu.log" "$LOGS/daemon-cuda.log" | cut -c1-220

fi

# --- 7. latency ---------------------------------------------------------------------------------------
if want 7; then
log "7. latency: edgeclip bench"
bench() { timeout 120 "$BIN" bench --json --kernel-cache "$KC" "$@" 2>> "$LOGS/bench.log" | tee -a "$OUT/results.jsonl"; }
bench --model models/demo --runtime cpu
bench --model models/demo --runtime cpu --precision fp32
bench --model models/demo --runtime cuda --precision fp32
bench --model models/demo --runtime cuda --precision fp16
if [ -n "$VIT" ]; then
  bench --model "$VIT" --runtime cuda --precision fp32
  bench --model "$VIT" --runtime cuda --precision fp16
  bench --model "$VIT" --runtime cpu --precision fp32 --threads "$(nproc)" --iters 20
fi
if [ "$HAVE_TORCH" = 1 ]; then
  log "   PyTorch anchor"
  skip=(); [ -n "$VIT" ] || skip=(--skip-vit)
  timeout 180 python3 benches/gpu/torch_anchor.py "${skip[@]}" 2> "$LOGS/torch.log" | tee -a "$OUT/results.jsonl"
fi

fi

grep -h "^error" "$LOGS/bench.log" "$LOGS/torch.log" 2>/dev/null | sort | uniq -c | head -n 5
python3 benches/gpu/report.py "$OUT/results.jsonl" > "$OUT/report.md"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
log "done in $(( $(date +%s) - START )) s"
cat "$OUT/report.md"

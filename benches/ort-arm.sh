#!/usr/bin/env bash
# onnxruntime's instructions per image-tower inference on emulated Cortex cores, beside tract's
# (issue 28 part 2).
#
#   bash benches/ort-arm.sh [MODEL_FILE:INPUT:OUTPUT:SIZE ...]
#
# Fetches onnxruntime's aarch64 manylinux wheel (ORT_VERSION, default: the version of the local
# Python onnxruntime, else 1.32.0) into target/ort-arm/ (ignored), takes libonnxruntime.so from
# it, cross-compiles benches/ort-arm/harness.c with aarch64-linux-gnu-gcc (installed with apt when
# missing) and runs it under ../shared/tools/arm-insn-count with N=1 and N=3 inferences, each with
# the cache geometry of the emulated core's Raspberry Pi (benches/board-cache.sh). (N=3 - N=1)/2
# is one inference; N=1 minus that is the load and the first run's set-up.
# Default models: the demo student's visual.onnx (int8-static) and visual.fp32.onnx, and the
# ViT-B/32 towers in target/models/vit-b32 (every visual*.onnx) when generated (models/tools/edgeclip_tools/make_vitb32.py).
# ARM_INSN_CPUS picks the emulated cores (default "cortex-a76 cortex-a72"). tract's counts for the
# same files come from benches/arm-insn.sh. Instruction counts are not time.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/board-cache.sh
work=target/ort-arm
count=${ARM_INSN_COUNT:-../shared/tools/arm-insn-count}
version=${ORT_VERSION:-$(python3 -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || echo 1.32.0)}
mkdir -p "$work"

lib=$work/aarch64-$version/libonnxruntime.so.$version
if [[ ! -f $lib ]]; then
  # The plain manylinux2014 tag alone finds only old releases (1.16.3): newer aarch64 wheels
  # are tagged manylinux_2_27 / 2_28.
  pip download -q --no-deps --only-binary=:all: --platform manylinux2014_aarch64 \
    --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
    "onnxruntime==$version" -d "$work/wheels"
  wheel=$(ls "$work"/wheels/onnxruntime-"$version"-*aarch64*.whl | head -n 1)
  mkdir -p "$(dirname "$lib")"
  python3 - "$wheel" "$(dirname "$lib")" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if os.path.basename(name).startswith("libonnxruntime.so"):
            with open(os.path.join(out, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
PY
fi
ln -sf "libonnxruntime.so.$version" "$(dirname "$lib")/libonnxruntime.so.1"

command -v aarch64-linux-gnu-gcc >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc-aarch64-linux-gnu >/dev/null
harness=$(dirname "$lib")/ort-harness
aarch64-linux-gnu-gcc -O2 -Wall -o "$harness" benches/ort-arm/harness.c \
  "$lib" -Wl,-rpath,'$ORIGIN'

models=("$@")
if ((${#models[@]} == 0)); then
  models=(models/demo/visual.onnx:pixel_values:image_embeds:128 models/demo/visual.fp32.onnx:pixel_values:image_embeds:128)
  for f in target/models/vit-b32/visual*.onnx; do
    [[ -f $f ]] && models+=("$f:pixel_values:image_embeds:224")
  done
fi
cpus=${ARM_INSN_CPUS:-cortex-a76 cortex-a72}
# onnxruntime reads the CPU's model from /proc/cpuinfo at start-up (pytorch's cpuinfo library), and
# qemu-user shows the host's x86 file, on which it dereferences a null pointer before main. Each
# run sees the emulated core's lines instead (a Pi's, one entry per CPU the host's /sys lists),
# bind-mounted in a private mount namespace. The instruction set onnxruntime's kernels pick from
# (SDOT or not) comes from the auxiliary vector, which qemu fills for the emulated core.
fake_cpuinfo() { # CPU FILE
  local part variant rev features n
  case $1 in
    cortex-a76) part=0xd0b variant=0x4 rev=1
      features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
    cortex-a72) part=0xd08 variant=0x0 rev=3 features="fp asimd evtstrm crc32 cpuid" ;;
    *) echo "ort-arm: no cpuinfo for $1" >&2; exit 2 ;;
  esac
  n=$(nproc --all)
  for ((i = 0; i < n; i++)); do
    printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
      "$i" "$features" "$variant" "$part" "$rev"
  done >"$2"
}
insns() { # CPU FILE INPUT OUTPUT SIZE N
  local info
  info=$(mktemp)
  fake_cpuinfo "$1" "$info"
  board_cache_run "$1" unshare -m --propagation private sh -c 'mount --bind "$1" /proc/cpuinfo && shift && exec "$@"' \
    sh "$info" "$count" --cpu "$1" -- "$harness" "$2" "$3" "$4" "$5" "$5" "$6" 2>&1 |
    sed -n 's/^arm-insn-count: .*insns=\([0-9]*\).*/\1/p'
  rm -f "$info"
}
echo "| model file | runtime | cpu | load + first-run set-up (M insns) | per inference (M insns) |"
echo "|---|---|---|---|---|"
for cpu in $cpus; do
  for m in "${models[@]}"; do
    IFS=: read -r file input output size <<<"$m"
    one=$(insns "$cpu" "$file" "$input" "$output" "$size" 1)
    three=$(insns "$cpu" "$file" "$input" "$output" "$size" 3)
    [[ -n $one && -n $three ]] || { echo "arm-insn-count failed on $file ($cpu)" >&2; exit 1; }
    awk -v f="$file" -v v="$version" -v c="$(board_cache_label "$cpu")" -v a="$one" -v b="$three" \
      'BEGIN { per = (b - a) / 2; printf "| %s | onnxruntime %s | %s | %.0f | %.2f |\n", f, v, c, (a - per) / 1e6, per / 1e6 }'
  done
done

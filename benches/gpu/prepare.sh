#!/usr/bin/env bash
# Builds the kit benches/gpu/run.sh needs on the GPU machine, which has no Rust toolchain and no
# network: the release binary and the GPU test binary (tests/gpu.rs), both with the `cuda` feature
# (CUDA 13.0), stripped and xz-compressed, in target/gpu-kit/ (ignored by git; the device run
# carries it).
#
#   bash benches/gpu/prepare.sh          # on an x86-64 build machine, from the repository
#
# Then, from a session lent a GPU (one call, under 8 minutes):
#   run(command="bash benches/gpu/run.sh", carry=["target/gpu-kit"], timeout_s=540)
#
# EDGECLIP_GPU_FEATURES picks another feature (cuda-12060 for a CUDA 12.6 machine).
set -euo pipefail
cd "$(dirname "$0")/../.."
features=${EDGECLIP_GPU_FEATURES:-cuda}
target_dir=${CARGO_TARGET_DIR:-target}
kit=target/gpu-kit

cargo build --release --features "$features" --bin edgeclip
# The test binary of the test profile (dependencies at opt-level 3, like the release build).
test_bin=$(cargo test --features "$features" --test gpu --no-run --message-format=json |
  python3 -c 'import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu"]
print(exe[-1])')

rm -rf "$kit"
mkdir -p "$kit"
# Stripped and xz-compressed: the working tree and the kit travel together under a 64 MiB limit.
for pair in "edgeclip:$target_dir/release/edgeclip" "gpu-tests:$test_bin"; do
  name=${pair%%:*}
  strip -o "$kit/$name" "${pair#*:}"
  [ "$name" = edgeclip ] && floor=$(objdump -T "$kit/$name" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)
  python3 -c 'import lzma, sys; open(sys.argv[1] + ".xz", "wb").write(lzma.compress(open(sys.argv[1], "rb").read()))' "$kit/$name"
  rm "$kit/$name"
done
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD || echo ' (with uncommitted changes)')"
  echo "features $features"
  echo "built $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m), $(ldd --version | head -n 1)"
  echo "glibc floor of edgeclip: $floor (the GPU machine's glibc must be at least that)"
} > "$kit/BUILD"
cat "$kit/BUILD"
du -sh "$kit"/*

# Sourced by benches/arm-insn.sh and benches/arm-profile.sh: run a qemu-user command with the CPU
# cache geometry of the board whose core it emulates.
#
# tract sizes the blocking of its matrix products from the caches it reads under
# /sys/devices/system/cpu/cpu0/cache and .../topology (tract-linalg 0.23.9, src/cache.rs). A
# program under qemu-user reads the *host's* /sys, so the same aarch64 binary counted on two
# build machines executed different instruction counts for the same model: the demo student's
# fp32 tower took 34.6 M instructions per inference on an emulated A76 on an AMD EPYC (32K L1d,
# 512K L2) and 31.3 M on a Xeon (48K L1d, 2M L2), while its int8 towers (not blocked by cache
# size) counted the same on both. board_cache_run puts the board's geometry in place of those
# two folders, in a private mount namespace (unshare -m: needs root or CAP_SYS_ADMIN), so a count
# depends on the binary, the model and the emulated core only:
#   cortex-a76: Raspberry Pi 5 (BCM2712): 64K L1d, 512K L2 per core, 2M L3 shared by the 4 cores
#   cortex-a72: Raspberry Pi 4 (BCM2711): 32K L1d, 1M L2 shared by the 4 cores, no L3
#   cortex-a53: Raspberry Pi 3 / Zero 2 (BCM2837): 16K L1d, 512K L2 shared by the 4 cores
#   (the A76 and A72 figures are the boards' published ones; the A53's L1d size was not checked
#   against a board, and no A53 count is reported anywhere yet)
# Another core, or no way to make a mount namespace: the host's geometry, with a warning, and
# board_cache_label says "host caches" so that the table shows it.

# board_cache_geometry CPU: prints "L1D L2 L2_SHARED L3" (sizes as in /sys; "-" for none), or
# nothing for a core with no board here.
board_cache_geometry() {
  case $1 in
    cortex-a76) echo "64K 512K 0 2048K" ;;
    cortex-a72) echo "32K 1024K 0-3 -" ;;
    cortex-a53) echo "16K 512K 0-3 -" ;;
  esac
}

board_cache_ok() {
  [[ -n $(board_cache_geometry "$1") ]] && unshare -m true 2>/dev/null
}

board_cache_label() {
  if board_cache_ok "$1"; then echo "$1"; else echo "$1 (host caches)"; fi
}

# board_cache_run CPU COMMAND [ARGS...]
board_cache_run() {
  local cpu=$1
  shift
  if ! board_cache_ok "$cpu"; then
    echo "board-cache: no board cache geometry for $cpu here (unknown core, or unshare -m refused);" \
      "counting with the host's caches, which tract's blocking depends on" >&2
    "$@"
    return
  fi
  local fake rc=0 l1 l2 l2_shared l3
  fake=$(mktemp -d)
  read -r l1 l2 l2_shared l3 < <(board_cache_geometry "$cpu")
  _board_cache_index "$fake/cache/index0" 1 Data "$l1" 0
  _board_cache_index "$fake/cache/index1" 1 Instruction "$l1" 0
  _board_cache_index "$fake/cache/index2" 2 Unified "$l2" "$l2_shared"
  [[ $l3 == - ]] || _board_cache_index "$fake/cache/index3" 3 Unified "$l3" 0-3
  mkdir -p "$fake/topology"
  echo 0 > "$fake/topology/thread_siblings_list"
  echo 0 > "$fake/topology/core_cpus_list"
  local cpu0=/sys/devices/system/cpu/cpu0
  unshare -m --propagation private sh -c \
    'mount --bind "$1/cache" "$2/cache" && mount --bind "$1/topology" "$2/topology" && shift 2 && exec "$@"' \
    sh "$fake" "$cpu0" "$@" || rc=$?
  rm -rf "$fake"
  return $rc
}

_board_cache_index() { # DIR LEVEL TYPE SIZE SHARED_CPU_LIST
  mkdir -p "$1"
  echo "$2" > "$1/level"
  echo "$3" > "$1/type"
  echo "$4" > "$1/size"
  echo "$5" > "$1/shared_cpu_list"
}

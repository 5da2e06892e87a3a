#!/usr/bin/env bash
# Checks that vendor/tract-core is tract-core 0.23.9 as published plus exactly
# vendor/tract-core-edgeclip.patch (and, with --write, rewrites the patch file from the tree).
#
#   bash vendor/check.sh [--write]
#
# The published crate is taken from cargo's registry cache, or downloaded from crates.io.
set -euo pipefail
cd "$(dirname "$0")"
version=0.23.9
pristine=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/tract-core-$version 2>/dev/null | head -n 1 || true)
if [[ -z $pristine ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  curl -fsSL "https://crates.io/api/v1/crates/tract-core/$version/download" | tar xz -C "$tmp"
  pristine=$tmp/tract-core-$version
fi
# The registry's unpack marker and lock file are not vendored.
diff_tree() {
  (cd "$pristine/.." && diff -ruN -x .cargo-ok -x Cargo.lock "$(basename "$pristine")" "$OLDPWD/tract-core") |
    grep -v '^diff ' |
    sed -E "s#^(---|\+\+\+) ([^\t]*)\t.*#\1 \2#; s#^(---|\+\+\+) [^ ]*/tract-core(-$version)?/#\1 tract-core/#" || true
}
if [[ ${1:-} == --write ]]; then
  diff_tree >tract-core-edgeclip.patch
  echo "wrote vendor/tract-core-edgeclip.patch ($(grep -c '^+++ ' tract-core-edgeclip.patch) files)"
elif diff -q <(diff_tree) tract-core-edgeclip.patch >/dev/null; then
  echo "vendor/tract-core = tract-core $version + tract-core-edgeclip.patch"
else
  echo "vendor/tract-core differs from tract-core $version + tract-core-edgeclip.patch:" >&2
  diff <(diff_tree) tract-core-edgeclip.patch | head -n 40 >&2
  exit 1
fi

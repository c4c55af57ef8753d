#!/usr/bin/env bash
# Build kplug as one static executable (glibc, static-pie), for the Dockerfile's scratch
# image and the init container of docs/kubernetes.md.
#
#   scripts/build-static.sh [--release | --link-only] [OUT]
#
# --release (default): every crate is compiled with `-C target-feature=+crt-static` for
#   the explicit host triple (so build scripts and proc macros stay dynamic). No musl
#   target needed: glibc links statically, and since glibc 2.34 its `files` and `dns`
#   name lookups are built in. Takes minutes (about 8 CPU-minutes here).
# --link-only: links the already compiled dev build statically (seconds): the same code
#   the tests run, which the test command then runs in a read-only, shell-less root.
#
# Prints the path of the binary (default OUT: $CARGO_TARGET_DIR/static/kplug, target/…).
set -euo pipefail
cd "$(dirname "$0")/.."

target=${CARGO_TARGET_DIR:-target}
mode=release
out=$target/static/kplug
for a in "$@"; do
  case $a in
    --release) mode=release ;;
    --link-only) mode=link-only ;;
    -*) echo "usage: $0 [--release|--link-only] [OUT]" >&2; exit 2 ;;
    *) out=$a ;;
  esac
done

triple=$(rustc -vV | sed -n 's/^host: //p')
case $mode in
  release)
    RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
      cargo build --release --locked --target "$triple" --bin kplug >&2
    built=$target/$triple/release/kplug
    ;;
  link-only)
    # Only the bin crate is compiled again; its dependencies are the dev build's. Cargo
    # keeps this link under its own name, so the next plain build puts the dynamic one back.
    cargo rustc --locked --bin kplug -- -C target-feature=+crt-static >&2
    built=$target/debug/kplug
    ;;
esac

# Static means: no program interpreter and no shared libraries.
if readelf -lW "$built" | grep -q 'Requesting program interpreter' ||
  readelf -dW "$built" | grep -q '(NEEDED)'; then
  echo "$built is not static:" >&2
  readelf -dW "$built" | grep NEEDED >&2 || true
  exit 1
fi
mkdir -p "$(dirname "$out")"
cp "$built" "$out.tmp"
mv "$out.tmp" "$out"
if [[ $mode == link-only ]]; then
  cargo build --locked --bin kplug >&2
fi
echo "$out"

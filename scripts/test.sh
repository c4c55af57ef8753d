#!/usr/bin/env bash
# THE test command: installs the test tools that are missing, then runs every
# test (nextest prints the summary CI reads). Extra arguments go to nextest,
# e.g. scripts/test.sh -E 'test(push)'.
set -euo pipefail
cd "$(dirname "$0")/.."

# binary -> Debian package
tools=(
  docker-registry:docker-registry
  htpasswd:apache2-utils
  curl:curl
  openssl:openssl
  python3:python3
  luajit:luajit
  skopeo:skopeo
  readelf:binutils
  kubectl:kubernetes-client
  unshare:util-linux
  python3:python3
  pip3:python3-pip
  luarocks:luarocks
  zip:zip
  unzip:unzip
)
missing=()
for t in "${tools[@]}"; do
  command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    sudo=()
  elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "missing packages: ${missing[*]} (not root and no sudo)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# tests/k8s/check.py validates the YAML of `kplug k8s` against Kubernetes' schemas.
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing: kubernetes-validate (PyPI)" >&2
  python3 -m pip install -q kubernetes-validate 2>/dev/null ||
    python3 -m pip install -q --break-system-packages kubernetes-validate
fi

# PyPI's kong-pdk: the Python plugin server of tests/kinds.rs.
if ! python3 -c 'import kong_pdk' 2>/dev/null; then
  echo "installing: kong-pdk (PyPI)" >&2
  python3 -m pip install -q kong-pdk 2>/dev/null ||
    python3 -m pip install -q --break-system-packages kong-pdk
fi

# tests/ux.rs drives ORAS' Python client (oras-py) as a peer: oras push/pull.
if ! python3 -c 'import oras' 2>/dev/null; then
  echo "installing: oras (PyPI)" >&2
  python3 -m pip install -q oras 2>/dev/null ||
    python3 -m pip install -q --break-system-packages oras
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

# The init-container test runs kplug as the image does, statically linked: the dev build
# linked static takes seconds (scripts/build-static.sh; the Dockerfile's --release build
# takes minutes and is not repeated here).
KPLUG_STATIC_BIN=$(scripts/build-static.sh --link-only)
export KPLUG_STATIC_BIN

cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"

# nextest does not run doctests; run them only if there are some.
if grep -rqE '^\s*(///|//!).*```' src 2>/dev/null; then
  cargo test --doc --workspace
fi

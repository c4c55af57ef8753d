#!/usr/bin/env bash
# The main job end to end on the embedded store (an OCI image layout, no server):
# pack the example plugin, push and sign it into oci:./store, verify it, install it into
# a local Lua tree with kong.conf enabled, and list what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
kplug=target/release/kplug
export COSIGN_PASSWORD=kplug-example   # the documented password of keys/example.key
rm -rf store kong-root
mkdir -p kong-root/etc
printf '# kong.conf (demo)\n#plugins = bundled\n' > kong-root/etc/kong.conf

echo "== pack";    $kplug pack examples/hello-plugin -o kong-root/hello-0.1.0.tar.gz
echo "== push + sign"
ref=$($kplug push --sign --key keys/example.key kong-root/hello-0.1.0.tar.gz oci:./store:hello:0.1.0)
echo "$ref"
echo "== verify";  $kplug verify --key keys/example.pub "$ref"
echo "== install"
$kplug install "$ref" --key keys/example.pub \
  --prefix kong-root/share/lua/5.1 --kong-conf kong-root/etc/kong.conf --enable
echo "== list";    $kplug list --prefix kong-root/share/lua/5.1
echo "== doctor"
KONG_LUA_PACKAGE_PATH="$PWD/kong-root/share/lua/5.1/?.lua;;" \
  $kplug doctor --prefix kong-root/share/lua/5.1 --kong-conf kong-root/etc/kong.conf
echo "== kong.conf"; grep -n '^plugins' kong-root/etc/kong.conf
find kong-root/share -type f | sort

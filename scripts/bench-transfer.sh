#!/usr/bin/env bash
# Transfer benchmark: kplug push/pull vs curl (monolithic upload / GET) against
# a local docker-registry (anonymous, temp storage, free port, killed at exit).
#
#   scripts/bench-transfer.sh            # 64 MiB and 1 GiB, 3 rounds each
#   BENCH_SIZES="16 64" BENCH_RUNS=5 scripts/bench-transfer.sh
#   BENCH_PAIRS=7 scripts/bench-transfer.sh       # alternated pulls per round (default 3)
#   BENCH_SKIP_KPLUG=1 scripts/bench-transfer.sh   # curl only
#   KPLUG=/path/to/kplug scripts/bench-transfer.sh # no cargo build
#   TMPDIR=/dev/shm scripts/bench-transfer.sh      # everything in RAM: no disk in the figures
#
# Wall time and peak RSS come from GNU time (/usr/bin/time -f '%e %M'). Each round
# runs kplug and curl side by side on the same blob: one push each, then pulls in
# alternated pairs. The summary gives medians and kplug/curl throughput ratios, and for
# the pull the median of the pair-by-pair ratios (the figure to quote on a noisy machine).
# The data file is written just before, so reads come from the page cache for
# both tools. curl is given the digest: its time excludes hashing (the
# sha256sum row shows that cost); kplug's push includes it.
# kplug pull fsyncs the file before renaming it into place (an atomic, durable write);
# curl leaves it in the page cache. The "curl+sync" row is curl followed by
# `sync FILE` (an fsync of that file): the like-for-like pull on a disk.
set -euo pipefail
cd "$(dirname "$0")/.."

sizes=(${BENCH_SIZES:-64 1024})
runs=${BENCH_RUNS:-3}
pairs=${BENCH_PAIRS:-3} # alternated kplug/curl pulls per round

need() { # binary package
  command -v "$1" >/dev/null 2>&1 && return
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2 ||
    { "${sudo[@]}" apt-get update -q >&2 &&
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$2" >&2; }
}
need docker-registry docker-registry
need curl curl
need /usr/bin/time time

if [[ -z ${BENCH_SKIP_KPLUG:-} && -z ${KPLUG:-} ]]; then
  cargo build --release --bin kplug >&2
  KPLUG=${CARGO_TARGET_DIR:-$PWD/target}/release/kplug
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kplug-bench.XXXXXX")
reg_pid=
cleanup() {
  if [[ -n $reg_pid ]]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- registry on a free port -------------------------------------------------
start_registry() {
  local port=$1
  cat >"$work/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/storage
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: bench
EOF
  docker-registry serve "$work/config.yml" >"$work/registry.log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 1000); do
    kill -0 "$reg_pid" 2>/dev/null || { reg_pid=; return 1; }
    curl -sf --noproxy '*' -o /dev/null "http://127.0.0.1:$port/v2/" && return 0
    sleep 0.01
  done
  kill "$reg_pid" 2>/dev/null || true
  reg_pid=
  return 1
}
port=
for _ in $(seq 20); do
  p=$((20000 + RANDOM % 40000))
  (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue # in use
  if start_registry "$p"; then port=$p; break; fi
done
[[ -n $port ]] || { echo "could not start docker-registry:" >&2; cat "$work/registry.log" >&2; exit 1; }
host=127.0.0.1:$port
echo "registry on $host (storage $work/storage)" >&2

# --- measurement ---------------------------------------------------------------
rows=()
pair_ratios=() # "MIB curl_seconds/kplug_seconds" per alternated pull pair
secs=
# measure LABEL OP MIB CMD... : runs CMD under GNU time, adds a table row
measure() {
  local label=$1 op=$2 mib=$3
  shift 3
  if ! /usr/bin/time -o "$work/time" -f '%e %M' "$@" >"$work/out" 2>"$work/err"; then
    echo "FAILED: $*" >&2
    cat "$work/err" "$work/out" >&2
    exit 1
  fi
  local kib
  read -r secs kib <"$work/time" # secs: also read by round()
  rows+=("$(awk -v l="$label" -v o="$op" -v m="$mib" -v s="$secs" -v k="$kib" \
    'BEGIN { printf "%-9s %-5s %8d %9.2f %9.1f %10.1f", l, o, m, s, (s > 0 ? m / s : 0), k / 1024 }')")
}

# one round: kplug's push and curl's PUT of a fresh blob, then PAIRS pulls of it by
# each, alternating (kplug, curl, kplug, curl, ...): each pair's ratio is taken on its
# own, so a drift in the machine's speed during the round moves both sides alike.
round() { # MIB FILE DIGEST N
  local mib=$1 file=$2 digest=$3 n=$4 p
  local ref=$host/bench/k$n:m$mib
  [[ -n ${BENCH_SKIP_KPLUG:-} ]] || measure kplug push "$mib" "$KPLUG" push --force "$file" "$ref"
  # curl: POST (not timed) then a monolithic PUT.
  location=$(curl -sS --noproxy '*' -X POST -o /dev/null -D - "http://$host/v2/bench/c$n/blobs/uploads/" |
    tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
  [[ -n $location ]] || { echo "no upload Location" >&2; exit 1; }
  [[ $location == http* ]] || location=http://$host$location
  sep='?'
  [[ $location == *\?* ]] && sep='&'
  measure curl push "$mib" curl -sS --fail --noproxy '*' -H 'Expect:' \
    -H 'Content-Type: application/octet-stream' -T "$file" -o /dev/null -w '%{http_code}' \
    "$location${sep}digest=$digest"
  [[ $(cat "$work/out") == 201 ]] || { echo "PUT answered $(cat "$work/out")" >&2; exit 1; }
  for p in $(seq "$pairs"); do
    local k=
    if [[ -z ${BENCH_SKIP_KPLUG:-} ]]; then
      measure kplug pull "$mib" "$KPLUG" pull "$ref" -o "$work/kplug-out-$mib"
      k=$secs
      ((p > 1)) || cmp "$file" "$work/kplug-out-$mib"
      rm -f "$work/kplug-out-$mib"
    fi
    measure curl pull "$mib" curl -sSf --noproxy '*' -o "$work/curl-out-$mib" \
      "http://$host/v2/bench/c$n/blobs/$digest"
    [[ -z $k ]] || pair_ratios+=("$mib $(awk -v k="$k" -v c="$secs" 'BEGIN { print (k > 0 ? c / k : 0) }')")
    ((p > 1)) || cmp "$file" "$work/curl-out-$mib"
    rm -f "$work/curl-out-$mib"
  done
  measure curl+sync pull "$mib" sh -c 'curl -sSf --noproxy "*" -o "$1" "$2" && sync "$1"' sh \
    "$work/curl-out-$mib" "http://$host/v2/bench/c$n/blobs/$digest"
  rm -f "$work/curl-out-$mib"
}

for mib in "${sizes[@]}"; do
  for n in $(seq "$runs"); do
    file=$work/blob-$mib-$n
    echo "== $mib MiB, round $n: generating random data" >&2
    head -c "$((mib * 1024 * 1024))" /dev/urandom >"$file"
    measure sha256sum hash "$mib" sha256sum "$file"
    digest=sha256:$(cut -d' ' -f1 "$work/out")
    round "$mib" "$file" "$digest" "$n"
    rm -f "$file"
    # this round's blob is unique: drop the registry's copy (disk or RAM stays bounded)
    hex=${digest#sha256:}
    rm -rf "$work/storage/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex"
  done
done

echo
printf '%-9s %-5s %8s %9s %9s %10s\n' tool op MiB seconds MiB/s 'RSS MiB'
printf '%s\n' "${rows[@]}"
echo
echo "medians ($runs round(s); pulls: $pairs per round):"
printf '%s\n' "${rows[@]}" | awk '
  { k = $1 " " $2 " " $3; n[k]++; s[k, n[k]] = $4; r[k, n[k]] = $6; if (!(k in seen)) { seen[k] = 1; order[++m] = k } }
  function med(arr, k, c,   i, j, t, v) {
    for (i = 1; i <= c; i++) v[i] = arr[k, i]
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    return (c % 2) ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
  }
  END {
    printf "%-9s %-5s %8s %9s %9s %12s\n", "tool", "op", "MiB", "seconds", "MiB/s", "peak RSS MiB"
    for (i = 1; i <= m; i++) {
      k = order[i]; split(k, f, " "); sec[k] = med(s, k, n[k]); rss = med(r, k, n[k])
      printf "%-9s %-5s %8d %9.2f %9.1f %12.1f\n", f[1], f[2], f[3], sec[k], f[3] / sec[k], rss
    }
    for (i = 1; i <= m; i++) {
      k = order[i]; split(k, f, " ")
      if (f[1] != "kplug") continue
      for (t = 1; t <= 2; t++) {
        tool = (t == 1) ? "curl" : "curl+sync"; c = tool " " f[2] " " f[3]
        if (c in sec) printf "kplug/%s %s %d MiB: %.2fx\n", tool, f[2], f[3], sec[c] / sec[k]
      }
    }
  }'
if ((${#pair_ratios[@]})); then
  echo
  echo "pull, pair by pair (curl seconds / kplug seconds; above 1: kplug faster):"
  printf '%s\n' "${pair_ratios[@]}" | sort -k1,1n -k2,2g | awk '
    { n[$1]++; v[$1, n[$1]] = $2; if (!($1 in seen)) { seen[$1] = 1; order[++m] = $1 } }
    END {
      for (i = 1; i <= m; i++) {
        s = order[i]; c = n[s]
        med = (c % 2) ? v[s, (c + 1) / 2] : (v[s, c / 2] + v[s, c / 2 + 1]) / 2
        printf "kplug/curl pull %d MiB: median %.2fx of %d pairs (min %.2fx, max %.2fx)\n", s, med, c, v[s, 1], v[s, c]
      }
    }'
fi

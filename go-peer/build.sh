#!/usr/bin/env bash
# Builds the benchmark's grpc-go peer into target/go-peer/catalogue-go,
# offline, in module mode (go-peer/go.mod), from Debian's Go packages
# (scripts/setup.sh installs them): the module is copied to
# target/go-peer/module with the protobuf and gRPC code protoc generates from
# proto/ (never committed), and a vendor/ directory linking each package
# the peer imports to /usr/share/gocode/src, with the modules.txt that
# -mod=vendor reads. No module proxy, no GOPATH mode. Does nothing when the
# binary is newer than its sources.
#   bash go-peer/build.sh
#   target/go-peer/catalogue-go -addr 127.0.0.1:50061 -metrics-addr 127.0.0.1:6071 -products 10000
#   target/go-peer/catalogue-go -upstream 127.0.0.1:50052   # GetProduct asks the inventory simulator
# GO_PEER_OUT=DIR puts the binary in DIR/catalogue-go instead (the
# Dockerfile's build stage).
set -euo pipefail
cd "$(dirname "$0")/.."

out=${GO_PEER_OUT:-target/go-peer}
binary=$out/catalogue-go
proto=catalogue/v1/catalogue.proto
inventory=inventory/v1/inventory.proto
sources=(go-peer/main.go go-peer/go.mod go-peer/build.sh "proto/$proto" "proto/$inventory")
gocode=/usr/share/gocode/src

for command in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$command" >/dev/null || { echo "missing $command: run scripts/setup.sh" >&2; exit 1; }
done
if [ -x "$binary" ]; then
  stale=false
  for source in "${sources[@]}"; do
    [ "$source" -nt "$binary" ] && stale=true
  done
  $stale || exit 0
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
binary=$out/catalogue-go
module=$out/module
rm -rf "$module" && mkdir -p "$module/cataloguepb" "$module/inventorypb" "$module/vendor"
cp go-peer/go.mod go-peer/main.go "$module/"
mapping="M$proto=catalogue-go-peer/cataloguepb,M$inventory=catalogue-go-peer/inventorypb"
protoc -Iproto -I/usr/include --go_out="$module" --go_opt="module=catalogue-go-peer,$mapping" \
  --go-grpc_out="$module" --go-grpc_opt="module=catalogue-go-peer,$mapping" "proto/$proto" "proto/$inventory"

# Every package outside the standard library the peer imports, directly or
# not, and the module each belongs to (the nearest go.mod above it; a
# repository without one is a module of its own path).
export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local GOWORK=off
# Go's minimal module compatibility: github.com/x/y/v2 may be the directory
# github.com/x/y whose go.mod says `module github.com/x/y/v2`.
dir_of() {
  if [ -d "$gocode/$1" ]; then
    echo "$gocode/$1"
    return
  fi
  # github.com/x/y/v2/sub: base github.com/x/y, major /v2, rest sub.
  local base=${1%/v[0-9]*}
  local suffix=${1#"$base"}
  [ -n "$suffix" ] || return 0
  local major=${suffix#/}
  major=/${major%%/*}
  local rest=${suffix#"$major"}
  rest=${rest#/}
  if grep -qsx "module[[:space:]]*\"\{0,1\}$base$major\"\{0,1\}[[:space:]]*" "$gocode/$base/go.mod"; then
    echo "$gocode/$base${rest:+/$rest}"
  fi
}
module_of() {
  local dir
  dir=$(dir_of "$1")
  while [ "$dir" != "$gocode" ]; do
    if [ -f "$dir/go.mod" ]; then
      sed -n 's/^module[[:space:]]*//p' "$dir/go.mod" | tr -d '"' | head -1
      return
    fi
    dir=$(dirname "$dir")
  done
  cut -d/ -f1-3 <<<"$1"
}
version_of() {
  sed -n "s|^[[:space:]]*$1[[:space:]]\\+\\(v[^[:space:]]*\\).*|\\1|p" "$module/go.mod" | head -1
}
declare -A packages_of
pending=(catalogue-go-peer catalogue-go-peer/cataloguepb catalogue-go-peer/inventorypb)
declare -A seen
while [ ${#pending[@]} -gt 0 ]; do
  package=${pending[0]}
  pending=("${pending[@]:1}")
  [ -n "${seen[$package]:-}" ] && continue
  seen[$package]=1
  case $package in
    catalogue-go-peer) dir=$module ;;
    catalogue-go-peer/*) dir=$module/${package#catalogue-go-peer/} ;;
    *)
      dir=$(dir_of "$package")
      [ -n "$dir" ] && [ -d "$dir" ] || { echo "$package: not in $gocode (a Debian package missing?)" >&2; exit 1; }
      owner=$(module_of "$package")
      packages_of[$owner]+="$package "
      ;;
  esac
  # Imports of the package's Go files for this platform, tests left out.
  while read -r import; do
    [ -z "$import" ] && continue
    [[ $import == *.* || $import == catalogue-go-peer/* ]] || continue
    [ -z "${seen[$import]:-}" ] && pending+=("$import")
  done < <(cd "$dir" && GOFLAGS= GO111MODULE=off go list -e -f '{{join .Imports "\n"}}' . 2>/dev/null || true)
done
# One link per module, to its directory in Debian's tree.
for owner in "${!packages_of[@]}"; do
  mkdir -p "$(dirname "$module/vendor/$owner")"
  ln -sfn "$(dir_of "$owner")" "$module/vendor/$owner"
done
{
  for owner in $(printf '%s\n' "${!packages_of[@]}" | sort); do
    # The Go version each module's own go.mod states sets its language
    # version, as it would from the module cache.
    language=$(sed -n 's/^go[[:space:]]\+\([0-9.]*\).*/\1/p' "$(dir_of "$owner")/go.mod" 2>/dev/null | head -1 || true)
    printf '# %s %s\n## explicit%s\n' "$owner" "$(version_of "$owner")" "${language:+; go $language}"

    tr ' ' '\n' <<<"${packages_of[$owner]}" | sed '/^$/d' | sort -u
  done
} >"$module/vendor/modules.txt"

root=$PWD
(cd "$module" && go build -trimpath -o "$binary" .)
echo "built ${binary#"$root"/} ($(go version | cut -d' ' -f3), module mode, Debian's packages)" >&2

#!/usr/bin/env bash
# Builds the benchmark's grpc-go peer into target/go-peer/catalogue-go, from
# Debian's packages only (installed when missing) and offline: GOPATH mode
# over /usr/share/gocode, no module proxy. The protobuf and gRPC code is
# generated from proto/catalogue/v1/catalogue.proto at each build by protoc
# with Debian's protoc-gen-go and protoc-gen-go-grpc, into target/ (never
# committed), and so is the inventory.v1 client from
# proto/inventory/v1/inventory.proto. Does nothing when the binary is newer
# than its sources.
#   scripts/go-peer/build.sh
#   target/go-peer/catalogue-go -addr 127.0.0.1:50061 -metrics-addr 127.0.0.1:6071 -products 10000
#   target/go-peer/catalogue-go -upstream 127.0.0.1:50052   # GetProduct asks the inventory simulator
# GO_PEER_OUT=DIR puts the binary in DIR/catalogue-go instead (the
# Dockerfile's build stage).
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${GO_PEER_OUT:-target/go-peer}
binary=$out/catalogue-go
proto=catalogue/v1/catalogue.proto
inventory=inventory/v1/inventory.proto
sources=(scripts/go-peer/main.go scripts/go-peer/build.sh "proto/$proto" "proto/$inventory")

# golang-github-golang-protobuf-1-5-dev (in place of the 1.3 one that the
# gRPC package would otherwise pull in): grpc-go's codec goes through
# github.com/golang/protobuf, and only 1.5 handles APIv2 generated messages.
packages=(golang-go golang-google-grpc-dev golang-github-grpc-ecosystem-go-grpc-prometheus-dev
  golang-github-prometheus-client-golang-dev golang-google-protobuf-dev
  golang-github-golang-protobuf-1-5-dev protobuf-compiler libprotobuf-dev protoc-gen-go
  protoc-gen-go-grpc)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  rm -f "$binary"
fi

if [ -x "$binary" ]; then
  stale=false
  for source in "${sources[@]}"; do
    [ "$source" -nt "$binary" ] && stale=true
  done
  $stale || exit 0
fi

# A GOPATH of our own in front of Debian's: the package catalogue-go-peer
# (main.go) and its generated catalogue-go-peer/cataloguepb and
# catalogue-go-peer/inventorypb.
mkdir -p "$out"
out=$(cd "$out" && pwd)
binary=$out/catalogue-go
gopath=$out/gopath
package=$gopath/src/catalogue-go-peer
rm -rf "$gopath" && mkdir -p "$package/cataloguepb" "$package/inventorypb"
cp scripts/go-peer/main.go "$package/"
mapping="M$proto=catalogue-go-peer/cataloguepb,M$inventory=catalogue-go-peer/inventorypb"
protoc -Iproto -I/usr/include --go_out="$gopath/src" --go_opt="$mapping" \
  --go-grpc_out="$gopath/src" --go-grpc_opt="$mapping" "proto/$proto" "proto/$inventory"

root=$PWD
target=$binary
cd "$package"
GO111MODULE=off GOPROXY=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode" \
  go build -trimpath -o "$target" .
echo "built ${binary#"$root"/} ($(go version | cut -d' ' -f3))" >&2

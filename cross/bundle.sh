#!/usr/bin/env bash
# Build an edge-agent device bundle for one architecture:
#   cross/bundle.sh ARCH [OUTDIR]      ARCH: amd64 | arm64 | armv7
# The binary is cross-compiled with cgo against that architecture's TFLite
# runtime (scripts/provision-runtime.sh) and linked to run from
# $EDGE_AGENT_PREFIX (default /opt/edge-agent): its loader and rpath point
# into PREFIX/lib/<triplet>, which the bundle ships. Output:
#   OUTDIR/edge-agent-VERSION-linux-ARCH/{bin,lib,share,install.sh,uninstall.sh,SHA256SUMS}
#   OUTDIR/edge-agent-VERSION-linux-ARCH.tar.gz
set -euo pipefail

arch=${1:?usage: cross/bundle.sh ARCH [OUTDIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${2:-$repo/dist}" && cd "${2:-$repo/dist}" && pwd)
install_prefix=${EDGE_AGENT_PREFIX:-/opt/edge-agent}
goarm=
case $arch in
  amd64) goarch=amd64 rtarch=amd64 cc=gcc triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
  arm64) goarch=arm64 rtarch=arm64 cc=aarch64-linux-gnu-gcc triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
  armv7) goarch=arm goarm=7 rtarch=armhf cc=arm-linux-gnueabihf-gcc triplet=arm-linux-gnueabihf loader=ld-linux-armhf.so.3 ;;
  *) echo "bundle: unsupported architecture '$arch' (amd64, arm64, armv7)" >&2; exit 2 ;;
esac
command -v "$cc" >/dev/null || { echo "bundle: $cc not found (make cross installs it)" >&2; exit 1; }

runtime=$repo/.runtime/$rtarch
"$repo/scripts/provision-runtime.sh" "$rtarch" "$runtime"

version=${VERSION:-$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || echo dev)}
name=edge-agent-$version-linux-$arch
stage=$out/$name
rm -rf "$stage" "$stage.tar.gz"
mkdir -p "$stage/bin" "$stage/lib" "$stage/share/edge-agent"

echo "bundle: building $name"
(cd "$repo" && CGO_ENABLED=1 GOOS=linux GOARCH=$goarch GOARM=$goarm CC=$cc \
  CGO_CFLAGS="-I$runtime/usr/include" \
  CGO_LDFLAGS="-L$runtime/link -Wl,--disable-new-dtags -Wl,-rpath,$install_prefix/lib/$triplet -Wl,--dynamic-linker=$install_prefix/lib/$triplet/$loader -Wl,--allow-shlib-undefined" \
  go build -trimpath -ldflags "-s -w -linkmode=external -X github.com/edge-agent/edge-agent/agent.Version=$version" \
  -o "$stage/bin/edge-agent" ./agent/cmd/edge-agent)

# The runtime: shared objects and their soname links, nothing else.
mkdir -p "$stage/lib/$triplet"
(cd "$runtime/usr/lib/$triplet" && find . -maxdepth 1 \( -name '*.so*' -o -name "$loader" \) \( -type f -o -type l \) -print0 |
  xargs -0 -I{} cp -a {} "$stage/lib/$triplet/")
cp "$repo/scripts/edge-agent.service.in" "$repo/edge-agent.example.toml" "$repo/README.md" "$stage/share/edge-agent/"
cp -r "$repo/docs" "$stage/share/edge-agent/"
cp "$runtime/MANIFEST" "$stage/share/edge-agent/RUNTIME-MANIFEST"
cp "$repo/scripts/install.sh" "$repo/scripts/uninstall.sh" "$stage/"
(cd "$stage" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs sha256sum >SHA256SUMS)
tar -C "$out" -czf "$stage.tar.gz" "$name"
echo "bundle: $stage.tar.gz ($(du -h "$stage.tar.gz" | cut -f1); binary $(du -h "$stage/bin/edge-agent" | cut -f1))"

#!/usr/bin/env bash
# Provision a TensorFlow Lite runtime prefix (C API) from Debian's archive
# for one architecture, without touching the system's apt state.
#
# Usage: scripts/provision-runtime.sh [--force] ARCH [PREFIX]
#   ARCH    amd64 | arm64 | armhf
#   PREFIX  where to unpack (default: <repo>/.runtime/ARCH, git-ignored)
#
# Environment:
#   TFLITE_SUITE   Debian suites to look in, in order (default: "sid forky
#                  experimental"); the first that has a libtensorflow-lite2.*
#                  exporting the C API wins, newest version first
#   TFLITE_MIRROR  archive URI; default: the first non-security URI in this
#                  machine's own apt configuration (never hard-coded here)
#
# The runtime package is found by pattern, not by name, so the script keeps
# working when Debian moves to a newer TFLite (scripts/runtime-resolve.sh);
# the manifest records what was chosen.
#
# Bookworm has no TFLite package and sid's needs glibc >= 2.38, so the prefix
# carries its own loader and libc; binaries are linked against it by the
# Makefile (see README "Using your own TFLite").
#
# Idempotent: when PREFIX/MANIFEST records the same request and every file it
# lists is present, nothing is downloaded.
set -euo pipefail

force=0
if [[ ${1:-} == --force ]]; then force=1; shift; fi
arch=${1:?usage: provision-runtime.sh [--force] ARCH [PREFIX]}
repo=$(cd "$(dirname "$0")/.." && pwd)
prefix=${2:-$repo/.runtime/$arch}
suites=${TFLITE_SUITE:-sid forky experimental}
# shellcheck source=runtime-resolve.sh
. "$repo/scripts/runtime-resolve.sh"

case $arch in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  armhf) triplet=arm-linux-gnueabihf ;;
  *) echo "provision-runtime: unsupported architecture '$arch' (amd64, arm64, armhf)" >&2; exit 2 ;;
esac

headers_pkg=libtensorflow-lite-dev
request="arch=$arch suites=$suites runtime=libtensorflow-lite2.* headers=$headers_pkg"

manifest_ok() {
  local m=$prefix/MANIFEST
  [[ -f $m ]] || return 1
  grep -qxF "# request: $request" "$m" || return 1
  grep -v '^#' "$m" | while read -r _ _ _ _ file; do
    [[ -e $prefix/$file ]] || exit 1
  done
}

if [[ $force == 0 ]] && manifest_ok; then
  echo "provision-runtime: $prefix is up to date ($arch, $(grep -c '^[^#]' "$prefix/MANIFEST") packages)"
  exit 0
fi

for tool in apt-get apt-cache dpkg-deb sha256sum readelf; do
  command -v "$tool" >/dev/null || { echo "provision-runtime: '$tool' not found (Debian/Ubuntu host required)" >&2; exit 1; }
done

# The mirror and its keyring come from the machine's own apt configuration.
mirror=${TFLITE_MIRROR:-}
keyring=
if [[ -z $mirror ]]; then
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    # deb822 stanzas: take the first whose suites are not a -security suite.
    read -r mirror keyring < <(awk '
      /^URIs:/      { u=$2 }
      /^Suites:/    { s=$0 }
      /^Signed-By:/ { k=$2 }
      /^$/          { if (u != "" && s !~ /security/) { print u, k; exit } u=""; s=""; k="" }
      END           { if (u != "" && s !~ /security/) print u, k }' "$f") || true
    [[ -n $mirror ]] && break
  done
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1=="deb" && $0 !~ /security/ { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
fi
[[ -n $mirror ]] || { echo "provision-runtime: no Debian mirror found in /etc/apt (set TFLITE_MIRROR)" >&2; exit 1; }
keyring=${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}
[[ -f $keyring ]] || { echo "provision-runtime: archive keyring $keyring missing (apt-get install debian-archive-keyring)" >&2; exit 1; }

work=$prefix.work
rm -rf "$work" "$prefix"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
trap 'rm -rf "$work"' EXIT
: >"$work/status"

# A private apt: own sources, lists, cache and an empty dpkg status, so the
# whole dependency closure is resolved for the target architecture and the
# host's packages are neither consulted nor changed. Signatures stay checked.
apt_opts=(
  -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$work/lists" -o "Dir::State::status=$work/status"
  -o "Dir::Cache=$work/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root
  -o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
)

# suite_packages and try_runtime are what resolve_runtime asks of apt.
suite_packages() {
  local s=$1
  echo "deb [signed-by=$keyring] $mirror $s main" >"$work/sources.list"
  # experimental only carries what differs from unstable: resolve with both.
  [[ $s == experimental ]] && echo "deb [signed-by=$keyring] $mirror sid main" >>"$work/sources.list"
  echo "provision-runtime: looking in $s for libtensorflow-lite2.*" >&2
  rm -rf "$work/lists" && mkdir -p "$work/lists/partial"
  apt-get "${apt_opts[@]}" -qq update >&2 || return 0
  apt-cache "${apt_opts[@]}" pkgnames libtensorflow-lite2. 2>/dev/null
}
try_runtime() {
  local s=$1 pkg=$2 deb check
  rm -f "$work"/cache/archives/*.deb
  echo "provision-runtime: trying $pkg from $s for $arch" >&2
  apt-get "${apt_opts[@]}" -qq -y --no-install-recommends install --download-only "$pkg" >/dev/null 2>&1 || return 1
  deb=$(ls "$work"/cache/archives/"${pkg}"_*.deb 2>/dev/null | head -n1)
  [[ -n $deb ]] || return 1
  check=$work/check
  rm -rf "$check" && mkdir -p "$check"
  dpkg-deb -x "$deb" "$check"
  local lib
  for lib in "$check"/usr/lib/"$triplet"/libtensorflow-lite.so.2.*; do
    [[ -f $lib ]] && exports_c_api "$lib" && { rm -rf "$check"; return 0; }
  done
  echo "provision-runtime: $pkg does not export the TFLite C API" >&2
  rm -rf "$check"
  return 1
}

read -r suite runtime_pkg < <(resolve_runtime $suites) || exit 1
[[ -n ${runtime_pkg:-} ]] || exit 1
echo "provision-runtime: chose $runtime_pkg from $suite"
(cd "$work/debs" && apt-get "${apt_opts[@]}" -qq download "$headers_pkg:$arch")
mv "$work"/cache/archives/*.deb "$work/debs/"

mkdir -p "$prefix"
{
  echo "# TFLite runtime prefix; written by scripts/provision-runtime.sh"
  echo "# request: $request"
  echo "# suite: $suite"
  echo "# chosen: $runtime_pkg"
  echo "# package version architecture sha256 deb"
} >"$work/MANIFEST"
for deb in "$work"/debs/*.deb; do
  name=$(dpkg-deb -f "$deb" Package)
  version=$(dpkg-deb -f "$deb" Version)
  darch=$(dpkg-deb -f "$deb" Architecture)
  sum=$(sha256sum "$deb" | cut -d' ' -f1)
  # apt already verified the file against the signed index; compare once
  # more with the index entry so the manifest records a checked hash.
  want=$(apt-cache "${apt_opts[@]}" show "$name:$darch=$version" 2>/dev/null | awk '/^SHA256:/{print $2; exit}')
  if [[ -n $want && $want != "$sum" ]]; then
    echo "provision-runtime: sha256 mismatch for $name $version: got $sum, index says $want" >&2
    exit 1
  fi
  dpkg-deb -x "$deb" "$prefix"
  echo "$name $version $darch $sum debs/$(basename "$deb")" >>"$work/MANIFEST"
done

# Keep the .debs beside the prefix so a bundle can say exactly what it ships.
mkdir -p "$prefix/debs"
mv "$work"/debs/*.deb "$prefix/debs/"

lib=$(cd "$prefix/usr/lib/$triplet" && ls libtensorflow-lite.so.2.* | head -n1)
[[ -n $lib ]] || { echo "provision-runtime: libtensorflow-lite.so.2.* missing after unpack" >&2; exit 1; }
# go-tflite links -ltensorflowlite_c; the Debian build exports the C API and
# the external delegate from one library.
mkdir -p "$prefix/link"
ln -sf "../usr/lib/$triplet/$lib" "$prefix/link/libtensorflowlite_c.so"
ln -sf "../usr/lib/$triplet/$lib" "$prefix/link/libtensorflowlite-delegate_external.so"

mv "$work/MANIFEST" "$prefix/MANIFEST"
echo "provision-runtime: $arch runtime in $prefix"
grep -v '^#' "$prefix/MANIFEST" | awk '{printf "  %-28s %s\n", $1, $2}'

#!/usr/bin/env bash
# Install the Debian packages edge-agent's build and tests need, only those
# missing, so a fresh Debian/Ubuntu machine needs nothing done by hand.
set -euo pipefail

need=(gcc libc6-dev apt dpkg debian-archive-keyring ca-certificates)
need+=("$@")

missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
command -v go >/dev/null || { echo "deps: Go toolchain not found on PATH (install Go >= 1.25)" >&2; exit 1; }
[[ ${#missing[@]} -eq 0 ]] && exit 0

sudo=
[[ $(id -u) -eq 0 ]] || sudo=sudo
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

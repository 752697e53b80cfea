#!/usr/bin/env bash
# Run a bundle's binary (under qemu-user for ARM) straight from the bundle:
# `version`, then `infer` on cat.bmp with mobilenet_v2, which must answer
# "Egyptian cat", the same as on x86-64.
#   cross/check.sh ARCH [OUTDIR]
set -euo pipefail

arch=${1:?usage: cross/check.sh ARCH [OUTDIR]}
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$repo/dist}
models=${EDGE_AGENT_MODELS:-$repo/../shared/models}
case $arch in
  amd64) qemu= triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
  arm64) qemu=qemu-aarch64-static triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
  armv7) qemu=qemu-arm-static triplet=arm-linux-gnueabihf loader=ld-linux-armhf.so.3 ;;
  *) echo "check: unsupported architecture '$arch'" >&2; exit 2 ;;
esac
stage=$(ls -d "$out"/edge-agent-*-linux-"$arch" 2>/dev/null | head -n1)
[[ -n $stage ]] || { echo "check: no $arch bundle in $out (make cross)" >&2; exit 1; }
[[ -z $qemu ]] || command -v "$qemu" >/dev/null || { echo "check: $qemu not found (make cross installs qemu-user-static)" >&2; exit 1; }

# The binary's loader path is the install prefix's; call the bundled loader
# directly so it runs from where it was unpacked.
run() { ${qemu:+$qemu} "$stage/lib/$triplet/$loader" --library-path "$stage/lib/$triplet" "$stage/bin/edge-agent" "$@"; }

(cd "$stage" && sha256sum --quiet -c SHA256SUMS)
echo "check $arch: $(run version | tr '\n' ' ')"
# First line of the plain output: "1.   286  0.7461  Egyptian cat".
out=$(run infer --model "$models/mobilenet_v2_1.0_224_quant.tflite" --input "$models/cat.bmp" \
  --labels "$models/imagenet_labels.txt" --top 1)
top=${out%%$'\n'*}
echo "check $arch: cat.bmp → $top"
read -r _ index _ label <<<"$top"
[[ $index == 286 && $label == "Egyptian cat" ]] || { echo "check $arch: expected 286 Egyptian cat" >&2; exit 1; }

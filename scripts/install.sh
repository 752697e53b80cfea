#!/usr/bin/env bash
# Install an edge-agent bundle (run from inside the unpacked bundle):
#   sudo ./install.sh [--prefix /opt/edge-agent] [--no-start] [--root DIR]
# Creates the edge-agent user, installs the binary and its runtime under the
# prefix, the unit, and /etc/edge-agent/edge-agent.toml (never overwritten),
# then enables and starts the service and waits for it to be ready; a
# service that does not come up is stopped and disabled, its journal shown,
# and install.sh exits 1. Idempotent: a second run changes nothing that is
# already current. --root installs into DIR (for images and
# tests): no user is created and systemd is not touched.
set -euo pipefail

prefix=/opt/edge-agent
root=
start=1
while [[ $# -gt 0 ]]; do
  case $1 in
    --prefix) prefix=$2; shift 2 ;;
    --root) root=$2; shift 2 ;;
    --no-start) start=0; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
bundle=$(cd "$(dirname "$0")" && pwd)
[[ -x $bundle/bin/edge-agent && -d $bundle/lib ]] || { echo "install.sh: run it from an unpacked edge-agent bundle" >&2; exit 1; }
if [[ -z $root && $(id -u) -ne 0 ]]; then
  echo "install.sh: run as root (or use --root DIR)" >&2
  exit 1
fi
if [[ -f $bundle/SHA256SUMS ]]; then
  (cd "$bundle" && sha256sum --quiet -c SHA256SUMS) || { echo "install.sh: bundle checksums do not match" >&2; exit 1; }
fi

changed=0
# put SRC DST MODE: install a file only when its content differs.
put() {
  local src=$1 dst=$2 mode=$3
  if [[ -f $dst ]] && cmp -s "$src" "$dst"; then
    return
  fi
  mkdir -p "$(dirname "$dst")"
  install -m "$mode" "$src" "$dst.new"
  mv -f "$dst.new" "$dst"
  changed=1
}

dest=$root$prefix
if [[ -z $root ]] && ! getent passwd edge-agent >/dev/null; then
  useradd --system --no-create-home --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent
  changed=1
fi

put "$bundle/bin/edge-agent" "$dest/bin/edge-agent" 0755
while read -r f; do
  mode=0644
  [[ -x $bundle/$f ]] && mode=0755
  put "$bundle/$f" "$dest/$f" "$mode"
done < <(cd "$bundle" && find lib share -type f)
# Symlinks (the runtime's sonames) are recreated as they are in the bundle.
while read -r l; do
  target=$(readlink "$bundle/$l")
  if [[ $(readlink "$dest/$l" 2>/dev/null) != "$target" ]]; then
    mkdir -p "$(dirname "$dest/$l")"
    ln -sfn "$target" "$dest/$l"
    changed=1
  fi
done < <(cd "$bundle" && find lib -type l)

unit=$(mktemp)
trap 'rm -f "$unit"' EXIT
sed "s#@PREFIX@#$prefix#g" "$bundle/share/edge-agent/edge-agent.service.in" >"$unit"
put "$unit" "$root/etc/systemd/system/edge-agent.service" 0644

mkdir -p "$root/etc/edge-agent"
if [[ ! -f $root/etc/edge-agent/edge-agent.toml ]]; then
  # The example with a state dir systemd manages.
  sed 's#^state_dir = .*#state_dir = "/var/lib/edge-agent"#' "$bundle/share/edge-agent/edge-agent.example.toml" >"$root/etc/edge-agent/edge-agent.toml"
  chmod 0644 "$root/etc/edge-agent/edge-agent.toml"
  changed=1
fi
if [[ ! -f $root/etc/edge-agent/mqtt-password ]]; then
  install -m 0600 /dev/null "$root/etc/edge-agent/mqtt-password"
  changed=1
fi

# give_up: the service did not come up. Say why, and leave it stopped and
# disabled rather than enabled in a restart loop.
give_up() {
  echo "install.sh: edge-agent did not start; its journal:" >&2
  journalctl -u edge-agent.service -n 30 --no-pager -o short-monotonic >&2 || true
  systemctl disable --now edge-agent.service >/dev/null 2>&1 || true
  echo "install.sh: edge-agent is stopped and disabled; fix the cause (configuration: /etc/edge-agent/edge-agent.toml), then run install.sh again" >&2
  exit 1
}

if [[ -z $root ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
  systemctl daemon-reload
  systemctl enable edge-agent.service >/dev/null
  if [[ $start == 1 ]]; then
    # Type=notify: start returns once the agent said READY=1 (or failed).
    # Running install.sh again is trying again: forget an earlier failure
    # and a start limit it hit.
    systemctl reset-failed edge-agent.service 2>/dev/null || true
    verb=start
    [[ $changed == 1 ]] && verb=restart
    systemctl "$verb" edge-agent.service || give_up
    [[ $(systemctl is-active edge-agent.service) == active ]] || give_up
  fi
fi
if [[ $changed == 1 ]]; then
  echo "edge-agent installed in $dest"
else
  echo "edge-agent in $dest is up to date"
fi

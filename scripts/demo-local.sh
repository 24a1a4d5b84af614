#!/usr/bin/env bash
# make demo-local: the whole pipeline on loopback, no VM, no root needed.
#   provider (plasmd serve, DHT node) -> phase-discover (DHT) -> phase-fetch -> phase-verify
#   -> kexec-boot --dry-run
# Everything lives in a temp dir that is removed on exit, also on Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$here/.venv/bin/python}
phase() { "$PY" -m phase_client "$@"; }
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/phase-demo-local.XXXXXX")
provider_pid=""
cleanup() {
    if [ -n "$provider_pid" ] && kill -0 "$provider_pid" 2>/dev/null; then
        kill -TERM "$provider_pid" 2>/dev/null || true
        wait "$provider_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo-local: interrupted"; exit 130' INT TERM

# kexec-boot calls phase-verify: provide the tools on PATH whether or not they are installed.
mkdir -p "$work/bin"
for tool in verify fetch discover; do
    printf '#!/bin/sh\nexec "%s" -m phase_client %s "$@"\n' "$PY" "$tool" >"$work/bin/phase-$tool"
    chmod +x "$work/bin/phase-$tool"
done
export PATH="$work/bin:$PATH"

free_port() {  # $1 = tcp|udp: a port free on 127.0.0.1 right now
    "$PY" -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

step "A release key"
phase plasmd keygen --out "$work/release.key"
mkdir -p "$work/keys" && cp "$work/release.key.pub" "$work/keys/release.pub"

step "Sample boot image: artifacts/stable/x86_64/{vmlinuz,initramfs.img,cmdline}"
combo="$work/artifacts/stable/x86_64"
mkdir -p "$combo"
kernel="$here/build/boot/kernel/vmlinuz"
if [ -f "$kernel" ]; then cp "$kernel" "$combo/vmlinuz"; else
    head -c $((8 * 1024 * 1024)) /dev/urandom >"$combo/vmlinuz"; fi
head -c $((4 * 1024 * 1024)) /dev/urandom >"$combo/initramfs.img"
echo "console=ttyS0 phase.demo=1" >"$combo/cmdline"
ls -l "$combo"

step "Provider: plasmd serve (HTTP + DHT node on 127.0.0.1)"
http_port=$(free_port tcp)
dht_port=$(free_port udp)
# Run python directly (not through the phase function) so that $! is the provider itself.
"$PY" -m phase_client plasmd serve --artifacts "$work/artifacts" --bind 127.0.0.1 --port "$http_port" \
    --advertise-host 127.0.0.1 --state-dir "$work/provider-state" --key "$work/release.key" \
    --name demo-provider --no-mdns --dht-port "$dht_port" 2>"$work/provider.log" &
provider_pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$http_port/health" >/dev/null 2>&1 && break
    kill -0 "$provider_pid" 2>/dev/null || { cat "$work/provider.log"; exit 1; }
    sleep 0.1
done
sed 's/^/    provider: /' "$work/provider.log"

step "phase-discover --source dht --bootstrap 127.0.0.1:$dht_port --all"
found=""
for _ in 1 2 3 4 5; do  # the provider publishes its record right after start
    if found=$(phase discover --source dht --bootstrap "127.0.0.1:$dht_port" \
        --channel stable --arch x86_64 --all --timeout 5 --quiet); then break; fi
    sleep 1
done
[ -n "$found" ] || { echo "demo-local: discovery found nothing" >&2; exit 1; }
echo "$found"
url=$(echo "$found" | head -n 1 | cut -f 1)

step "phase-fetch --manifest $url"
phase fetch --manifest "$url" --output "$work/boot" --key "$work/release.key.pub" \
    --channel stable --arch x86_64 --state-dir "$work/client-state" --update-state
ls -l "$work/boot"

step "phase-verify $work/boot/manifest.json"
phase verify "$work/boot/manifest.json" --keys-dir "$work/keys" --check-dir "$work/boot"

step "kexec-boot --dry-run"
"$here/initramfs/kexec-boot" --dry-run --keys-dir "$work/keys" "$work/boot"

step "A tampered manifest is refused"
sed 's/"version": "/"version": "evil-/' "$work/boot/manifest.json" >"$work/tampered.json"
if phase verify "$work/tampered.json" --keys-dir "$work/keys"; then
    echo "demo-local: a tampered manifest verified!" >&2; exit 1; fi

printf '\n\033[1mdemo-local: OK\033[0m\n'

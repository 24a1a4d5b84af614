#!/usr/bin/env bash
# make demo: the project's main job in one command (docs/boot-lan.md).
#
#   a LAN of network namespaces:  bridge ── tap ── QEMU: Debian's kernel + our USB initramfs
#                                    ├── router    busybox udhcpd (the VM's address)
#                                    └── provider  plasmd serve (HTTP, mDNS, DHT)
#
# The VM is given no provider: it gets an address by DHCP, finds the provider by mDNS, verifies
# the signed manifest, downloads the image with sha256 checks and kexecs into it. The image is
# the real OS (docs/os-image.md: Debian with systemd, built once into build/os and reused):
# its kernel, its initramfs and its 120 MB root filesystem, carried across kexec; systemd
# comes up and prints PHASE-OS-UP state=running, then powers off. DEMO_IMAGE=marker boots the
# 9-line stage-2 marker instead (fast: PHASE-STAGE2-OK). DEMO_USB=1 (make demo USB=1) boots
# the USB stick instead of -kernel/-initrd: the image `make usb` writes (Debian's signed shim,
# GRUB and generic kernel, our initramfs trusting the demo key), on a USB disk, under OVMF with
# Secure Boot on and Microsoft's keys enrolled, as a user's machine would. The serial console
# is shown live.
# Everything (namespaces, processes, temp files) is removed on exit, also on Ctrl-C.
# Needs root, qemu-system-x86_64, /dev/net/tun (and mmdebstrap, squashfs-tools for the OS
# image; OVMF, fdisk, mtools, e2fsprogs, grub-pc-bin for the stick); `make demo` installs the
# rest first.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$here/.venv/bin/python}
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
BOOT_TIMEOUT=${DEMO_BOOT_TIMEOUT:-900} # seconds for the VM to come up (TCG: OS ~80 s, marker ~20 s)
IMAGE=${DEMO_IMAGE:-os}
USB=${DEMO_USB:-0}
OVMF=/usr/share/OVMF
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() {
    echo "demo: $*" >&2
    exit 1
}

# What is missing, all in one message, before anything is created.
missing=()
[ "$(id -u)" = 0 ] || missing+=("root (network namespaces and a tap device): run it with sudo")
[ -c /dev/net/tun ] || missing+=("/dev/net/tun (the tun module: modprobe tun)")
command -v qemu-system-x86_64 >/dev/null || missing+=("qemu-system-x86_64 (apt-get install qemu-system-x86)")
command -v ip >/dev/null || missing+=("ip (apt-get install iproute2)")
/bin/busybox udhcpd --help >/dev/null 2>&1 || missing+=("busybox udhcpd (apt-get install busybox-static)")
command -v kexec >/dev/null || missing+=("kexec (apt-get install kexec-tools)")
command -v "$PY" >/dev/null || missing+=("the Python venv $PY (make venv)")
case "$IMAGE" in
    os)
        command -v mmdebstrap >/dev/null || missing+=("mmdebstrap (apt-get install mmdebstrap), or DEMO_IMAGE=marker")
        command -v mksquashfs >/dev/null || missing+=("mksquashfs (apt-get install squashfs-tools), or DEMO_IMAGE=marker")
        ;;
    marker) ;;
    *) missing+=("DEMO_IMAGE=$IMAGE: give os (default) or marker") ;;
esac
case "$USB" in
    0 | "") USB=0 ;;
    1)
        # What scripts/build-usb.sh and the firmware boot need (make usb-kernel fetches the
        # kernel, build-usb.sh Debian's shim and GRUB, both with apt).
        for file in OVMF_CODE_4M.secboot.fd OVMF_VARS_4M.ms.fd; do
            [ -f "$OVMF/$file" ] || missing+=("$OVMF/$file (apt-get install ovmf)")
        done
        for tool in sfdisk:fdisk mformat:mtools mcopy:mtools mkfs.ext4:e2fsprogs \
            grub-mkimage:grub-pc-bin apt-get:apt make:make; do
            command -v "${tool%%:*}" >/dev/null || missing+=("${tool%%:*} (apt-get install ${tool#*:})")
        done
        ;;
    *) missing+=("DEMO_USB=$USB: give 1 (boot the USB stick) or 0 (the default: -kernel/-initrd)") ;;
esac
if [ ${#missing[@]} -gt 0 ]; then
    printf 'demo: cannot run, missing:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 1
fi

suffix=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
ns() { echo "phase-demo-$suffix-$1"; }
HUB=$(ns hub) ROUTER=$(ns router) PROVIDER=$(ns provider)
BRIDGE=br$suffix TAP=tap$suffix
net=10.214.$((RANDOM % 200 + 1)) # exists only inside the namespaces below
work=$(mktemp -d "${TMPDIR:-/tmp}/phase-demo.XXXXXX")
pids=()
namespaces=()
cleanup() {
    set +e
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    for name in "${namespaces[@]}"; do ip netns del "$name" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted" >&2; exit 130' INT TERM

if [ "$USB" = 1 ]; then
    step "Images: Debian's signed kernel, the zipapp, a demo release key, stage 1, the stick and the $IMAGE image"
    # The signed generic kernel the stick boots (the cloud kernel has no drivers for the USB
    # controllers and NICs of real machines): make usb-kernel, cached in build/usb/kernel.
    make --no-print-directory -s -C "$here" usb-kernel
    kernel_dir=$here/build/usb/kernel
else
    step "Images: Debian's kernel, the zipapp, a demo release key, stage 1 and the $IMAGE image"
    "$here/scripts/fetch-kernel.sh" "$here/build/boot/kernel"
    kernel_dir=$here/build/boot/kernel
fi
kernel=$kernel_dir/vmlinuz
modules=$kernel_dir/modules/$(cat "$kernel_dir/version")
"$PY" -m phase_client plasmd keygen --out "$work/release.key" >/dev/null
mkdir -p "$work/keys" && cp "$work/release.key.pub" "$work/keys/demo.pub"
echo "release key: $(cat "$work/release.key.pub")"
"$PY" "$here/scripts/build-zipapp.py" --output "$work/phase.pyz" >/dev/null
"$here/scripts/build-initramfs.sh" --modules "$modules" --zipapp "$work/phase.pyz" \
    --keys "$work/keys" --output "$work/initramfs.cpio.zst" >/dev/null
if [ "$IMAGE" = os ]; then
    # Built once (~2 min, Debian's packages cached in build/os/.apt-cache), then reused while
    # its inputs are unchanged. plasmd serves build/os as it is.
    artifacts=$here/build/os
    combo=$artifacts/stable/x86_64
    "$PY" -m phase_client plasmd image build --out "$combo" --apt-cache "$artifacts/.apt-cache"
    MEMORY=2048 # the OS image through kexec needs more than 1 GiB: docs/boot.md
    DONE=PHASE-OS-UP
else
    "$here/scripts/build-initramfs.sh" --stage2 --output "$work/stage2.cpio.zst" >/dev/null
    artifacts=$work/artifacts
    combo=$artifacts/stable/x86_64
    mkdir -p "$combo"
    cp "$kernel" "$combo/vmlinuz"
    cp "$work/stage2.cpio.zst" "$combo/initramfs.img"
    echo "console=ttyS0 quiet phase.demo=1" >"$combo/cmdline"
    MEMORY=1024
    DONE=PHASE-STAGE2-OK
fi
# The kernel command line. The stick's GRUB adds the console and the state partition (phase.cfg
# on its ESP stays the user's), and the stick's kernel is not quiet: its log shows the Secure
# Boot chain (EFI stub, secureboot, lockdown lines).
CMDLINE="panic=-1 phase.arch=x86_64 phase.timeout=5 phase.test=poweroff"
if [ "$USB" = 1 ]; then
    "$here/scripts/build-usb.sh" --kernel "$kernel" --initramfs "$work/initramfs.cpio.zst" \
        --debs "$here/build/usb/debs" --cmdline "$CMDLINE" --output "$work/phase-usb.img"
    ls -l "$work/phase-usb.img"
fi
ls -l "$work/initramfs.cpio.zst" "$combo"

step "LAN: namespaces $(ns '{hub,router,provider}'), bridge $BRIDGE, subnet $net.0/24"
add_ns() {
    ip netns add "$1"
    namespaces+=("$1")
    ip -n "$1" link set lo up
}
add_ns "$HUB"
ip -n "$HUB" link add "$BRIDGE" type bridge
ip -n "$HUB" link set "$BRIDGE" type bridge mcast_snooping 0
ip -n "$HUB" link set "$BRIDGE" up
attach() { # $1 namespace, $2 address, $3 veth index: eth0 in $1, its peer on the bridge
    ip link add "v${suffix}$3h" type veth peer name "v${suffix}$3n"
    ip link set "v${suffix}$3h" netns "$HUB"
    ip link set "v${suffix}$3n" netns "$1"
    ip -n "$HUB" link set "v${suffix}$3h" master "$BRIDGE" up
    ip -n "$1" link set "v${suffix}$3n" name eth0
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
}
add_ns "$ROUTER" && attach "$ROUTER" "$net.1" 1
add_ns "$PROVIDER" && attach "$PROVIDER" "$net.2" 2
ip -n "$HUB" tuntap add dev "$TAP" mode tap
ip -n "$HUB" link set "$TAP" master "$BRIDGE" up

step "DHCP server: busybox udhcpd on $net.1 (leases $net.100-$net.150)"
: >"$work/udhcpd.leases"
cat >"$work/udhcpd.conf" <<EOF
start $net.100
end $net.150
interface eth0
lease_file $work/udhcpd.leases
pidfile $work/udhcpd.pid
option subnet 255.255.255.0
option router $net.1
option lease 3600
EOF
ip netns exec "$ROUTER" /bin/busybox udhcpd -f "$work/udhcpd.conf" >"$work/udhcpd.log" 2>&1 &
pids+=($!)

step "Provider: plasmd serve on $net.2:8080 (mDNS + DHT), signing with the demo key"
# Its own UTS namespace: the provider's host name (mDNS: demo-provider.local.) is not ours.
ip netns exec "$PROVIDER" unshare --uts sh -c 'hostname demo-provider && exec "$@"' sh \
    "$PY" -m phase_client plasmd serve \
    --artifacts "$artifacts" --port 8080 --key "$work/release.key" \
    --state-dir "$work/provider-state" --name demo-provider --dht-port 4001 \
    >"$work/provider.log" 2>&1 &
pids+=($!)
provider_pid=$!
for _ in $(seq 1 600); do
    grep -q "Advertising stable/x86_64" "$work/provider.log" && break
    kill -0 "$provider_pid" 2>/dev/null || { cat "$work/provider.log"; die "the provider exited"; }
    sleep 0.1
done
grep -q "Advertising stable/x86_64" "$work/provider.log" || die "the provider did not start"
sed 's/^/    provider: /' "$work/provider.log"

if [ "$USB" = 1 ]; then
    step "Boot: QEMU (TCG) on $TAP from the USB stick, OVMF with Secure Boot on; serial console follows"
    # The firmware's variables are the machine's own: a fresh copy of Microsoft's enrolled keys.
    cp "$OVMF/OVMF_VARS_4M.ms.fd" "$work/vars.fd"
    boot=(-machine "q35,smm=on" -global "driver=cfi.pflash01,property=secure,value=on"
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$OVMF/OVMF_CODE_4M.secboot.fd"
        -drive "if=pflash,format=raw,unit=1,file=$work/vars.fd"
        -device "qemu-xhci,id=xhci" -drive "if=none,id=stick,format=raw,file=$work/phase-usb.img"
        -device "usb-storage,bus=xhci.0,drive=stick,bootindex=0")
else
    step "Boot: QEMU (TCG) on $TAP, no provider on the command line; serial console follows"
    boot=(-kernel "$kernel" -initrd "$work/initramfs.cpio.zst" -append "console=ttyS0 quiet $CMDLINE")
fi
# QEMU's serial console is our stdout (and a log); the booted system powers the VM off
# (phase.test=poweroff, carried over by kexec-boot), ending QEMU.
ip netns exec "$HUB" timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max -m "$MEMORY" \
    -smp 1 -display none -no-reboot -monitor none -serial "file:$work/serial.log" "${boot[@]}" \
    -netdev "tap,id=lan,ifname=$TAP,script=no,downscript=no" \
    -device virtio-net-pci,netdev=lan </dev/null >"$work/qemu.log" 2>&1 &
qemu_pid=$!
pids+=("$qemu_pid")
: >>"$work/serial.log"
# Stream the console live until QEMU exits (stage 2's poweroff, the timeout, or Ctrl-C).
tail -n +1 -f --pid="$qemu_pid" "$work/serial.log" &
tail_pid=$!
pids+=("$tail_pid")
wait "$qemu_pid" || true
wait "$tail_pid" 2>/dev/null || true

if [ "$IMAGE" = os ] && ! grep -Eq "(^|login: )PHASE-OS-UP state=running " "$work/serial.log"; then
    sed 's/^/    qemu: /' "$work/qemu.log" >&2
    line=$(grep -m1 -o 'PHASE-OS-UP.*' "$work/serial.log" || true)
    die "the OS did not come up within ${BOOT_TIMEOUT}s${line:+ ($line)}"
fi
if ! grep -q "$DONE" "$work/serial.log"; then
    sed 's/^/    qemu: /' "$work/qemu.log" >&2
    die "the VM did not reach stage 2 within ${BOOT_TIMEOUT}s"
fi
# The stick's point: the firmware checked shim, shim GRUB, GRUB the kernel, and the kernel
# locked itself down (so stage 2's kernel had to be signed too).
if [ "$USB" = 1 ] && ! grep -q "Kernel is locked down from EFI Secure Boot" "$work/serial.log"; then
    die "the stick booted, but not with Secure Boot on (no lockdown line on the console)"
fi
[ "$USB" = 0 ] || printf '\ndemo: booted from the USB stick with Secure Boot on (%s)\n' \
    "$(grep -m1 -o 'Kernel is locked down from EFI Secure Boot[^;]*' "$work/serial.log" | tr -d '\r')"
printf '\ndemo: OK, %s\n' "$(grep -m1 -o "$DONE.*" "$work/serial.log" | tr -d '\r')"

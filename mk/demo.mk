# The project's main job, end to end (docs: README.md, docs/boot-lan.md).
#   make demo         as root: a namespace LAN with DHCP and plasmd serve; QEMU boots our USB
#                     initramfs with no provider given: mDNS -> verify -> fetch -> kexec -> stage 2
#   make demo USB=1   the same from the USB stick image (make usb), under OVMF with Secure Boot on
#   make demo-local   provider -> discover (DHT) -> fetch -> verify -> kexec-boot --dry-run, on loopback
.PHONY: demo demo-local

# Root first: installing packages, namespaces and the tap all need it, and saying so beats an
# apt-get error. scripts/demo.sh then names anything else that is missing.
demo:
	@[ "$$(id -u)" = 0 ] || { echo "make demo: needs root (apt-get, network namespaces, a tap device): run sudo make demo" >&2; exit 1; }
	@$(MAKE) --no-print-directory deps venv
	PY=$(abspath $(VPY)) DEMO_USB=$(or $(USB),$(DEMO_USB)) scripts/demo.sh

demo-local: venv
	PY=$(abspath $(VPY)) scripts/demo-local.sh

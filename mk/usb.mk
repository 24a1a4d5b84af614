# The USB stick (docs/usb.md): one image that boots on UEFI (Secure Boot on or off) and, on
# x86_64, legacy BIOS.
#   make usb [KEYS=dir] [ARCH=x86_64|arm64] [USB_CMDLINE='phase.provider=...']
#                       build/phase-usb-<arch>.img: Debian's signed shim, GRUB and generic
#                       kernel + our initramfs (with that kernel's NIC and USB storage drivers)
#   make usb-kernel [ARCH=arm64]
#                       build/usb/kernel (x86_64) or build/usb/kernel-arm64: Debian's signed
#                       generic kernel (linux-image-<abi>-amd64 or -arm64)
#   make usb-initramfs [ARCH=arm64]
#                       build/usb/initramfs-<arch>.cpio.zst (cached by its inputs)
#   make test-usb       the stick's tests (image layout and reproducibility; QEMU boots with
#                       OVMF Secure Boot and SeaBIOS, and the arm64 stick with AAVMF, on a
#                       namespace LAN: needs root; scripts/write-usb.py on files)
# ARCH=aarch64 means arm64; the arm64 stick is built on any host (Debian's arm64 packages are
# only unpacked), and has no BIOS boot code (docs/usb.md).
USB_ARCH = $(if $(filter arm64 aarch64,$(ARCH)),arm64,$(or $(ARCH),x86_64))
USB_DEB_ARCH = $(if $(filter arm64,$(USB_ARCH)),arm64,amd64)
USB_BUILD := $(BUILD)/usb
USB_KERNEL_DIR = $(USB_BUILD)/kernel$(if $(filter arm64,$(USB_ARCH)),-arm64)
USB_CMDLINE ?=

.PHONY: usb usb-kernel usb-initramfs test-usb

# The signed generic kernel the metapackage linux-image-amd64 (or linux-image-arm64) names today
# (the cloud kernel has no drivers for the NICs and USB controllers of real machines). apt names
# a foreign arch's packages name:arch (dpkg --add-architecture arm64 once, on x86_64).
# A fresh host may lack the foreign arch or its lists: as root they are added once.
usb-kernel:
	@abi() { apt-cache depends linux-image-$(USB_DEB_ARCH):$(USB_DEB_ARCH) 2>/dev/null | \
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-$(USB_DEB_ARCH)\)\(:$(USB_DEB_ARCH)\)\{0,1\}$$/\1/p' | head -n 1; }; \
	pkg=$$(abi); \
	if [ -z "$$pkg" ] && [ "$$(id -u)" = 0 ]; then \
		[ "$$(dpkg --print-architecture)" = $(USB_DEB_ARCH) ] || \
			dpkg --print-foreign-architectures | grep -qx $(USB_DEB_ARCH) || dpkg --add-architecture $(USB_DEB_ARCH); \
		apt-get update -qq >/dev/null 2>&1 || true; pkg=$$(abi); fi; \
	[ -n "$$pkg" ] || { echo "make usb-kernel: no linux-image-$(USB_DEB_ARCH):$(USB_DEB_ARCH) in apt's lists (apt-get update?$(if $(filter arm64,$(USB_ARCH)), on x86_64: dpkg --add-architecture arm64 first))" >&2; exit 1; }; \
	if [ -f $(USB_KERNEL_DIR)/version ] && [ "linux-image-$$(cat $(USB_KERNEL_DIR)/version)" != "$$pkg" ]; then \
		rm -rf $(USB_KERNEL_DIR); fi; \
	ARCH=$(USB_ARCH) KERNEL_PACKAGE=$$pkg scripts/fetch-kernel.sh $(USB_KERNEL_DIR)

# Cached by its inputs: the build scripts, the init, the zipapp (itself reproducible), the
# trust, the kernel, the arch and the commit date (SOURCE_DATE_EPOCH); a hit takes no time, a
# miss ~45 s (x86_64) or ~55 s (arm64: Debian's arm64 packages unpacked, no emulation).
USB_TRUST = $(if $(ROOT),$(ROOT) $(if $(KEYS),$(KEYS)/*.pub),$(if $(KEYS),$(KEYS),$(BOOT)/dev-keys)/*.pub)
usb-initramfs: deps zipapp usb-kernel $(if $(KEYS)$(ROOT),,boot-dev-key)
	$(if $(ROOT),$(VPY) -m phase_client plasmd root show $(ROOT) -q)
	@key=$$({ cat scripts/build-initramfs.sh scripts/pack-cpio.sh scripts/pack-stdlib.py scripts/pyczip.py \
		scripts/initramfs-zipapp.py \
		initramfs/init initramfs/kexec-boot initramfs/udhcpc.script $(BUILD)/phase.pyz \
		$(USB_TRUST) $(USB_KERNEL_DIR)/version; echo "$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct)}"; \
		$(if $(filter-out x86_64,$(USB_ARCH)),echo $(USB_ARCH);) } | \
		sha256sum | cut -c1-16); \
	out=$(USB_BUILD)/initramfs-$(USB_ARCH)-$$key.cpio.zst; \
	if [ -f "$$out" ]; then echo "initramfs $$out: cached"; else \
		scripts/build-initramfs.sh --arch $(USB_ARCH) \
		--modules $(USB_KERNEL_DIR)/modules/$$(cat $(USB_KERNEL_DIR)/version) \
		--zipapp $(BUILD)/phase.pyz \
		$(if $(ROOT),--root $(ROOT) $(if $(KEYS),--keys $(KEYS)),--keys $(if $(KEYS),$(KEYS),$(BOOT)/dev-keys)) \
		--output "$$out" && \
		find $(USB_BUILD) -maxdepth 1 -name 'initramfs-$(USB_ARCH)-*.cpio.zst' ! -path "$$out" -delete; fi; \
	ln -sfn "$$(basename "$$out")" $(USB_BUILD)/initramfs-$(USB_ARCH).cpio.zst

usb: usb-initramfs
	scripts/build-usb.sh --arch $(USB_ARCH) --kernel $(USB_KERNEL_DIR)/vmlinuz \
		--initramfs $(USB_BUILD)/initramfs-$(USB_ARCH).cpio.zst --debs $(USB_BUILD)/debs \
		$(if $(USB_CMDLINE),--cmdline '$(USB_CMDLINE)') --output $(BUILD)/phase-usb-$(USB_ARCH).img

test-usb: deps venv usb-kernel
	$(VPY) -m pytest -q tests/test_usb.py tests/test_usb_arm64.py tests/test_usb_write.py $(PYTEST_ARGS)

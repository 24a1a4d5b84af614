# The USB stick (docs/usb.md): one image that boots on UEFI (Secure Boot on or off) and BIOS.
#   make usb [KEYS=dir] [ARCH=x86_64] [USB_CMDLINE='phase.provider=...']
#                       build/phase-usb-<arch>.img: Debian's signed shim, GRUB and generic
#                       kernel + our initramfs (with that kernel's NIC and USB storage drivers)
#   make usb-kernel     build/usb/kernel: Debian's signed generic kernel (linux-image-<abi>-amd64)
#   make test-usb       the stick's tests (image layout and reproducibility; QEMU boots with
#                       OVMF Secure Boot and SeaBIOS on a namespace LAN: needs root;
#                       scripts/write-usb.py on files)
USB_ARCH = $(or $(ARCH),x86_64)
USB_BUILD := $(BUILD)/usb
USB_KERNEL_DIR := $(USB_BUILD)/kernel
USB_CMDLINE ?=

.PHONY: usb usb-kernel usb-initramfs test-usb

# The signed generic kernel the metapackage linux-image-amd64 names today (the cloud kernel has
# no drivers for the NICs and USB controllers of real machines).
usb-kernel:
	@pkg=$$(apt-cache depends linux-image-amd64 2>/dev/null | \
		sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$$/\1/p' | head -n 1); \
	[ -n "$$pkg" ] || { echo "make usb-kernel: no linux-image-amd64 in apt's lists (apt-get update?)" >&2; exit 1; }; \
	if [ -f $(USB_KERNEL_DIR)/version ] && [ "linux-image-$$(cat $(USB_KERNEL_DIR)/version)" != "$$pkg" ]; then \
		rm -rf $(USB_KERNEL_DIR); fi; \
	KERNEL_PACKAGE=$$pkg scripts/fetch-kernel.sh $(USB_KERNEL_DIR)

# Cached by its inputs: the build scripts, the init, the zipapp (itself reproducible), the
# trust, the kernel and the commit date (SOURCE_DATE_EPOCH); a hit takes no time, a miss ~45 s.
USB_TRUST = $(if $(ROOT),$(ROOT) $(if $(KEYS),$(KEYS)/*.pub),$(if $(KEYS),$(KEYS),$(BOOT)/dev-keys)/*.pub)
usb-initramfs: deps zipapp usb-kernel $(if $(KEYS)$(ROOT),,boot-dev-key)
	$(if $(ROOT),$(VPY) -m phase_client plasmd root show $(ROOT) -q)
	@key=$$({ cat scripts/build-initramfs.sh scripts/pack-cpio.sh scripts/pack-stdlib.py \
		initramfs/init initramfs/kexec-boot initramfs/udhcpc.script $(BUILD)/phase.pyz \
		$(USB_TRUST) $(USB_KERNEL_DIR)/version; echo "$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct)}"; } | \
		sha256sum | cut -c1-16); \
	out=$(USB_BUILD)/initramfs-$(USB_ARCH)-$$key.cpio.gz; \
	if [ -f "$$out" ]; then echo "initramfs $$out: cached"; else \
		scripts/build-initramfs.sh --modules $(USB_KERNEL_DIR)/modules/$$(cat $(USB_KERNEL_DIR)/version) \
		--zipapp $(BUILD)/phase.pyz \
		$(if $(ROOT),--root $(ROOT) $(if $(KEYS),--keys $(KEYS)),--keys $(if $(KEYS),$(KEYS),$(BOOT)/dev-keys)) \
		--output "$$out" && \
		find $(USB_BUILD) -maxdepth 1 -name 'initramfs-$(USB_ARCH)-*.cpio.gz' ! -path "$$out" -delete; fi; \
	ln -sfn "$$(basename "$$out")" $(USB_BUILD)/initramfs-$(USB_ARCH).cpio.gz

usb: usb-initramfs
	scripts/build-usb.sh --arch $(USB_ARCH) --kernel $(USB_KERNEL_DIR)/vmlinuz \
		--initramfs $(USB_BUILD)/initramfs-$(USB_ARCH).cpio.gz --debs $(USB_BUILD)/debs \
		$(if $(USB_CMDLINE),--cmdline '$(USB_CMDLINE)') --output $(BUILD)/phase-usb-$(USB_ARCH).img

test-usb: deps venv usb-kernel
	$(VPY) -m pytest -q tests/test_usb.py tests/test_usb_write.py $(PYTEST_ARGS)

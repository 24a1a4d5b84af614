# The boot side (docs/boot.md): zipapp, initramfs, stage-2 test image, Debian kernel, QEMU e2e.
#   make zipapp                 build/phase.pyz (+ build/bin/phase-{verify,fetch,discover} links)
#   make initramfs KEYS=dir     build/initramfs.cpio.zst trusting dir/*.pub
#   make initramfs ROOT=file    ... trusting the root of trust file (root.json, docs/trust.md)
#   make initramfs ARCH=arm64   build/initramfs-arm64.cpio.zst (Debian's arm64 packages, no emulation)
#   make kernel | stage2 [ARCH=arm64] | e2e
BOOT := $(BUILD)/boot
# ARCH=arm64 (or aarch64) builds for arm64 on any host; x86_64 keeps its paths.
BOOT_ARCH := $(if $(filter arm64 aarch64,$(ARCH)),arm64,x86_64)
ARCH_SUFFIX := $(if $(filter arm64,$(BOOT_ARCH)),-arm64)
KERNEL_DIR := $(BOOT)/kernel$(ARCH_SUFFIX)
# Without KEYS=dir the initramfs trusts a development key made once in build/boot/dev-key
# (its private half signs nothing but local tests): fine for trying it out, never for a release.
DEV_KEY := $(BOOT)/dev-key/signing.key
KEYS ?=
ROOT ?=

.PHONY: zipapp initramfs stage2 kernel e2e boot-dev-key

zipapp: venv
	$(VPY) scripts/build-zipapp.py --output $(BUILD)/phase.pyz
	@mkdir -p $(BUILD)/bin
	@for tool in phase-verify phase-fetch phase-discover phase-boot; do \
		ln -sfn ../phase.pyz $(BUILD)/bin/$$tool; done

kernel:
	ARCH=$(BOOT_ARCH) scripts/fetch-kernel.sh $(KERNEL_DIR)

boot-dev-key: venv
	@mkdir -p $(BOOT)/dev-key $(BOOT)/dev-keys
	@[ -f $(DEV_KEY) ] || $(VPY) -m phase_client plasmd keygen --out $(DEV_KEY) >/dev/null
	@cp $(DEV_KEY).pub $(BOOT)/dev-keys/dev.pub
	@echo "WARNING: no KEYS=dir given: the initramfs trusts the development key $(DEV_KEY).pub"

# With ROOT=file the root is checked first (signed by a threshold of its own root keys).
initramfs: deps zipapp kernel $(if $(KEYS)$(ROOT),,boot-dev-key)
	$(if $(ROOT),$(VPY) -m phase_client plasmd root show $(ROOT) -q)
	scripts/build-initramfs.sh --arch $(BOOT_ARCH) \
		--modules $(KERNEL_DIR)/modules/$$(cat $(KERNEL_DIR)/version) --zipapp $(BUILD)/phase.pyz \
		$(if $(ROOT),--root $(ROOT) $(if $(KEYS),--keys $(KEYS)),--keys $(if $(KEYS),$(KEYS),$(BOOT)/dev-keys)) \
		--output $(BUILD)/initramfs$(ARCH_SUFFIX).cpio.zst

stage2: deps
	scripts/build-initramfs.sh --arch $(BOOT_ARCH) --stage2 --output $(BUILD)/stage2$(ARCH_SUFFIX).cpio.zst

# The real boot under QEMU (TCG): builds its own key, zipapp and images in a temp dir.
e2e: deps venv kernel
	$(VPY) -m pytest -q -m qemu tests/test_e2e_qemu.py $(PYTEST_ARGS)

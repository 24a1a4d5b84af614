# The OS image (issue 13, docs/os-image.md): Debian (mmdebstrap) + systemd + phase-client, with
# Debian's generic kernel and its own small initramfs. Building needs root.
#   make os-image [ARCH=x86_64]   build/os/stable/<arch>/{vmlinuz,initramfs.img,rootfs.sqfs,cmdline,version}
#                                 (does nothing when current; OS_IMAGE_ARGS="--force" rebuilds)
#   make test-os-image            build it (cached) and boot it directly under QEMU (TCG)
.PHONY: os-image test-os-image
OS_ARCH = $(or $(ARCH),x86_64)
OS_IMAGE_ARGS ?=

os-image: deps venv
	$(VPY) -m phase_client plasmd image build --out $(BUILD)/os/stable/$(OS_ARCH) \
		--arch $(OS_ARCH) --apt-cache $(BUILD)/os/.apt-cache $(OS_IMAGE_ARGS)

test-os-image: deps venv
	$(VPY) -m pytest -q tests/test_os_image_plan.py tests/test_os_image.py $(PYTEST_ARGS)

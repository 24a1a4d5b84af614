"""The OS image builder behind ``plasmd image build`` (docs/os-image.md).

- ``plan``: pure planning: the image spec and its checks, the package list, apt sources, the
  mmdebstrap and mksquashfs command lines, the cache key, the prerequisites message.
- ``inputs``: what of the project goes into the image, hashed (the cache key's input), and the
  default SOURCE_DATE_EPOCH.
- ``build``: runs the tools (mmdebstrap, build-os-initramfs.sh, mksquashfs) in a temporary
  directory beside the output and renames the result into place.
- ``progress``: step lines, with a live elapsed-time counter on a terminal.
"""

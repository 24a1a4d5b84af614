"""The last step before kexec: check a phase-fetch directory against its verified manifest and
stage what will be loaded (``stage``)."""

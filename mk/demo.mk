# The project's main job, end to end (docs: README.md).
#   make demo-local   provider -> discover (DHT) -> fetch -> verify -> kexec-boot --dry-run, on loopback
.PHONY: demo-local
demo-local: venv
	PY=$(abspath $(VPY)) scripts/demo-local.sh

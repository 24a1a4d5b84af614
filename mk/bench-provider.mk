# plasmd serve vs nginx (same directory, same run): 8 and 64 curl clients on a 256 MiB
# artifact, /health requests/s, provider memory. Override e.g. BENCH_PROVIDER_ARGS="--size-mib 32 --runs 1".
.PHONY: bench-provider
BENCH_PROVIDER_ARGS ?=
bench-provider: deps venv
	$(VPY) bench/provider_throughput/run.py $(BENCH_PROVIDER_ARGS)

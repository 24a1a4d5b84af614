# phase-fetch benchmark: 1 GiB from nginx on loopback vs curl, curl+sha256sum, aria2c; and two
# rate-limited providers vs one. Results: stdout (markdown) and build/bench-fetch.json.
.PHONY: bench-fetch
BENCH_FETCH_ARGS ?=
bench-fetch: deps venv
	$(VPY) bench/fetch/run.py --json $(BUILD)/bench-fetch.json $(BENCH_FETCH_ARGS)

# phase-discover (issue 7): time to first answer in auto mode, on the LAN (mDNS) and via the
# DHT only, next to a plain zeroconf browse, dig and a stock kademlia get. Needs root (ip netns).
.PHONY: bench-discover test-multi-provider
bench-discover: venv
	$(VPY) bench/discover/run.py --runs 10 $(BENCH_ARGS)

test-multi-provider: venv
	$(VPY) -m pytest -q tests/test_multi_provider.py $(PYTEST_ARGS)

# mDNS (issue 5): namespace tests and the time-to-answer benchmark. Both need root (ip netns).
.PHONY: test-mdns bench-mdns
test-mdns: venv
	$(VPY) -m pytest -q tests/test_mdns_records.py tests/test_mdns_netns.py tests/test_mdns_avahi.py $(PYTEST_ARGS)

bench-mdns: venv
	$(VPY) bench/mdns/bench_discover.py --runs 10 $(BENCH_ARGS)

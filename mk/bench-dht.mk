# DHT (issue 6): lookup latency and messages per lookup on loopback networks of 10..1000 nodes,
# phase provider records vs stock kademlia in the same run. Results: build/bench-dht.json and a
# Markdown table on stdout (copied into docs/bench-dht.md). Override e.g. BENCH_DHT_ARGS="--sizes 10 50".
.PHONY: bench-dht test-dht
BENCH_DHT_ARGS ?= --sizes 10 50 200 500 1000 --lookups 30
bench-dht: venv
	$(VPY) bench/dht/run.py $(BENCH_DHT_ARGS)

test-dht: venv
	$(VPY) -m pytest -q tests/test_dht_records.py tests/test_dht_network.py tests/test_dht_advertiser.py $(PYTEST_ARGS)

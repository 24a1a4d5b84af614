# libp2p Kademlia (docs/dht.md): the js-libp2p test network's pinned packages, its tests and
# the lookup benchmark against js-libp2p's own findProviders.
#   make libp2p-js       npm ci in tests/libp2p_js (the lockfile's exact versions; node >= 20)
#   make test-libp2p     the codec and interop tests
#   make bench-libp2p    bench/libp2p/run.py (Markdown on stdout, build/bench-libp2p.json)
LIBP2P_JS := tests/libp2p_js
BENCH_LIBP2P_ARGS ?=
.PHONY: libp2p-js test-libp2p bench-libp2p

libp2p-js: $(LIBP2P_JS)/node_modules/.package-lock.json

$(LIBP2P_JS)/node_modules/.package-lock.json: $(LIBP2P_JS)/package.json $(LIBP2P_JS)/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || scripts/install-deps $(LIBP2P_JS)/apt-packages.txt
	cd $(LIBP2P_JS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

test-libp2p: venv libp2p-js
	$(VPY) -m pytest -q tests/test_libp2p_codec.py tests/test_libp2p_interop.py $(PYTEST_ARGS)

bench-libp2p: venv libp2p-js
	$(VPY) bench/libp2p/run.py --json $(BUILD)/bench-libp2p.json $(BENCH_LIBP2P_ARGS)

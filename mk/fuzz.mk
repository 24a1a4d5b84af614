# Fuzzing (docs/fuzz.md): the tests/test_fuzz_*.py hypothesis targets with the random "fuzz"
# profile and FUZZ_EXAMPLES examples each, instead of the small reproducible budget of make test.
#   make fuzz                      20000 examples per target
#   make fuzz FUZZ_EXAMPLES=200000 longer
.PHONY: fuzz
FUZZ_EXAMPLES ?= 20000

fuzz: venv
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(VPY) -m pytest -q -p no:cacheprovider \
		--hypothesis-show-statistics --durations=0 tests/test_fuzz_*.py $(PYTEST_ARGS)

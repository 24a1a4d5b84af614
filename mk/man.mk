# Man pages (packaging/man/) and bash completion (packaging/bash-completion/phase), generated
# from the argparse parsers; tests/test_plasmd_manpages.py fails when they are stale.
.PHONY: man man-check
man: venv
	$(VPY) scripts/gen-manpages.py

man-check: venv
	$(VPY) scripts/gen-manpages.py --check

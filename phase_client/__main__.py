"""``python -m phase_client TOOL ...``"""

import sys

from phase_client.cli import main

sys.exit(main(["phase", *sys.argv[1:]]))

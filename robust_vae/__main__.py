"""``python -m robust_vae COMMAND ...``: the same as ``robust-vae COMMAND ...``."""

import sys

from robust_vae.cli.app import main

sys.exit(main())

# SPDX-License-Identifier: MIT
"""`python -m shim` runs the command line."""

import sys

from shim.cli.main import main

sys.exit(main())

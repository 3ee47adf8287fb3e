"""``python -m distil`` runs the CLI (also under ``torchrun``)."""

import sys

from distil.cli.main import main

sys.exit(main())

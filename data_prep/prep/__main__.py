"""`python -m data_prep.prep ...` = `radiogen prep ...`."""

import sys

from .prep import main

sys.exit(main())

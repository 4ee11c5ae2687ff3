"""`python -m awd_lstm`: the `awd-lstm` command."""

import sys

from awd_lstm.cli import main

sys.exit(main())

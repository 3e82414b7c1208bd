"""``python -m guardian_dns`` is the same as the ``guardian-dns`` console script."""

import sys

from guardian_dns.cli import main

sys.exit(main())

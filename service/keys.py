"""`python -m service.keys`, the documented command; the code is service/ops/keys.py."""

import sys

from service.ops.keys import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m service.cli`, the documented command; the code is service/ops/cli.py."""

from service.ops.cli import main

if __name__ == "__main__":
    main()

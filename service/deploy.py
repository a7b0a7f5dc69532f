"""`python -m service.deploy`, the documented command; the code is service/ops/deploy.py."""

from service.ops.deploy import main

if __name__ == "__main__":
    main()

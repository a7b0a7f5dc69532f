"""The script uWSGI runs as each instance's programmed mule (conf/uwsgi/parse.ini): the coordinator."""

import sys
from pathlib import Path

# The mule runs this file as a script: the repository root must be importable for `service`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

from service.jobs.coordinator import main  # noqa: E402

main()

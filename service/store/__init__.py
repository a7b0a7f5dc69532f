"""The store: what every worker and coordinator of the service shares (jobs, keys, annotated results).

One host: SQLite in [jobs] dir, nothing to install. Several hosts: PostgreSQL ([store] url), the
one place where hosts meet. Only service.settings below it; every layer above may use it.
"""

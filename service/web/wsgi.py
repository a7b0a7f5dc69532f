"""uWSGI's entry point (conf/uwsgi/parse.ini: `module = service.web.wsgi:application`).

With lazy-apps this import runs in each worker after fork: every worker builds its own app and
loads its own model, and the master never imports torch.
"""

from service.web.app import create_app

application = create_app()

"""Our WSGI app under gunicorn's threaded workers (the server before granian), for
``bench.server_models`` only:

    gunicorn -w 2 -k gthread --threads 8 bench.gunicorn_app:app
"""

from __future__ import annotations

from bot import logs
from bot.config import Settings
from bot.server import create_app

logs.configure()
app = create_app(Settings.from_env())

"""gunicorn config for running the agent by hand: `gunicorn -c infra/gunicorn.conf.py --bind 127.0.0.1:8700 'agent.app:create_app()'`.

The settings live in the installed package (agent/gunicorn_conf.py), which `deploy-agent` uses; this file only
points at them so there is one copy.
"""

from agent.gunicorn_conf import *  # noqa: F403

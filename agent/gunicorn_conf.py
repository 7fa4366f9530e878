"""The project's gunicorn settings; `deploy-agent` passes the bind address from DEPLOY_AGENT_BIND.

Used as `gunicorn -c python:agent.gunicorn_conf --bind HOST:PORT 'agent.app:create_app()'`.
"""

from typing import Any

from agent.logs import GUNICORN_LOGCONFIG

# gthread: requests are short; a deploy runs in its own thread after the 202. Any number of workers and
# threads is correct (the lock and the state live in DEPLOY_AGENT_STATE_DIR); two workers keep the
# agent answering while one is busy.
worker_class = "gthread"
workers = 2
# A thread is held for a whole request: a follower's long poll (at most 25 s) and a client that sends its
# headers slowly hold one each, and so does a dry run while the registry answers. 16 per worker leave room for a
# handful of each while status answers at once; idle keep-alive connections wait in the worker's poller, not in a
# thread. Long polls may hold at most half of them and dry runs' registry lookups a quarter (agent/threadshares.py):
# one beyond that answers at once, so status and /healthz always find a thread.
threads = 16
keepalive = 5
# No worker recycling: a recycled worker would cut a running deploy short.
max_requests = 0
timeout = 60
# On stop, give a running step time to finish before the worker is killed; what is still running
# then is marked interrupted at the next start.
graceful_timeout = 60
accesslog = None
# gunicorn 23+ opens a control socket under $HOME by default; the agent needs none, and agents would share it.
control_socket_disable = True
logconfig_dict = GUNICORN_LOGCONFIG
# Cloudflare Tunnel (cloudflared) is the only proxy; forwarded headers are not trusted for anything.
forwarded_allow_ips = "127.0.0.1"


def post_worker_init(worker: Any) -> None:
    """Size the worker's long-poll and registry-lookup slots from its real thread count (`--threads` may override
    the one above)."""
    from agent.threadshares import size_for_worker

    size_for_worker(worker)

"""Every default of the SDK in one place (httpx keeps its own in ``_config.py``).

Modules import their defaults from here, so a number is changed once and the
docs, the CLI and the code cannot drift apart.
"""

from __future__ import annotations

import httpx

__version__ = "0.1.0"

#: the production gateway
DEFAULT_BASE_URL = "https://api-merchant.alikassa.com"
#: per attempt: 10 s to connect, 30 s for each read and write
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_MAX_CONNECTIONS = 100
#: an idle connection is closed after this many seconds
DEFAULT_KEEPALIVE_EXPIRY = 5.0
DEFAULT_USER_AGENT = f"alikassa-async/{__version__}"

#: hosts where plain http is allowed without ``allow_plain_http`` (a local sandbox)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

#: status requests that waits, watches and batches of one client keep in flight at once
DEFAULT_MAX_STATUS_IN_FLIGHT = 32
#: polling: seconds until a wait gives up (None: forever), first and longest pause
DEFAULT_POLL_TIMEOUT = 600.0
DEFAULT_POLL_INTERVAL = 1.0
DEFAULT_POLL_MAX_INTERVAL = 30.0

#: batch payouts: creates on the wire at once, and payouts parked at once
DEFAULT_CONCURRENCY = 64
DEFAULT_MAX_WAITING = 1024
#: a 404 proves absence only this long after a send could last have been processed
#: (PHP's max_execution_time is 30 s by default, nginx's proxy/fastcgi read timeouts 60 s)
DEFAULT_SETTLE = 60.0

#: the account UUID of the sandbox, the demo and the docs' examples
DEMO_ACCOUNT = "93d5df06-996c-48c3-9847-348d6b580b80"

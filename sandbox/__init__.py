"""Local emulators of the external systems, speaking their real HTTP contracts.

One server (``dispatch sandbox``, port 8100) serves every vendor under its own path prefix,
records every request (``GET /_sandbox/requests``) and injects faults on demand
(``POST /_sandbox/faults``). The demo and the tests run the real client libraries against it.
It never stands in for a real system in production.
"""

DEFAULT_PORT = 8100

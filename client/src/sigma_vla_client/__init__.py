"""sigma-vla-client: the robot side of `sigma serve` (numpy, msgpack and websockets only; no torch).

    from sigma_vla_client import PolicyClient, TemporalEnsemble

`sigma_vla_client.wire` is the msgpack wire format, shared with the server in the main `sigma-vla` package
(which depends on this distribution rather than carrying a copy).
"""

from sigma_vla_client.client import (PolicyAuthError, PolicyClient, PolicyClientError, PolicyConnectionError,
                                     PolicyServerError, PolicyTimeoutError)
from sigma_vla_client.ensemble import TemporalEnsemble
from sigma_vla_client.wire import PROTOCOL_VERSION, WireError

__version__ = "0.1.0"
__all__ = ["PROTOCOL_VERSION", "PolicyAuthError", "PolicyClient", "PolicyClientError", "PolicyConnectionError",
           "PolicyServerError", "PolicyTimeoutError", "TemporalEnsemble", "WireError"]

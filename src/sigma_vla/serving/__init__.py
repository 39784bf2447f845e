"""Serving a policy to a robot over websockets: `sigma serve`, the server and the served interface.

The robot side is `sigma_vla_client` (numpy + msgpack + websockets only); the wire format both use is
`sigma_vla_client.wire`.
"""

from sigma_vla.serving.protocol import PolicyFactory, PolicyOutputError, ServedPolicy
from sigma_vla.serving.server import PolicyServer, ServerConfig, ServerThread

__all__ = ["PolicyFactory", "PolicyOutputError", "PolicyServer", "ServedPolicy", "ServerConfig", "ServerThread"]

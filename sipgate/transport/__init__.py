"""UDP transport of the SIP edge."""

from sipgate.transport.udp import Edge, EdgeProtocol, SocketTransport, make_socket, open_listener

__all__ = ["Edge", "EdgeProtocol", "SocketTransport", "make_socket", "open_listener"]

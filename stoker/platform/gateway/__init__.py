"""The gateway: an ASGI app serving the management API, the invoke paths and health."""

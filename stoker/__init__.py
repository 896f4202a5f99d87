"""stoker: a self-hosted, event-driven function platform — the AWS Lambda model on your own machines."""

from stoker.errors import FunctionError, StokerError

__version__ = "0.1.0"
__all__ = ["Client", "FunctionError", "StokerError", "__version__"]


def __getattr__(name: str) -> object:
    # the client pulls in httpx; import it only when asked for
    if name == "Client":
        from stoker.client import Client

        return Client
    raise AttributeError(name)

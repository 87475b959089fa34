"""Serving errors: :class:`StatusError` inside the server, :class:`ServingError` in the client.

Both derive from :class:`tfbert.errors.ServingError`, in the one error tree
of :mod:`tfbert.errors`. A bad serving config file or flag raises
:class:`tfbert.errors.ConfigError`.

- :class:`StatusError`: the server's request handling raises it with the
  gRPC code TF Serving would answer with; the gRPC layer turns it into the
  RPC status.
- :class:`ServingError`: the client's view of a failed RPC (the status code
  and the server's message). A separate class, so that server code never
  depends on the client.

Example:

>>> import grpc
>>> str(not_found("model 'x' not found"))
"NOT_FOUND: model 'x' not found"
>>> error = ServingError(grpc.StatusCode.NOT_FOUND, "model 'x' not found", "Predict")
>>> str(error), error.code.name, error.details, error.rpc
("Predict: NOT_FOUND: model 'x' not found", 'NOT_FOUND', "model 'x' not found", 'Predict')
"""

from __future__ import annotations

import grpc

import tfbert.errors


class StatusError(tfbert.errors.ServingError):
    """A request failed with a definite gRPC status code.

    Args:
        code: the gRPC status code to answer with.
        message: a one-line, human-readable explanation.
    """

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def invalid_argument(message: str) -> StatusError:
    """Shorthand for an INVALID_ARGUMENT error."""
    return StatusError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> StatusError:
    """Shorthand for a NOT_FOUND error."""
    return StatusError(grpc.StatusCode.NOT_FOUND, message)


class ServingError(tfbert.errors.ServingError):
    """A failed RPC: ``code`` is the ``grpc.StatusCode``, ``details`` the server's message.

    Args:
        code: the RPC's status code.
        details: the server's message.
        rpc: the RPC's name (``Predict``, ``Classify``, ...), or "".
    """

    def __init__(self, code: grpc.StatusCode, details: str, rpc: str = "") -> None:
        self.code = code
        self.details = details
        self.rpc = rpc
        where = f"{rpc}: " if rpc else ""
        super().__init__(f"{where}{code.name}: {details}")

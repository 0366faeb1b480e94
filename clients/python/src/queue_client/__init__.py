"""queue_client: what a Python service (Raptor first) uses to call Queue.

- :class:`Signer` mints service tokens (Ed25519, ``typ: queue-svc+jwt``, ``kid`` per RFC 7638);
  :class:`KeyRing` rotates keys and gives the JWKS to publish.
- :class:`Queue` holds a client per service: ``sessions.validate``, ``users.provision``,
  ``rbac.check``/``check_batch``/``grant``/``revoke``/``grants``, ``audit.append``/
  ``append_batch``/``events``.
- Errors are :class:`QueueError` subclasses naming the service, the operation, the status and
  the API's error code, message and field.
- ``queue_client.outbox`` (extra ``sqlalchemy``): audit events committed with the app's change,
  delivered later, once. ``queue_client.flask`` (extra ``flask``): ``QueueAuth``,
  ``require_session``, ``require_permission``.
- :class:`ServiceTokenVerifier` verifies the service tokens Queue's services send the app (its
  write-back API): EdDSA pinned, keys from the issuers' JWKS, one use per ``jti`` on a change.
"""

from queue_client._http import Repeat, RetryPolicy
from queue_client.client import Audit, Queue, Rbac, Sessions, Users
from queue_client.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    QueueError,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from queue_client.jwks import KeyRing, RotationState, jwks_document, public_jwk
from queue_client.models import (
    Appended,
    AuditEvent,
    Caller,
    Check,
    Decision,
    EventPage,
    Grant,
    GrantChange,
    Party,
    Scope,
    SessionInfo,
    User,
)
from queue_client.tokens import (
    Signer,
    generate_private_key,
    key_id,
    load_private_key,
    load_private_key_file,
    load_public_key,
    private_key_pem,
    public_key_pem,
)
from queue_client.verify import ServiceTokenVerifier, TokenRefused, VerifiedToken

__all__ = [
    "Appended",
    "Audit",
    "AuditEvent",
    "Caller",
    "Check",
    "Conflict",
    "Decision",
    "EventPage",
    "Forbidden",
    "Grant",
    "GrantChange",
    "Invalid",
    "KeyRing",
    "NotFound",
    "Party",
    "Queue",
    "QueueError",
    "RateLimited",
    "Rbac",
    "Repeat",
    "RetryPolicy",
    "RotationState",
    "Scope",
    "ServiceTokenVerifier",
    "SessionInfo",
    "Sessions",
    "Signer",
    "TokenRefused",
    "Unauthorized",
    "Unavailable",
    "User",
    "Users",
    "VerifiedToken",
    "generate_private_key",
    "jwks_document",
    "key_id",
    "load_private_key",
    "load_private_key_file",
    "load_public_key",
    "private_key_pem",
    "public_jwk",
    "public_key_pem",
]

"""How failures cross the activity boundary: by AWS error *code*, never by message text.

Temporal decides on retries from `ApplicationError.type` and `non_retryable`;
the workflow's retry policies give exponential backoff to everything retryable
(throttling, transient service errors, a resource still transitioning).
"""

from botocore.exceptions import BotoCoreError, ClientError
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

#: Error codes that retrying cannot heal: the execution ends with the code in its reason.
NON_RETRYABLE_AWS_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
        "UnauthorizedOperation",
        "OptInRequired",
        "InvalidClientTokenId",
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "ValidationError",
        "UnsupportedOperation",
        "InvalidInstanceID.NotFound",
        "InvalidInstanceID.Malformed",
        "InvalidVolume.NotFound",
        "InvalidVolumeID.Malformed",
        "InvalidSnapshot.NotFound",
        "InvalidAMIID.NotFound",
        "VolumeInUse",
        "InsufficientInstanceCapacity",
        "Unsupported",
        "IdempotentParameterMismatch",
    }
)

#: Codes that mean "slow down": retried with backoff, never fatal.
THROTTLING_CODES = frozenset(
    {"RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException",
     "RequestThrottled", "SlowDown"}
)

REFUSED = "Refused"
IN_PROGRESS = "InProgress"
VERIFICATION_FAILED = "VerificationFailed"
REVERT_IMPOSSIBLE = "RevertImpossible"

#: Our own non-retryable types, named in every retry policy too.
NON_RETRYABLE_TYPES = sorted(NON_RETRYABLE_AWS_CODES | {REFUSED, VERIFICATION_FAILED, REVERT_IMPOSSIBLE})


class Refused(Exception):
    """Validation says no: the resource is missing, drifted, protected or in the wrong state."""


class InProgress(Exception):
    """The resource is moving toward the target state; call again later (retried with backoff)."""


class VerificationFailed(Exception):
    """The resource is not, and will not become, what the change intended."""


class RevertImpossible(Exception):
    """The resource is no longer in a state from which the change can be undone."""


def client_error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "Unknown"))


def to_application_error(error: BaseException) -> BaseException:
    """Translate a domain or AWS exception into what Temporal understands."""
    if isinstance(error, ApplicationError):
        return error
    if isinstance(error, Refused):
        return ApplicationError(str(error), type=REFUSED, non_retryable=True)
    if isinstance(error, InProgress):
        # Expected while AWS transitions: retried quietly (benign: no warning with a traceback).
        return ApplicationError(str(error), type=IN_PROGRESS, category=ApplicationErrorCategory.BENIGN)
    if isinstance(error, VerificationFailed):
        return ApplicationError(str(error), type=VERIFICATION_FAILED, non_retryable=True)
    if isinstance(error, RevertImpossible):
        return ApplicationError(str(error), type=REVERT_IMPOSSIBLE, non_retryable=True)
    if isinstance(error, ClientError):
        code = client_error_code(error)
        message = error.response.get("Error", {}).get("Message", "")
        return ApplicationError(
            f"AWS {code}: {message}", type=code, non_retryable=code in NON_RETRYABLE_AWS_CODES
        )
    if isinstance(error, BotoCoreError):
        # Connection resets, read time-outs, endpoint errors: transient by nature.
        return ApplicationError(f"AWS transport error: {error}", type=type(error).__name__)
    return error

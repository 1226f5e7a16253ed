"""Validation of names that become SQL identifiers, queue names or file names.

Queue and instance names flow into `pgmq.q_<name>` table names, inbox queue names
(`inbox_<instance>`) and file paths in the Git export, so they are checked against one strict
pattern before any use: lower-case letters, digits and `_`, starting with a letter, and short
enough that pgmq's derived table names stay under PostgreSQL's 63-byte identifier limit.
"""

from __future__ import annotations

import re

# pgmq refuses queue names longer than 47 characters (63 minus its prefixes and suffixes).
PGMQ_MAX_QUEUE_NAME = 47
INBOX_PREFIX = "inbox_"
DLQ_SUFFIX = "_dlq"
QUEUE_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
# An instance id is accepted in the wire format with `-` (e.g. `singularity-1`), and mapped to a
# queue-safe form by `inbox_queue_for`.
INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
MAX_INSTANCE_ID = PGMQ_MAX_QUEUE_NAME - len(INBOX_PREFIX)
# The NOLOGIN group every instance's role belongs to (its grants: `queue_assets.security`).
PRODUCER_ROLE = "queue_assets_producer"


class InvalidNameError(ValueError):
    """A queue or instance name that is not safe to use as an identifier."""


def validate_queue_name(name: object) -> str:
    """Return `name` if it is a safe pgmq queue name, else raise `InvalidNameError`."""
    if not isinstance(name, str):
        raise InvalidNameError(f"queue name {name!r} is not a string")
    if not name:
        raise InvalidNameError("queue name is empty")
    if len(name) > PGMQ_MAX_QUEUE_NAME:
        raise InvalidNameError(
            f"queue name {name[:60]!r} is {len(name)} characters long; pgmq allows at most "
            f"{PGMQ_MAX_QUEUE_NAME}"
        )
    if not QUEUE_NAME_RE.fullmatch(name):  # fullmatch: `$` would accept a trailing newline
        raise InvalidNameError(
            f"queue name {name[:60]!r} is not allowed: use lower-case letters, digits and '_', "
            "starting with a letter"
        )
    return name


def validate_instance_id(instance_id: object) -> str:
    """Return `instance_id` if it is a safe instance id, else raise `InvalidNameError`."""
    if not isinstance(instance_id, str):
        raise InvalidNameError(f"instance id {instance_id!r} is not a string")
    if not instance_id:
        raise InvalidNameError("instance id is empty")
    if len(instance_id) > MAX_INSTANCE_ID:
        raise InvalidNameError(
            f"instance id {instance_id[:60]!r} is {len(instance_id)} characters long; at most "
            f"{MAX_INSTANCE_ID} are allowed so its inbox queue name fits pgmq's limit"
        )
    if not INSTANCE_ID_RE.fullmatch(instance_id):  # fullmatch: `$` would accept a trailing newline
        raise InvalidNameError(
            f"instance id {instance_id[:60]!r} is not allowed: use letters, digits, '-' and '_', "
            "starting with a letter or digit"
        )
    return instance_id


def inbox_queue_for(instance_id: str) -> str:
    """The inbox queue of an instance: `inbox_` + the id lower-cased, `-` mapped to `_`."""
    validate_instance_id(instance_id)
    return validate_queue_name(INBOX_PREFIX + instance_id.lower().replace("-", "_"))


def dlq_for(queue: str) -> str:
    """The dead-letter queue of a consumed queue."""
    return validate_queue_name(validate_queue_name(queue) + DLQ_SUFFIX)

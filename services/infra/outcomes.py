"""What became of one consumed record, decided at intake or by its handler and acted on when it settles.

Each outcome says what settling it owes: recording, publishing, dead-lettering, or nothing. Settling is
done in one place (``ConsumerRunner._settle``), which matches on these classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from events import Event
from events.dead_letter import DeadLetterReason
from services.infra.processed_events import StoredOutput


@dataclass(frozen=True, slots=True)
class Handled:
    """The handler ran: its outputs are recorded with the event's id before they are published, so that a
    redelivery re-publishes these, not a second run's."""

    event: Event
    outputs: Sequence[Event]


@dataclass(frozen=True, slots=True)
class Failed:
    """The handler kept failing: nothing is recorded, so a redelivery runs it again; the record is
    dead-lettered with the error."""

    event: Event
    error: BaseException


@dataclass(frozen=True, slots=True)
class Republish:
    """Handled by an earlier run whose outputs may never have gone out: exactly those go out again (their ids
    let consumers drop the copies), then the record is marked published."""

    event: Event
    outputs: Sequence[StoredOutput]


@dataclass(frozen=True, slots=True)
class AlreadyDone:
    """Handled before with nothing owed: its outputs are out, or will be once the original, still in flight
    here, settles (settling this one after it, in the original's key's turn)."""


@dataclass(frozen=True, slots=True)
class Invalid:
    """Never became a valid event: dead-lettered with the reason, and the handler's replies (such as telling
    the asker) published with the letter."""

    reason: DeadLetterReason
    error: str
    replies: Sequence[Event]


Outcome = Handled | Failed | Republish | AlreadyDone | Invalid

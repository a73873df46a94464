"""Finding an account's concurrency limit that nobody told us: a pure policy over observations.

Providers refuse a create over the account's limit (Kling 1303, LTX ``concurrency_limit_error``)
without saying the limit. The refusal itself is the evidence: it came while ``k`` slots were
held by tasks the provider had accepted and we had not seen end. Since we notice an end only
after it happened, the provider held at most ``k`` then, and it refused, so the limit is at most
``k``: the cap settles there at once (no halving and slow climb that keeps a batch below the
limit long after it is known). Above it the policy probes rarely and by one slot: after
``probe_rounds`` rounds of accepted creates at the cap (a round: as many creates as the cap), the
cap goes one above the limit; a create accepted with that many slots held proves the higher
limit, a refusal puts the cap back and makes the next probe twice as rare. The cap never goes
above the configured ``limits.concurrency``, nor below 1.

Before any refusal the cap starts low and grows with each accepted create (a slow start, as
TCP's): at most :data:`SLOW_START` slots beyond those of the tasks already accepted are being
created at once, so a limit far below the configured cap costs a few refusals, not a burst of
``limits.concurrency`` of them. Create answers come back in a fraction of a second, so the cap
reaches the configured one within the first round of creates.

Every decision is a function of a :class:`Capacity` and one observation, returning the next
:class:`Capacity`: the same policy can serve one process or several workers sharing one
account (their observations merged), and is tested on recorded event sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Slots beyond those of accepted tasks that may be being created before any refusal.
SLOW_START = 4
#: Rounds of accepted creates at the limit before the first probe one slot above it.
PROBE_ROUNDS = 4
#: The rarest probing gets (rounds between probes), after refused probes doubled it.
MAX_PROBE_ROUNDS = 64


@dataclass(frozen=True)
class Capacity:
    """What the policy knows: the cap it lets out, and the limit the refusals showed."""

    #: limits.concurrency as configured: never exceeded
    ceiling: int
    #: slots the batch may hold now
    cap: int
    #: the account's limit as the last refusal or successful probe showed it; None before
    limit: int | None = None
    #: bumped by each refusal that moved the cap: answers to creates sent before it were
    #: decided under the old cap and teach nothing more
    epoch: int = 0
    #: creates accepted since the cap last changed
    accepted: int = 0
    #: rounds of accepted creates before the next probe
    probe_rounds: int = PROBE_ROUNDS
    #: refusals that moved the cap, and the lowest cap so far (for the report)
    cuts: int = 0
    lowest: int = 0

    @property
    def probing(self) -> bool:
        return self.limit is not None and self.cap > self.limit


def start(ceiling: int) -> Capacity:
    """Before any evidence: a slow start towards the configured cap."""
    ceiling = max(1, ceiling)
    return Capacity(ceiling=ceiling, cap=min(ceiling, SLOW_START), lowest=ceiling)


def refused(c: Capacity, *, held: int, sent_in_epoch: int) -> Capacity:
    """An over-capacity refusal of a create sent in epoch ``sent_in_epoch``, answered while
    ``held`` slots were held by tasks the provider had accepted (the refused one not counted)."""
    if sent_in_epoch < c.epoch:
        return c
    limit = max(1, min(held, c.ceiling))
    rounds = c.probe_rounds
    if c.probing:
        rounds = min(rounds * 2, MAX_PROBE_ROUNDS)  # the probe failed: probe more rarely
    return replace(
        c,
        cap=limit,
        limit=limit,
        epoch=c.epoch + 1,
        accepted=0,
        probe_rounds=rounds,
        cuts=c.cuts + 1,
        lowest=min(c.lowest, limit),
    )


def accepted(c: Capacity, *, held: int) -> Capacity:
    """A create accepted; ``held``: the slots held by accepted tasks, this one's included."""
    if c.limit is None:
        # Nothing refused yet: the slow start, never back down, never past the ceiling.
        grown = min(c.ceiling, max(c.cap, held + SLOW_START))
        return c if grown == c.cap else replace(c, cap=grown)
    if c.probing and held >= c.cap:
        # The account ran this many at once: the limit is at least the cap.
        return replace(c, limit=c.cap, accepted=0)
    count = c.accepted + 1
    if not c.probing and c.cap < c.ceiling and count >= c.probe_rounds * c.cap:
        return replace(c, cap=c.cap + 1, accepted=0)
    return replace(c, accepted=count)

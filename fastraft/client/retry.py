"""Retry policy of the clients: how many attempts, and how long to wait between them.

Place in the architecture: shared by ``aio`` and ``sync`` (a leaf: standard library only).
Callers may pass their own ``RetryPolicy`` (or a subclass, or any object with the same two
methods) to ``Client`` / ``AsyncClient``; the backoff inside it is itself replaceable
(redis-py's ``Retry`` + ``backoff`` objects).

What the policy does NOT decide: whether a failure may be retried at all. That is fixed by the
protocol (``_protocol``): a write whose outcome is unknown is only ever retried with its same
session and seq, and ``InvalidRequest`` is never retried. The policy only bounds the number of
attempts; the per-call deadline bounds the time.
"""

from __future__ import annotations

import random

__all__ = ["ExponentialBackoff", "NoBackoff", "RetryPolicy"]


class ExponentialBackoff:
    """The default backoff: ``d = base * 2**(n-1)`` capped at ``cap`` seconds after the n-th
    consecutive failure, with "equal jitter": a delay drawn uniformly from ``[d/2, d]`` (never
    zero, so a retry storm spreads out yet still waits). ``rng``: for reproducible delays."""

    def __init__(self, base: float = 0.02, cap: float = 1.0, rng: random.Random | None = None):
        if base < 0 or cap < base:
            raise ValueError("need 0 <= base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1, 2, ...)."""
        d = min(self.cap, self.base * (2 ** min(max(failures - 1, 0), 32)))
        return d / 2 + self._rng.random() * d / 2


class NoBackoff:
    """No wait at all (tests)."""

    def delay(self, failures: int) -> float:
        """Always 0."""
        return 0.0


class RetryPolicy:
    """How persistent a call is: at most ``max_attempts`` attempts per call (the first one
    included), with ``backoff.delay(n)`` seconds between them (``backoff``: any object with
    that method; default ExponentialBackoff()). Following a leader hint to another node does
    not wait, but it does count as an attempt. The call's deadline bounds the time anyway."""

    def __init__(self, max_attempts: int = 16, backoff=None) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.max_attempts = max_attempts
        self.backoff = backoff if backoff is not None else ExponentialBackoff()

    def should_retry(self, attempts: int) -> bool:
        """May a call that has made ``attempts`` attempts make another?"""
        return attempts < self.max_attempts

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (the backoff's)."""
        return self.backoff.delay(failures)

    def __repr__(self) -> str:
        return f"RetryPolicy(max_attempts={self.max_attempts}, backoff={self.backoff!r})"

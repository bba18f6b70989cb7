"""Timing: interleaved round-robin rounds, sample calibration, and the progress display.

The machine's speed drifts (up to 2x within minutes on a shared 2-core box), so every contender
of one case is timed in the same rounds: per round each contender runs one sample (a few calls
back to back, time per call), in an order that rotates from round to round. Only the ratios of
samples taken side by side mean anything; the median over rounds is reported.
"""
import gc
import math
import statistics
import sys
import time
from dataclasses import dataclass


@dataclass
class TimingOptions:
    rounds: int = 7
    sample_s: float = 0.02      # a sample repeats a call until it lasts about this long
    max_reps: int = 1000
    max_call_s: float = math.inf  # a contender slower than this per call...
    slow_factor: float = 2.0      # ...and than this many times the fastest one is skipped


def timed(fn):
    """(fn(), seconds the call took)."""
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def time_call(fn):
    """Seconds one call of fn takes."""
    return timed(fn)[1]


def reps_for(call_s, options):
    """Calls per sample so that a sample lasts about options.sample_s."""
    if options.sample_s <= 0:
        return 1
    if call_s <= 0:
        return options.max_reps
    return max(1, min(options.max_reps, math.ceil(options.sample_s / call_s)))


def rotated(names, round_index):
    """The contenders in the order of one round: the list rotated by the round number."""
    k = round_index % len(names) if names else 0
    return names[k:] + names[:k]


def run_rounds(samplers, rounds, on_round=None):
    """samplers: {name: (fn, reps)}. Returns {name: [seconds per call, one per round]}.

    The garbage collector is off during the rounds, so a collection does not land in one
    contender's sample.
    """
    names = list(samplers)
    times = {name: [] for name in names}
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            if on_round:
                on_round(r)
            for name in rotated(names, r):
                fn, reps = samplers[name]
                t0 = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[name].append((time.perf_counter() - t0) / reps)
    finally:
        if was_enabled:
            gc.enable()
    return times


class RunBudget:
    """A run's time budget (--budget), spread over its cases as they come.

    Before a case, ``allowance()`` is the time it may take: SLACK times its share of what is
    left (so a large case can use what small ones did not), or None without a budget. A case
    whose rounds would take longer runs fewer rounds (never fewer than MIN_ROUNDS). Once the
    budget is spent, ``expired`` is true and the remaining cases are not run.
    """
    SLACK = 3.0
    MIN_ROUNDS = 3

    def __init__(self, total_s, cases, clock=time.monotonic):
        self.total_s, self.cases_left, self.clock = total_s, max(cases, 1), clock
        self.start = clock()

    @property
    def remaining_s(self):
        return None if self.total_s is None else self.total_s - (self.clock() - self.start)

    @property
    def expired(self):
        return self.total_s is not None and self.remaining_s <= 0

    def allowance(self):
        if self.total_s is None:
            return None
        return self.SLACK * max(self.remaining_s, 0.0) / max(self.cases_left, 1)

    def case_done(self):
        self.cases_left -= 1

    def rounds(self, wanted, round_s):
        """Rounds for a case whose one round takes ``round_s``: ``wanted``, or fewer (at least
        MIN_ROUNDS, or ``wanted`` if smaller) to fit the allowance."""
        allowance = self.allowance()
        if allowance is None or round_s <= 0 or wanted * round_s <= allowance:
            return wanted
        return max(min(wanted, self.MIN_ROUNDS), min(wanted, int(allowance / round_s)))


def median(values):
    return statistics.median(values) if values else None


class Progress:
    """One status line on stderr: '[ 3/48] r3x3_56 N=1 2 threads  round 2/7  0:12'.

    On a terminal the line is rewritten in place; otherwise one line per case is printed.
    """

    def __init__(self, total, stream=sys.stderr, enabled=True):
        self.total, self.done, self.stream, self.enabled = total, 0, stream, enabled
        self.start = time.monotonic()
        self.tty = enabled and hasattr(stream, "isatty") and stream.isatty()
        self.label = ""

    def _elapsed(self):
        s = int(time.monotonic() - self.start)
        return f"{s // 60}:{s % 60:02d}"

    def _status(self, text):
        """Rewrite the status line (terminal only)."""
        if self.tty:
            self.stream.write("\r\033[K" + text)
            self.stream.flush()

    def begin(self, label):
        self.label = label
        text = f"[{self.done + 1:>3}/{self.total}] {label}"
        if self.tty:
            self._status(text + "  (warm-up)")
        elif self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()

    def round(self, r, rounds):
        self._status(f"[{self.done + 1:>3}/{self.total}] {self.label}  round {r + 1}/{rounds}"
                     f"  {self._elapsed()}")

    def end(self):
        self.done += 1
        if self.tty and self.done == self.total:
            self._status(f"done: {self.total} cases in {self._elapsed()}\n")

    def note(self, text):
        """A message that must stay visible (a skipped contender, a wrong result)."""
        if self.enabled:
            if self.tty:
                self.stream.write("\r\033[K")
            self.stream.write(text + "\n")
            self.stream.flush()

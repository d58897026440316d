"""Timer units and crontab lines generated from jobs."""

from collections.abc import Iterable


# T: what shares an hour, sortable and hashable: a minute (crontab) or (minute, second) (systemd).
def hours_by_pattern[T: (int, tuple[int, int])](
    times: Iterable[tuple[int, T]],
) -> list[tuple[list[T], list[int]]]:
    """Group (hour, rest-of-time) pairs into (rests, hours) pairs such that every hour listed
    has exactly those rests: one calendar or crontab line each, so that no line fires at a
    time outside `times`."""
    per_hour: dict[int, set[T]] = {}
    for hour, rest in times:
        per_hour.setdefault(hour, set()).add(rest)
    by_pattern: dict[frozenset[T], list[int]] = {}
    for hour, rests in sorted(per_hour.items()):
        by_pattern.setdefault(frozenset(rests), []).append(hour)
    return [(sorted(rests), hours) for rests, hours in by_pattern.items()]

"""When people shop: weekday, hour of day and the Chinese retail calendar. Plain Python.

Day factors multiply a customer's purchase rate (they are normalised to a mean of 1 over the
generated window, so a rate keeps its meaning); hour profiles decide the time of day of an order
once its day is known. The Spring Festival moves with the lunar calendar; its dates are listed
because no small, well-kept library gives them.
"""

from __future__ import annotations

import datetime as dt
import itertools

SPRING_FESTIVAL = {
    2018: dt.date(2018, 2, 16), 2019: dt.date(2019, 2, 5), 2020: dt.date(2020, 1, 25),
    2021: dt.date(2021, 2, 12), 2022: dt.date(2022, 2, 1), 2023: dt.date(2023, 1, 22),
    2024: dt.date(2024, 2, 10), 2025: dt.date(2025, 1, 29), 2026: dt.date(2026, 2, 17),
    2027: dt.date(2027, 2, 6), 2028: dt.date(2028, 1, 26), 2029: dt.date(2029, 2, 13),
    2030: dt.date(2030, 2, 3), 2031: dt.date(2031, 1, 23), 2032: dt.date(2032, 2, 11),
    2033: dt.date(2033, 1, 31), 2034: dt.date(2034, 2, 19), 2035: dt.date(2035, 2, 8),
}

# Monday .. Sunday. Office cafes are quiet at weekends; supermarkets and beauty counters busy.
WEEKDAY = {
    "cafe": (1.08, 1.06, 1.06, 1.08, 1.12, 0.82, 0.78),
    "beauty": (0.85, 0.85, 0.90, 0.95, 1.10, 1.25, 1.10),
    "grocery": (0.90, 0.88, 0.90, 0.92, 1.02, 1.20, 1.18),
}

ONLINE_CHANNELS = frozenset({"tmall", "jd", "douyin", "online_mall"})


def festival_factor(vertical: str, day: dt.date) -> float:
    """How much busier than usual a day is for a vertical, weekday aside."""
    f = 1.0
    festival = SPRING_FESTIVAL.get(day.year)
    nxt = SPRING_FESTIVAL.get(day.year + 1)
    for cny in (festival, nxt):
        if cny is None:
            continue
        offset = (day - cny).days
        if -20 <= offset <= -4:  # New Year shopping: gifts, groceries
            f *= {"cafe": 1.0, "beauty": 1.25, "grocery": 1.6}[vertical]
        elif -3 <= offset <= 6:  # the holiday itself: offices shut, people at their parents'
            f *= {"cafe": 0.45, "beauty": 0.6, "grocery": 0.7 if offset < 0 else 0.55}[vertical]
    md = (day.month, day.day)
    if (6, 1) <= md <= (6, 17):  # 618 pre-sales
        f *= {"cafe": 1.0, "beauty": 1.3, "grocery": 1.1}[vertical]
    elif md == (6, 18):
        f *= {"cafe": 1.2, "beauty": 3.0, "grocery": 1.6}[vertical]
    elif (11, 1) <= md <= (11, 10):  # Double 11 pre-sales
        f *= {"cafe": 1.0, "beauty": 1.35, "grocery": 1.1}[vertical]
    elif md == (11, 11):
        f *= {"cafe": 1.3, "beauty": 5.0, "grocery": 2.5}[vertical]
    elif md == (12, 12):
        f *= {"cafe": 1.0, "beauty": 1.8, "grocery": 1.3}[vertical]
    elif md == (5, 20) or md == (2, 14):  # "520" and Valentine's day
        f *= {"cafe": 1.2, "beauty": 1.7, "grocery": 1.0}[vertical]
    elif (10, 1) <= md <= (10, 7):  # National Day golden week
        f *= {"cafe": 0.75, "beauty": 1.15, "grocery": 1.15}[vertical]
    elif md in ((12, 24), (12, 25)):
        f *= {"cafe": 1.3, "beauty": 1.2, "grocery": 1.05}[vertical]
    return f


def online_boost(day: dt.date) -> float:
    """Shopping festivals move orders to the e-commerce platforms."""
    md = (day.month, day.day)
    if md in ((6, 18), (11, 11)):
        return 5.0
    if (6, 1) <= md <= (6, 17) or (11, 1) <= md <= (11, 10):
        return 1.8
    if md == (12, 12):
        return 2.0
    return 1.0


def day_factors(vertical: str, first: dt.date, days: int) -> list[float]:
    raw = [WEEKDAY[vertical][d.weekday()] * festival_factor(vertical, d)
           for d in (first + dt.timedelta(days=i) for i in range(days))]
    mean = sum(raw) / len(raw) if raw else 1.0
    return [x / mean for x in raw]


def _hours(spec: dict[int, float]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(spec.get(h, 0.0) for h in range(24)))


_DELIVERY = {10: 3, 11: 9, 12: 10, 13: 5, 14: 3, 15: 4, 16: 3, 17: 5, 18: 8, 19: 7, 20: 4,
             21: 3, 22: 2, 23: 1}
_ONLINE = {0: 4, 1: 2, 2: 1, 3: 0.5, 4: 0.3, 5: 0.3, 6: 0.5, 7: 1, 8: 2, 9: 3, 10: 4, 11: 4,
           12: 5, 13: 5, 14: 4, 15: 4, 16: 4, 17: 4, 18: 4, 19: 5, 20: 7, 21: 9, 22: 9, 23: 6}
# Cumulative hour weights by (vertical, channel kind, weekend).
HOUR_PROFILES: dict[tuple[str, str, bool], tuple[float, ...]] = {
    ("cafe", "store", False): _hours({7: 3, 8: 10, 9: 10, 10: 6, 11: 5, 12: 7, 13: 8, 14: 7,
                                      15: 6, 16: 5, 17: 4, 18: 3, 19: 2, 20: 1.5, 21: 0.8}),
    ("cafe", "store", True): _hours({8: 2, 9: 5, 10: 8, 11: 7, 12: 6, 13: 7, 14: 8, 15: 8,
                                     16: 7, 17: 5, 18: 3, 19: 2, 20: 1.5, 21: 0.8}),
    ("cafe", "preorder", False): _hours({7: 5, 8: 13, 9: 9, 10: 5, 11: 5, 12: 7, 13: 7,
                                         14: 6, 15: 6, 16: 4, 17: 3, 18: 2, 19: 1, 20: 1}),
    ("cafe", "preorder", True): _hours({8: 2, 9: 5, 10: 8, 11: 7, 12: 6, 13: 7, 14: 8, 15: 8,
                                        16: 6, 17: 4, 18: 2, 19: 1, 20: 1}),
    ("grocery", "store", False): _hours({8: 3, 9: 5, 10: 7, 11: 6, 12: 4, 13: 3, 14: 3, 15: 4,
                                         16: 6, 17: 9, 18: 10, 19: 8, 20: 6, 21: 3, 22: 1}),
    ("grocery", "preorder", False): _hours({6: 1, 7: 6, 8: 8, 9: 6, 10: 4, 11: 4, 12: 4,
                                            13: 3, 14: 3, 15: 3, 16: 5, 17: 8, 18: 8, 19: 7,
                                            20: 6, 21: 5, 22: 3, 23: 1}),
    ("beauty", "store", False): _hours({10: 3, 11: 5, 12: 5, 13: 6, 14: 8, 15: 9, 16: 8, 17: 7,
                                        18: 7, 19: 8, 20: 8, 21: 5}),
    ("any", "delivery", False): _hours(_DELIVERY),
    ("any", "online", False): _hours(_ONLINE),
    ("any", "online_festival", False): _hours({**_ONLINE, 0: 40, 1: 15, 2: 5, 20: 12,
                                               21: 14, 22: 14, 23: 10}),
}


def hour_profile(vertical: str, channel: str, day: dt.date) -> tuple[float, ...]:
    weekend = day.weekday() >= 5
    if channel in ("meituan", "eleme"):
        return HOUR_PROFILES[("any", "delivery", False)]
    if channel in ONLINE_CHANNELS or (vertical == "beauty" and channel != "pos"):
        if online_boost(day) >= 5.0:
            return HOUR_PROFILES[("any", "online_festival", False)]  # the midnight rush
        return HOUR_PROFILES[("any", "online", False)]
    kind = "store" if channel == "pos" else "preorder"
    key = (vertical, kind, weekend)
    return HOUR_PROFILES.get(key) or HOUR_PROFILES[(vertical, kind, False)]

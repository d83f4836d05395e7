"""Made-up people: Chinese names, mobile numbers, member codes and platform ids. Plain Python.

Identifiers are functions of (seed, person number) rather than random draws, so that every
person keeps the same phone, openid and buyer ids on every order, two people never share one,
and nothing has to be remembered between orders (the generator keeps millions of people lazily).
No library covers Chinese names or Chinese platform id shapes, hence the short lists here.
"""

from __future__ import annotations

import base64
import bisect
import datetime as dt
import hashlib
import itertools
import random

# Prefixes that the phone-number metadata accepts as Chinese mobiles; the common 13x/15x/18x
# ranges weigh most, as they do in real member lists.
MOBILE_PREFIXES = (
    "130", "131", "132", "133", "134", "135", "136", "137", "138", "139",
    "150", "151", "152", "153", "155", "156", "157", "158", "159",
    "180", "181", "182", "183", "184", "185", "186", "187", "188", "189",
    "166", "176", "177", "178", "198", "199",
)
_PHONE_SPACE = len(MOBILE_PREFIXES) * 10**8
_PHONE_STEP = 1_000_003  # prime, coprime with the space: k -> k*step+offset is a bijection

SURNAMES = (
    ("王", 7.1), ("李", 7.0), ("张", 6.9), ("刘", 5.4), ("陈", 4.5), ("杨", 3.1), ("黄", 2.2),
    ("赵", 2.1), ("吴", 2.0), ("周", 1.9), ("徐", 1.6), ("孙", 1.5), ("马", 1.4), ("朱", 1.3),
    ("胡", 1.3), ("郭", 1.1), ("何", 1.1), ("林", 1.0), ("高", 1.0), ("罗", 0.9), ("郑", 0.9),
    ("梁", 0.8), ("谢", 0.7), ("宋", 0.7), ("唐", 0.6), ("许", 0.6), ("韩", 0.6), ("冯", 0.6),
    ("邓", 0.5), ("曹", 0.5), ("彭", 0.5), ("曾", 0.5), ("肖", 0.5), ("田", 0.5), ("董", 0.4),
    ("袁", 0.4), ("潘", 0.4), ("于", 0.4), ("蒋", 0.4), ("蔡", 0.4), ("余", 0.4), ("杜", 0.4),
    ("叶", 0.4), ("程", 0.4), ("苏", 0.3), ("魏", 0.3), ("吕", 0.3), ("丁", 0.3), ("任", 0.3),
    ("沈", 0.3), ("姚", 0.3), ("卢", 0.3), ("姜", 0.3), ("崔", 0.3), ("钟", 0.3), ("谭", 0.3),
    ("陆", 0.3), ("汪", 0.3), ("范", 0.3), ("金", 0.3), ("石", 0.3), ("廖", 0.2), ("贾", 0.2),
    ("夏", 0.2), ("韦", 0.2), ("方", 0.2), ("白", 0.2), ("邹", 0.2), ("孟", 0.2), ("熊", 0.2),
    ("秦", 0.2), ("邱", 0.2), ("江", 0.2), ("尹", 0.2), ("薛", 0.2), ("欧阳", 0.05),
    ("司马", 0.02), ("上官", 0.02), ("诸葛", 0.01),
)
_SURNAME_CUM = list(itertools.accumulate(w for _n, w in SURNAMES))
_total = _SURNAME_CUM[-1]

GIVEN_F = "丽静敏燕艳娟霞芳婷雪慧琳欣怡佳雨萱诗梦晨悦彤璐颖瑶妍洁倩玉兰莉萍红月菲宁晓思可涵"
GIVEN_M = "伟强磊军勇杰涛明超刚平辉鹏华飞鑫波斌宇浩凯健俊帆帅旭龙林阳晨博文天子轩睿泽一诚昊然"

# Gender shares and age range of each vertical's customers.
DEMOGRAPHICS = {
    "cafe": ((0.55, 0.40), (20, 45)),
    "beauty": ((0.86, 0.10), (18, 45)),
    "grocery": ((0.62, 0.33), (25, 70)),
}


def chinese_name(rng: random.Random, gender: str) -> str:
    surname = SURNAMES[bisect.bisect_left(_SURNAME_CUM, rng.random() * _total)][0]
    pool = GIVEN_F if gender == "F" else GIVEN_M if gender == "M" else GIVEN_F + GIVEN_M
    size = 2 if rng.random() < 0.7 else 1
    return surname + "".join(rng.choice(pool) for _ in range(size))


def gender_and_birthday(rng: random.Random, vertical: str, year: int
                        ) -> tuple[str, dt.date | None]:
    (female, male), (young, old) = DEMOGRAPHICS[vertical]
    x = rng.random()
    gender = "F" if x < female else "M" if x < female + male else "U"
    if rng.random() < 0.15:
        return gender, None  # never told us
    age = int(young + (old - young) * rng.betavariate(2.0, 3.0))
    born = dt.date(year - age, 1, 1) + dt.timedelta(days=rng.randrange(365))
    return gender, born


def mobile_number(seed: int, person: int) -> str:
    """An 11-digit Chinese mobile number, unique per person for a given seed."""
    offset = _digest_int(seed, "phone") % _PHONE_SPACE
    n = (person * _PHONE_STEP + offset) % _PHONE_SPACE
    return f"{MOBILE_PREFIXES[n // 10**8]}{n % 10**8:08d}"


def member_code(seed: int, person: int) -> str:
    """A 10-digit member card number, unique per person for a given seed."""
    space = 10**10
    n = (person * _PHONE_STEP + _digest_int(seed, "member") % space) % space
    return f"M{n:010d}"


def wechat_openid(seed: int, person: int) -> str:
    """28 characters starting with 'o', the shape WeChat gives a mini-program's users."""
    raw = hashlib.blake2b(f"{seed}:{person}:openid".encode(), digest_size=21).digest()
    return "o" + base64.urlsafe_b64encode(raw).decode()[:27]


def platform_buyer_id(seed: int, person: int, platform: str) -> str:
    n = _digest_int(seed, f"{person}:{platform}")
    if platform == "tmall":
        return f"tb{n % 10**11:011d}"
    if platform == "jd":
        return f"jd_{n % 36**10:x}"
    if platform == "douyin":
        return str(10**15 + n % (9 * 10**15))  # 16 digits
    return str(10**10 + n % (9 * 10**10))  # meituan, eleme: 11 digits


def email(seed: int, person: int) -> str:
    n = _digest_int(seed, f"{person}:email")
    if n % 3 == 0:
        return f"{10**8 + n % (9 * 10**8)}@qq.com"
    domain = ("163.com", "126.com", "outlook.com", "gmail.com")[n % 4]
    return f"user{n % 10**7:07d}@{domain}"


def _digest_int(seed: int, label: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{label}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")

"""SNOMED CT identifier checks: length, partition and Verhoeff check digit.

A SNOMED CT id is 6 to 18 digits; the last digit is a Verhoeff check digit and the two
before it are the partition identifier (00 or 10 for concepts). A code failing this is
not a SNOMED CT id, whatever a file says.

>>> is_concept_id("871731000000106")
True
>>> is_concept_id("871731000000107")
False
"""

from __future__ import annotations

_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
CONCEPT_PARTITIONS = ("00", "10")


def verhoeff_valid(digits: str) -> bool:
    """True when the digit string's last digit is its Verhoeff check digit."""
    if not digits.isdigit() or not digits.isascii():
        return False
    check = 0
    for position, digit in enumerate(reversed(digits)):
        check = _D[check][_P[position % 8][int(digit)]]
    return check == 0


def snomed_problem(code: str) -> str | None:
    """Why `code` is not a SNOMED CT concept id, or None when it is one."""
    if not code.isascii() or not code.isdigit():
        return "not all digits"
    if not 6 <= len(code) <= 18:
        return f"{len(code)} digits, not 6 to 18"
    if code[0] == "0":
        return "leading zero"
    if code[-3:-1] not in CONCEPT_PARTITIONS:
        return f"partition {code[-3:-1]} is not a concept partition (00 or 10)"
    if not verhoeff_valid(code):
        return "Verhoeff check digit fails"
    return None


def is_concept_id(code: str) -> bool:
    """True for a well-formed SNOMED CT concept id."""
    return snomed_problem(code) is None

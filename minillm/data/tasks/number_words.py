"""Translation tasks: a number 0-999 written in digits -> English or French words.

English follows US usage without "and": 342 -> "three hundred forty-two".
French follows the traditional (pre-1990) spelling: hyphens only below 100,
"et" in 21, 31, 41, 51, 61 and 71, the vigesimal 70-99 (soixante-dix,
quatre-vingts, quatre-vingt-onze), and plural "-s" on "vingts"/"cents" only when
nothing follows: 80 "quatre-vingts", 81 "quatre-vingt-un", 200 "deux cents",
201 "deux cent un", 100 "cent" (never "un cent").
"""

from __future__ import annotations

import numpy as np

from minillm.data.tasks.base import Instance, Task

MAX_NUMBER = 999

EN_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
EN_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy",
           8: "eighty", 9: "ninety"}  # fmt: skip

FR_UNITS = (
    "zéro un deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize"
).split()
FR_TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}


def _check(n: int) -> None:
    if not isinstance(n, int) or not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"expected an integer in [0, {MAX_NUMBER}], got {n!r}")


def english_words(n: int) -> str:
    """``n`` in [0, 999] in English words: 7 "seven", 45 "forty-five", 300 "three hundred"."""
    _check(n)
    hundreds, rest = divmod(n, 100)
    if hundreds == 0:
        return _english_below_100(rest)
    words = f"{EN_ONES[hundreds]} hundred"
    return words if rest == 0 else f"{words} {_english_below_100(rest)}"


def _english_below_100(n: int) -> str:
    if n < 20:
        return EN_ONES[n]
    tens, unit = divmod(n, 10)
    return EN_TENS[tens] if unit == 0 else f"{EN_TENS[tens]}-{EN_ONES[unit]}"


def french_words(n: int) -> str:
    """``n`` in [0, 999] in French words (traditional spelling, see the module docstring)."""
    _check(n)
    hundreds, rest = divmod(n, 100)
    if hundreds == 0:
        return _french_below_100(rest)
    if hundreds == 1:
        words = "cent"
    else:
        words = f"{FR_UNITS[hundreds]} cent" + ("s" if rest == 0 else "")
    return words if rest == 0 else f"{words} {_french_below_100(rest)}"


def _french_below_100(n: int) -> str:
    if n <= 16:
        return FR_UNITS[n]
    if n < 20:
        return f"dix-{FR_UNITS[n - 10]}"
    if n < 70:
        tens, unit = divmod(n, 10)
        if unit == 0:
            return FR_TENS[tens]
        if unit == 1:
            return f"{FR_TENS[tens]} et un"
        return f"{FR_TENS[tens]}-{FR_UNITS[unit]}"
    if n < 80:  # 60 + 10..19
        return "soixante et onze" if n == 71 else f"soixante-{_french_below_100(n - 60)}"
    if n == 80:
        return "quatre-vingts"
    return f"quatre-vingt-{_french_below_100(n - 80)}"  # 81 quatre-vingt-un, 91 -onze


class _NumberTask(Task):
    """Digits in, words out; the instance is the number itself."""

    words = staticmethod(english_words)

    def instance(self, rng: np.random.Generator) -> Instance:
        n = int(rng.integers(0, MAX_NUMBER + 1))
        return Instance(key=str(n), input=str(n), target=self.words(n))


class NumberToEnglish(_NumberTask):
    name = "number_to_english"
    description = "write a number (0-999) in English words"
    words = staticmethod(english_words)
    instructions = (
        "Write this number in English words.",
        "Spell out the number in English.",
        "Translate the number into English words.",
        "How is this number written in English words?",
        "Give the English words for this number.",
    )
    heldout_instructions = ("Express the number using English words.",)


class NumberToFrench(_NumberTask):
    name = "number_to_french"
    description = "write a number (0-999) in French words (traditional spelling)"
    words = staticmethod(french_words)
    instructions = (
        "Write this number in French words.",
        "Spell out the number in French.",
        "Translate the number into French words.",
        "How is this number written in French words?",
        "Give the French words for this number.",
    )
    heldout_instructions = ("Express the number using French words.",)

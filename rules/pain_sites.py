"""Where it hurts: the pain report's small vocabulary, and the next step for each place.

The places and the advice are the ankle pain guidance's (``../shared/guidance.md``,
"Three kinds of ankle trouble" and "What to do, by kind"). The advice names what the
guidance suggests for pain in that place; it does not say which structure is hurt.
"""

from __future__ import annotations

from typing import Final

# the contract's ``PainSite`` values -> how a message names the place
SITE_NAMES: Final[dict[str, str]] = {
    "achilles": "back-of-ankle (Achilles)",
    "outer_ankle_after_roll": "outer-ankle (after rolling it)",
    "outer_ankle_gradual": "outer-ankle",
    "inner_ankle": "inner-ankle",
    "bone_spot": "pinpoint bone",
    "other": "",
}

SITE_ADVICE: Final[dict[str, str]] = {
    "achilles": (
        "For the back of the ankle (Achilles) the guidance suggests: keep running with less "
        "mileage and no hills or speed work, and do heel-drop strength work (eccentric heel "
        "drops on a step); pain at the heel bone itself needs a modified programme from a "
        "physiotherapist."),
    "outer_ankle_after_roll": (
        "After rolling your ankle, send a sprain report from the app: it says whether to "
        "get the ankle assessed and how to look after it."),
    "outer_ankle_gradual": (
        "For outer-ankle pain that came on gradually the guidance suggests: less mileage, "
        "avoid cambered roads, eversion band work and calf strength."),
    "inner_ankle": (
        "For the inside of the ankle the guidance suggests: supportive shoes, taping and "
        "slow arch-lowering exercises; a physiotherapist can tell which structure it is."),
    "bone_spot": (
        "Pain at one spot on a bone is a warning sign of a bone stress injury: stop running "
        "and see a GP or sports physician."),
    "other": "If it does not settle, have a physiotherapist look at it.",
}


def place(site: str, own_words: str | None) -> str:
    """How a message names where it hurts: the vocabulary, and the runner's own words."""
    name = SITE_NAMES.get(site, "")
    if own_words:
        return f"{name} ({own_words})" if name else own_words
    return name or "ankle"


def advice(site: str) -> str:
    return SITE_ADVICE.get(site, SITE_ADVICE["other"])

"""The rule catalogue: one declarative YAML file per rule in ``rules/catalogue/``.

A rule watches one *signal* (a number the stream computes, e.g. ``acwr``) and fires a
severity level when the signal passes that level's threshold for at least the level's
sustain window. A bad file fails at load with the file, the rule and what is wrong.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

CATALOGUE_DIR = Path(__file__).parent / "catalogue"


class Severity(IntEnum):
    INFO = 1
    NOTICE = 2
    WARN = 3
    CRITICAL = 4

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Severity:
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"unknown severity '{value}' (use info, notice, warn, critical)"
                             ) from None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Level(_Frozen):
    severity: Literal["info", "notice", "warn", "critical"]
    threshold: float
    sustain_s: float = Field(default=0.0, ge=0)
    # a level may watch another signal than the rule's (e.g. weekly vs two-weekly growth)
    signal: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    # where this band comes from, when it is not the rule's own source
    source: str | None = None
    # a level may say more than the rule's text (e.g. "stop and get assessed" at 8/10)
    message: str | None = Field(default=None, min_length=10)
    next_step: str | None = Field(default=None, min_length=10)

    @property
    def rank(self) -> Severity:
        return Severity.parse(self.severity)


# how strong the evidence behind a rule is; all but the first two need a caveat in words
EvidenceStrength = Literal[
    "guidance",         # the physiotherapy guidance this project serves says so
    "study",            # a study in runners found it (named in the source)
    "limited",          # a study suggests it, with a wide uncertainty or another population
    "contested",        # studies disagree or criticise the measure itself
    "descriptive",      # bands say how common a value is, not how risky
    "self_comparison",  # a change from the runner's own normal, not a proven risk factor
    "common_practice",  # a rule of thumb, not from a study
]
NEEDS_CAVEAT = frozenset({"limited", "contested", "descriptive", "self_comparison",
                          "common_practice"})


@dataclass(frozen=True)
class Cause:
    """What several rules can be saying at once; the runner gets one message per cause."""

    title: str
    # after a message about this cause, the same or a lower severity waits this long
    quiet_h: float


# rules about one cause reach the runner as one message (rules.causes)
CAUSES: dict[str, Cause] = {
    # session spike, weekly increase and load ratio all read the same extra kilometres
    "overload": Cause("Your running has grown quickly", quiet_h=7 * 24),
    # balance, symmetry and compensation all read the same uneven steps of one run
    "uneven_stride": Cause("Your steps were uneven on this run", quiet_h=24),
    # one pain report can pass several pain rules: one message per report
    "pain": Cause("About the pain you reported", quiet_h=0),
}
CAUSE_PATTERN = r"^[a-z][a-z0-9_]*$"


def _fields(text: str | None) -> set[str]:
    if text is None:
        return set()
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


class Rule(_Frozen):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{1,48}$")
    title: str = Field(min_length=3, max_length=120)
    signal: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    direction: Literal["above", "below"] = "above"
    levels: list[Level] = Field(min_length=1, max_length=4)
    cooldown_h: float = Field(ge=0, le=24 * 60)
    evidence: list[str] = Field(default_factory=list)
    message: str = Field(min_length=10)
    next_step: str = Field(min_length=10)
    source: str = Field(min_length=3)
    evidence_strength: EvidenceStrength
    caveat: str | None = Field(default=None, min_length=10)
    cause: str | None = Field(default=None, pattern=CAUSE_PATTERN)
    enabled: bool = True

    @model_validator(mode="after")
    def _levels_consistent(self) -> Rule:
        ranks = [lv.rank for lv in self.levels]
        if ranks != sorted(ranks) or len(set(ranks)) != len(ranks):
            raise ValueError("levels must be listed from mildest to most severe, once each")
        thresholds = [lv.threshold for lv in self.levels if lv.signal in (None, self.signal)]
        ordered = sorted(thresholds, reverse=self.direction == "below")
        if thresholds != ordered:
            raise ValueError(f"thresholds of a rule firing {self.direction} must grow more "
                             f"extreme with severity, got {thresholds}")
        fields = _fields(self.message) | _fields(self.next_step)
        for level in self.levels:
            fields |= _fields(level.message) | _fields(level.next_step)
        unknown = fields - set(self.evidence) - {"value", "threshold", "severity"}
        if unknown:
            raise ValueError(f"message uses {sorted(unknown)} which are not listed in evidence")
        if self.cause is not None and self.cause not in CAUSES:
            raise ValueError(f"unknown cause '{self.cause}' (known: {', '.join(CAUSES)})")
        if self.evidence_strength in NEEDS_CAVEAT and not self.caveat:
            raise ValueError(f"evidence_strength '{self.evidence_strength}' needs a caveat: "
                             "say in plain words how strong the evidence is, with its source")
        return self

    def level(self, severity: str) -> Level:
        return next(lv for lv in self.levels if lv.severity == severity)

    def level_signal(self, level: Level) -> str:
        return level.signal or self.signal

    @property
    def signals(self) -> set[str]:
        return {self.level_signal(lv) for lv in self.levels}

    def passes(self, value: float, threshold: float) -> bool:
        return value > threshold if self.direction == "above" else value < threshold


class RuleOverride(_Frozen):
    """Per team or per runner: switch a rule off or move its thresholds."""

    enabled: bool | None = None
    thresholds: dict[Literal["info", "notice", "warn", "critical"], float] = Field(
        default_factory=dict)
    sustain_s: dict[Literal["info", "notice", "warn", "critical"], float] = Field(
        default_factory=dict)
    cooldown_h: float | None = Field(default=None, ge=0)


def apply_override(rule: Rule, override: RuleOverride | None) -> Rule:
    if override is None:
        return rule
    have = {lv.severity for lv in rule.levels}
    for severity in {*override.thresholds, *override.sustain_s} - have:
        raise ValueError(f"rule '{rule.id}' has no '{severity}' level "
                         f"(its levels: {', '.join(lv.severity for lv in rule.levels)})")
    levels = [lv.model_copy(update={
        "threshold": override.thresholds.get(lv.severity, lv.threshold),
        "sustain_s": override.sustain_s.get(lv.severity, lv.sustain_s)}) for lv in rule.levels]
    update: dict[str, object] = {"levels": levels}
    if override.enabled is not None:
        update["enabled"] = override.enabled
    if override.cooldown_h is not None:
        update["cooldown_h"] = override.cooldown_h
    # revalidate so an override cannot produce an inconsistent rule
    return Rule.model_validate({**rule.model_dump(), **update,
                                "levels": [lv.model_dump() for lv in levels]})


class RuleFileError(ValueError):
    pass


def load_rule_file(path: Path) -> Rule:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RuleFileError(f"{path}: cannot read rule file: {exc}") from None
    if not isinstance(data, dict):
        raise RuleFileError(f"{path}: a rule file is a YAML mapping")
    rule_id = data.get("id", path.stem)
    try:
        return Rule.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'rule'}: {e['msg']}" for e in exc.errors())
        raise RuleFileError(f"{path}: rule '{rule_id}': {problems}") from None


def load_catalogue(folder: Path | None = None) -> dict[str, Rule]:
    folder = folder or CATALOGUE_DIR
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise RuleFileError(f"{folder}: no rule files (*.yaml)")
    rules: dict[str, Rule] = {}
    for path in files:
        rule = load_rule_file(path)
        if rule.id in rules:
            raise RuleFileError(f"{path}: rule '{rule.id}' is defined twice")
        rules[rule.id] = rule
    return rules

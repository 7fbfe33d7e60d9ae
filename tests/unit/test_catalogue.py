"""Rule files: a bad file fails at load with the file, the rule and what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from rules.catalogue import (
    Rule,
    RuleFileError,
    RuleOverride,
    Severity,
    apply_override,
    load_catalogue,
    load_rule_file,
)


def rule_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "hill_load", "title": "Hill load is climbing", "signal": "weekly_climb_ratio",
        "direction": "above",
        "levels": [{"severity": "notice", "threshold": 1.5},
                   {"severity": "warn", "threshold": 2.0, "sustain_s": 0}],
        "cooldown_h": 24, "evidence": ["climb_m"],
        "message": "You climbed {climb_m} m this week, {value} times your usual.",
        "next_step": "Keep the next week flatter.", "source": "Achilles loading guidance",
        "evidence_strength": "guidance"}
    doc.update(overrides)
    return doc


def write(folder: Path, name: str, doc: object) -> Path:
    path = folder / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True))
    return path


def test_a_good_file_loads(tmp_path: Path) -> None:
    rule = load_rule_file(write(tmp_path, "hill_load.yaml", rule_doc()))
    assert rule.id == "hill_load"
    assert [(lv.severity, lv.threshold) for lv in rule.levels] == [("notice", 1.5), ("warn", 2.0)]
    assert rule.levels[1].rank is Severity.WARN
    assert load_catalogue(tmp_path) == {"hill_load": rule}


@pytest.mark.parametrize(("doc", "problem"), [
    (rule_doc(levels=[{"severity": "severe", "threshold": 1.5}]), "levels.0.severity"),
    (rule_doc(levels=[{"severity": "notice", "threshold": 2.0},
                      {"severity": "warn", "threshold": 1.5}]), "thresholds"),
    (rule_doc(direction="below"), "thresholds"),
    (rule_doc(levels=[{"severity": "warn", "threshold": 1.5},
                      {"severity": "notice", "threshold": 2.0}]), "mildest to most severe"),
    (rule_doc(levels=[{"severity": "notice", "threshold": 1.5},
                      {"severity": "notice", "threshold": 2.0}]), "once each"),
    (rule_doc(message="You climbed {climb_m} m on {hill_name} this week."), "hill_name"),
    (rule_doc(next_step="Avoid {hill_name} for a week or two."), "hill_name"),
    (rule_doc(levels=[{"severity": "notice", "threshold": 1.5,
                       "next_step": "Avoid {hill_name} for a while."}]), "hill_name"),
    (rule_doc(evidence_strength="contested"), "needs a caveat"),
    (rule_doc(evidence_strength="proven"), "evidence_strength"),
    (rule_doc(cause="hunger"), "unknown cause 'hunger'"),
    (rule_doc(cooldown_h=-1), "cooldown_h"),
    (rule_doc(levels=[]), "levels"),
    (rule_doc(surprise=True), "surprise"),
    ({k: v for k, v in rule_doc().items() if k != "source"}, "source"),
], ids=["unknown-severity", "thresholds-wrong-order", "below-thresholds-wrong-order",
        "levels-wrong-order", "level-twice", "message-field-not-in-evidence",
        "next-step-field-not-in-evidence", "level-text-field-not-in-evidence",
        "contested-without-caveat", "unknown-evidence-strength", "unknown-cause",
        "negative-cooldown", "no-levels", "unknown-key",
        "missing-source"])
def test_bad_rule_file_names_file_rule_and_problem(tmp_path: Path, doc: dict[str, Any],
                                                   problem: str) -> None:
    path = write(tmp_path, "hill_load.yaml", doc)
    with pytest.raises(RuleFileError) as err:
        load_rule_file(path)
    text = str(err.value)
    assert str(path) in text
    assert "'hill_load'" in text
    assert problem in text
    # the catalogue loader fails the same way
    with pytest.raises(RuleFileError, match="hill_load"):
        load_catalogue(tmp_path)


def test_unknown_severity_message_lists_the_choices(tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", rule_doc(levels=[{"severity": "severe", "threshold": 1}]))
    with pytest.raises(RuleFileError) as err:
        load_rule_file(path)
    assert "'notice'" in str(err.value) and "'warn'" in str(err.value)


def test_rule_id_falls_back_to_file_name(tmp_path: Path) -> None:
    doc = {k: v for k, v in rule_doc().items() if k != "id"}
    path = write(tmp_path, "nameless_rule.yaml", doc)
    with pytest.raises(RuleFileError) as err:
        load_rule_file(path)
    assert str(path) in str(err.value)
    assert "'nameless_rule'" in str(err.value) and "id" in str(err.value)


def test_duplicate_rule_id_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a_first.yaml", rule_doc())
    second = write(tmp_path, "b_second.yaml", rule_doc(title="The same rule again"))
    with pytest.raises(RuleFileError) as err:
        load_catalogue(tmp_path)
    assert str(second) in str(err.value)
    assert "'hill_load'" in str(err.value) and "twice" in str(err.value)


@pytest.mark.parametrize("content", ["- just\n- a list\n", "just a string\n", "42\n", ""],
                         ids=["list", "string", "number", "empty"])
def test_not_a_mapping(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "odd.yaml", content)
    with pytest.raises(RuleFileError) as err:
        load_rule_file(path)
    assert str(path) in str(err.value) and "mapping" in str(err.value)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "broken.yaml", "id: broken\nlevels: [\n  - severity: notice\n")
    with pytest.raises(RuleFileError) as err:
        load_rule_file(path)
    assert str(path) in str(err.value) and "cannot read" in str(err.value)


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError, match="no rule files"):
        load_catalogue(tmp_path)


# --------------------------------------------------------------------------- overrides


def _rule() -> Rule:
    return Rule.model_validate(rule_doc())


def test_override_none_is_identity() -> None:
    rule = _rule()
    assert apply_override(rule, None) is rule


def test_override_moves_thresholds_sustain_cooldown_and_switch() -> None:
    rule = _rule()
    changed = apply_override(rule, RuleOverride(
        thresholds={"warn": 2.5}, sustain_s={"notice": 30}, cooldown_h=6, enabled=False))
    assert [(lv.severity, lv.threshold, lv.sustain_s) for lv in changed.levels] == [
        ("notice", 1.5, 30.0), ("warn", 2.5, 0.0)]
    assert changed.cooldown_h == 6 and changed.enabled is False
    # everything else untouched, and the original is not modified
    assert changed.message == rule.message and changed.evidence == rule.evidence
    assert [lv.threshold for lv in rule.levels] == [1.5, 2.0] and rule.enabled


def test_override_for_a_level_the_rule_lacks_is_refused() -> None:
    # a silently ignored threshold would leave a coach believing it applies
    with pytest.raises(ValueError, match="no 'critical' level"):
        apply_override(_rule(), RuleOverride(thresholds={"critical": 9.0}))
    with pytest.raises(ValueError, match="no 'critical' level"):
        apply_override(_rule(), RuleOverride(sustain_s={"critical": 30}))


@pytest.mark.parametrize("override", [
    RuleOverride(thresholds={"notice": 2.5}),  # notice above warn (2.0)
    RuleOverride(thresholds={"warn": 1.0}),  # warn below notice (1.5)
    RuleOverride(sustain_s={"warn": -5}),
], ids=["notice-over-warn", "warn-under-notice", "negative-sustain"])
def test_inconsistent_override_raises(override: RuleOverride) -> None:
    with pytest.raises(ValueError):
        apply_override(_rule(), override)


def test_override_rejects_unknown_severity_and_negative_cooldown() -> None:
    with pytest.raises(ValidationError):
        RuleOverride.model_validate({"thresholds": {"severe": 1.0}})
    with pytest.raises(ValidationError):
        RuleOverride(cooldown_h=-1)


def test_severity_parse() -> None:
    assert Severity.parse("WARN") is Severity.WARN
    assert Severity.NOTICE < Severity.WARN < Severity.CRITICAL
    with pytest.raises(ValueError, match="unknown severity 'severe'"):
        Severity.parse("severe")

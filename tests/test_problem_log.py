"""ProblemLog, the one way connectors and the daemon log a problem that repeats: once when it starts, then at
most once per interval with how often it happened, and once when it is over."""

from __future__ import annotations

from typing import Any

from ingestor.contract import ProblemLog


class Recorder:
    """A logger that keeps (level, event, fields) instead of printing."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.lines.append((level, event, fields))


def test_a_lasting_problem_is_logged_once_then_at_most_once_per_interval_then_once_recovered() -> None:
    logger, now = Recorder(), [0.0]
    problems = ProblemLog(logger, interval=60.0, clock=lambda: now[0])
    for second in range(0, 150):
        now[0] = float(second)
        problems.failed(("tag", "t"), "read failed", tag="t")
    assert problems.is_active(("tag", "t"))
    assert problems.recovered(("tag", "t"), "recovered", tag="t")
    assert not problems.recovered(("tag", "t"), "recovered", tag="t")  # once only
    assert not problems.is_active(("tag", "t"))
    assert [(level, event) for level, event, _ in logger.lines] == [
        ("warning", "read failed"), ("warning", "read failed (still)"), ("warning", "read failed (still)"),
        ("info", "recovered")]
    assert logger.lines[1][2] == {"repeats": 60, "over_s": 60, "tag": "t"}
    assert logger.lines[2][2]["repeats"] == 60


def test_problems_are_kept_apart_by_key_and_the_first_line_takes_the_callers_level() -> None:
    logger, now = Recorder(), [0.0]
    problems = ProblemLog(logger, interval=10.0, clock=lambda: now[0])
    problems.failed("a", "link failed", level="error")
    problems.failed("b", "poll failed")
    problems.failed("a", "link failed", level="error")
    assert [(level, event) for level, event, _ in logger.lines] == [("error", "link failed"), ("warning", "poll failed")]
    assert not problems.recovered("c", "never failed")


def test_repeats_can_go_to_debug_for_problems_whose_every_attempt_is_worth_a_line() -> None:
    logger = Recorder()
    problems = ProblemLog(logger, interval=60.0, repeats_at_debug=True, clock=lambda: 0.0)
    for attempt in range(1, 4):
        problems.failed("database", "database unavailable", level="error", attempt=attempt)
    assert [(level, fields["attempt"]) for level, _, fields in logger.lines] == [("error", 1), ("debug", 2), ("debug", 3)]


def test_the_number_of_remembered_problems_is_bounded() -> None:
    logger = Recorder()
    problems = ProblemLog(logger, clock=lambda: 0.0)
    for n in range(ProblemLog.MAX_KEYS + 5):
        problems.failed(("value", n), "value cannot be stored")
    assert len(problems._active) == ProblemLog.MAX_KEYS
    assert not problems.is_active(("value", 0)) and problems.is_active(("value", ProblemLog.MAX_KEYS + 4))

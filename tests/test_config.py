"""Configuration loading: golden broken cases, every shipped example, and the loader's finer points."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestor.cli import main
from ingestor.config import ConfigError, load_config
from ingestor.config.yaml_source import Mark, parse_yaml

from .conftest import REPO

CASES = sorted(p for p in (REPO / "tests" / "cases").iterdir() if (p / "config.yaml").exists())
EXAMPLES = sorted((REPO / "config").glob("*.yaml"))


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("INGESTOR_DATABASE_URL", raising=False)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case_reports_exactly_the_expected_errors(case: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = case.relative_to(REPO) / "config.yaml"
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (case / "error.txt").read_text()


def test_there_are_golden_cases_and_examples() -> None:
    assert len(CASES) >= 8
    assert EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_example_validates(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(example.relative_to(REPO))]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{example.relative_to(REPO)}: OK")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


MINIMAL = """
plant:
  sites:
    - code: S1
      name: Site
      areas:
        - code: A1
          name: Area
          work_centers:
            - code: W1
              name: WC
              equipment:
                - {code: M1, name: Machine}
"""


def test_defaults_fill_in_reasons_units_and_an_all_day_shift(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL))
    assert [r.code for r in config.plant.downtime_reasons] == [
        "SCHED_MAINT", "TOOL_CHANGE", "MECH_FAIL", "ELEC_FAIL", "MAT_SHORT", "NO_OPER"]
    failures = {r.code for r in config.plant.downtime_reasons if r.failure}
    assert failures == {"MECH_FAIL", "ELEC_FAIL"}
    assert "degC" in {u.code for u in config.plant.units}
    (shift,) = config.plant.sites[0].calendar()
    assert shift.minutes() == (0, 1440)


def test_night_shift_across_midnight_does_not_overlap_its_neighbours(tmp_path: Path) -> None:
    text = MINIMAL.replace("      areas:", """      shifts:
        - {code: E, name: Early, start: "06:00", end: "14:00"}
        - {code: L, name: Late, start: 14:00, end: 22:00}
        - {code: N, name: Night, start: "22:00", end: "06:00"}
      areas:""")
    config = load_config(write(tmp_path, text))
    assert [s.minutes() for s in config.plant.sites[0].shifts] == [(360, 840), (840, 1320), (1320, 1800)]


def test_a_24_hour_shift_overlaps_any_other(tmp_path: Path) -> None:
    text = MINIMAL.replace("      areas:", """      shifts:
        - {code: ALL, name: All day, start: "00:00", end: "24:00"}
        - {code: E, name: Early, start: "06:00", end: "07:00"}
      areas:""")
    with pytest.raises(ConfigError, match=r"shift E \(06:00-07:00\) overlaps shift ALL"):
        load_config(write(tmp_path, text))


def test_environment_overrides_the_database_url_and_is_checked(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    env = {"INGESTOR_DATABASE_URL": "postgresql://u:secret@127.0.0.1:5432/x"}
    assert load_config(path, env).database.effective_url(env) == env["INGESTOR_DATABASE_URL"]
    with pytest.raises(ConfigError, match="INGESTOR_DATABASE_URL: expected a PostgreSQL URL"):
        load_config(path, {"INGESTOR_DATABASE_URL": "mysql://x"})


def test_the_summary_never_prints_a_password(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTOR_DATABASE_URL", "postgresql://plant:s3cr3t-pw@127.0.0.1:5432/x")
    assert main(["check-config", str(write(tmp_path, MINIMAL))]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t-pw" not in out
    assert "postgresql://plant:***@127.0.0.1:5432/x" in out


def test_a_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read the file: No such file or directory" in capsys.readouterr().err


def test_yaml_12_scalars_shift_times_stay_strings_and_yes_is_not_true() -> None:
    doc = parse_yaml("a: 14:00\nb: yes\nc: on\nd: 0x10\ne: 1_000\nf: 1.5\ng: true\n")
    assert doc.data == {"a": "14:00", "b": "yes", "c": "on", "d": 16, "e": 1000, "f": 1.5, "g": True}


def test_positions_are_one_based_and_point_at_keys_and_values() -> None:
    doc = parse_yaml("top:\n  child: [1, 2]\n")
    assert doc.key_marks[("top", "child")] == Mark(2, 3)
    assert doc.value_marks[("top", "child", 1)] == Mark(2, 14)


def test_every_error_is_reported_at_once_even_across_sections(tmp_path: Path) -> None:
    text = MINIMAL + """
connectors:
  - type: generate
    name: g
    tags: [{equipment: NOPE, parameter: p}]
pipeline:
  batch_rows: lots
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    messages = [f"{p.path}: {p.message}" for p in caught.value.problems]
    assert messages == [
        "connectors[0].tags[0].equipment: unknown equipment 'NOPE'; known: M1",
        "pipeline.batch_rows: input should be a valid integer, unable to parse string as an integer",
    ]


def test_check_config_is_the_same_through_python_dash_m(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ingestor", "check-config", str(write(tmp_path, MINIMAL))],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    assert ": OK" in result.stdout

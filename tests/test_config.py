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


TRICKY_YAML = [
    "a: 1\r\nb: [x, y]\r\n",
    "\ufeffa: b\n",
    "caf\u00e9: {\u00fc: \u00e4\u00e4, n: 1}\nnext: [\u00e4, b]\n",
    "base: &b {x: 1, y: 2}\nuse: {<<: *b, y: 3}\nmany: [*b, *b]\n",
    "a:\n  - b: 1\n    c: |\n      two\n      lines\n  - >\n    folded\n    text\n",
    "%YAML 1.1\n---\na: 1\n...\n",
    "--- \na: 1\n---\nb: 2\n",
    "a: b: c\n",
    "a:\tb\n",
    "\ta: 1\n",
    "{a:1, b: 2}\n",
    "? [a, b]\n: c\n",
    "a: !!str 1\nb: !custom x\n",
    "d: 2024-01-31\nt: 2024-01-31T10:00:00Z\nbad: 2024-13-45\n",
    "a: 1\na: 2\nb: {c: 1, c: 2}\n",
    "'quoted key': \"v\"\n\"k2\": 'w'\n",
    "a: [1, 2\n",
    "a: *nope\n",
    "a: &x [*x]\n",
    "- 1\n- 2\n",
    "just text\n",
    "",
    "# only a comment\n",
    "a: ~\nb: null\nc:\n",
    "k: " + "[" * 70 + "]" * 70 + "\n",
    "k: \"tab\\tescape \\u00e9\"\n",
    "a: 'it''s'\nb: >-\n  x\n\n  y\n",
    "%YAML 1.2\n---\na: 1\n",
    "%YAML 2.0\n---\na: 1\n",
    "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n",
    "a: b #c\nd: 'multi\n  line'\n",
    "k" * 1100 + ": 1\n",
    "a: x\x85b: y\u2028c: z\u2029d: w\n",
    "a: \"\\U0001F600 \U0001F600\"\nb: \U0001F600\n",
    "- a\n-b\n",
    "a: [b, c,]\n",
    "a: {b: c,}\n",
    "a: -\nb: - c\n",
    "a: @x\n",
    "a: `x\n",
    "a: |\n  x\n y\n",
    "a:\n- b\n- c\n",
    "&a a: 1\n",
    "a: 0x1F\nb: 0o17\nc: 1_0.5\nd: .inf\ne: -.5\nf: 1e3\ng: +1\n",
    "a: 1\n b: 2\n",
    "a: {b: [1, {c: d}], e: f}\n",
    "? a\n? b\n",
    "a: !!binary aGVsbG8=\nb: !!set {x, y}\n",
    "<<: {a: 1}\nb: 2\n",
    "a: [&x 1, *x, *x]\n",
    "a:   1   \nb:\n\n\n  - 2\n",
]


def _both(text: str) -> list[object]:
    """What each parser makes of a text: the document's data, duplicates and every position, or the error."""
    from ingestor.config.yaml_source import _FastLoader, _Loader, _parse

    results: list[object] = []
    for loader in (_FastLoader, _Loader):
        try:
            doc = _parse(loader(text), "x.yaml")
        except Exception as exc:
            results.append(type(exc).__name__)
            continue
        results.append((doc.data, doc.duplicate_keys, doc.root_mark,
                        sorted(((str(k), m) for k, m in doc.key_marks.items())),
                        sorted(((str(k), m) for k, m in doc.value_marks.items()))))
    return results


@pytest.mark.parametrize("source", [*EXAMPLES, *(c / "config.yaml" for c in CASES), *TRICKY_YAML],
                         ids=[*(e.name for e in EXAMPLES), *(c.name for c in CASES),
                              *(f"tricky-{i}" for i in range(len(TRICKY_YAML)))])
def test_the_c_parser_reads_what_the_python_parser_reads_and_refuses_what_it_refuses(source: Path | str) -> None:
    """parse_yaml uses libyaml when it accepts a document and PyYAML's Python parser otherwise, so every
    document libyaml accepts must come out of both the same, positions included; one libyaml refuses goes to
    the Python parser, which says why (the golden cases hold its words)."""
    from ingestor.config.yaml_source import _c_parser_reads_as_python

    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    if not _c_parser_reads_as_python(text):
        return  # parse_yaml hands these to the Python parser straight away
    fast, python = _both(text)
    if not isinstance(fast, str):
        assert fast == python


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

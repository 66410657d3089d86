"""streams.replay and the ``revwatch`` command line (argument errors, files, bad lines)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from streams.cli import main
from streams.replay import ReplayStats, read_jsonl, replay
from streams.settings import Settings

T0 = 1_741_003_200_000
SHOP = "https://shop.example"


def write_lines(path: Path, lines: list[bytes | dict[str, object]]) -> Path:
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else orjson.dumps(x)
                                for x in lines) + b"\n")
    return path


def beacon(sid: str, ts: int) -> dict[str, object]:
    return {"beacon_id": f"b-{sid}", "session_id": sid, "ts": ts, "received_at": ts + 500,
            "page_url": f"{SHOP}/p?utm_campaign=spring", "lcp_ms": 1_800.0, "ttfb_ms": 150.0}


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path]:
    beacons = write_lines(tmp_path / "beacons.jsonl", [
        beacon("s1", T0),
        b'{"beacon_id": "broken"',  # line 2: not JSON
        beacon("s2", T0 + 60_000),
        b"",  # blank lines are skipped silently
        {"beacon_id": "b-x", "session_id": "sx", "ts": T0, "page_url": ""},  # line 5: invalid
        b"[1, 2]",  # line 6: not an object
        beacon("s3", T0 + 120_000),
    ])
    orders = write_lines(tmp_path / "orders.jsonl", [
        {"order_id": "o1", "session_id": "s1", "ts": T0 + 90_000, "revenue": 30.0},
        {"order_id": "o2", "session_id": "s2", "revenue": 10.0},  # line 2: no ts
    ])
    return beacons, orders


def test_replay_reports_bad_lines_with_file_and_line_and_counts_the_good(
        inputs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    beacons, orders = inputs
    out = io.BytesIO()
    stats = replay(beacons, orders, out, Settings())
    err = capsys.readouterr().err
    assert (stats.beacons, stats.orders, stats.bad_lines) == (3, 1, 4)
    for where in (f"{beacons}:2: not valid JSON", f"{beacons}:5: 'page_url'",
                  f"{beacons}:6: expected a JSON object", f"{orders}:2: "):
        assert where in err, f"missing {where!r} in {err!r}"
    assert len(stats.errors) == 4
    assert stats.alerts == len(out.getvalue().splitlines()) == 0
    assert "3 beacons and 1 orders" in stats.summary()


def test_read_jsonl_yields_arrival_times_in_file_order(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "b.jsonl", [beacon("s1", T0), {"ts": T0 + 5, "x": 1}])
    stats = ReplayStats()
    records = list(read_jsonl(path, "b", stats, 100))
    assert [(r[0], r[1], r[2], r[4]) for r in records] == [(T0 + 500, 101, "b", 1),
                                                            (T0 + 5, 102, "b", 2)]


def test_cli_replay_writes_alerts_and_a_summary(inputs: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    beacons, orders = inputs
    alerts = tmp_path / "alerts.jsonl"
    code = main(["replay", "--beacons", str(beacons), "--orders", str(orders),
                 "--alerts", str(alerts)])
    err = capsys.readouterr().err
    assert code == 0
    assert alerts.exists()
    assert "revwatch replay: replayed 3 beacons and 1 orders" in err
    assert "4 unreadable lines" in err
    assert f"{beacons}:2:" in err


@pytest.mark.parametrize("missing", ["beacons", "orders"])
def test_cli_replay_with_a_missing_file_exits_2_naming_it(
        inputs: tuple[Path, Path], tmp_path: Path, missing: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    files = dict(zip(("beacons", "orders"), inputs, strict=True))
    files[missing] = tmp_path / "nope.jsonl"
    alerts = tmp_path / "alerts.jsonl"
    code = main(["replay", "--beacons", str(files["beacons"]), "--orders",
                 str(files["orders"]), "--alerts", str(alerts)])
    assert code == 2
    assert f"revwatch replay: {tmp_path / 'nope.jsonl'}: no such file" in capsys.readouterr().err
    assert not alerts.exists(), "no output file for a run that did not happen"


@pytest.mark.parametrize("argv", [[], ["replay"], ["replay", "--beacons", "b.jsonl"],
                                  ["frobnicate"], ["simulate", "--out", "x", "--to-kafka"]])
def test_cli_argument_errors_exit_2_with_usage(argv: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: revwatch" in capsys.readouterr().err


@pytest.mark.parametrize("amplitude", ["1.5", "-0.1"])
def test_simulate_refuses_a_daily_amplitude_outside_0_1(
        amplitude: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--days", "0.01", "--conversion-daily-amplitude", amplitude,
                 "--out", str(tmp_path / "sim")])
    assert code == 2
    assert "--conversion-daily-amplitude must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


def test_cli_bad_setting_exits_1_naming_the_variable(
        inputs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REVWATCH_PARTITIONS", "eight")
    beacons, orders = inputs
    code = main(["replay", "--beacons", str(beacons), "--orders", str(orders),
                 "--alerts", str(tmp_path / "a.jsonl")])
    assert code == 1
    assert "revwatch: REVWATCH_PARTITIONS: expected int, got 'eight'" in capsys.readouterr().err


def test_replay_as_a_process_exits_2_and_never_imports_faust(tmp_path: Path) -> None:
    code = ("import sys, streams.cli as c; rc = c.main(sys.argv[1:]); "
            "print('faust' in sys.modules); sys.exit(rc)")
    done = subprocess.run(
        [sys.executable, "-c", code, "replay", "--beacons", str(tmp_path / "b.jsonl"),
         "--orders", str(tmp_path / "o.jsonl"), "--alerts", str(tmp_path / "a.jsonl")],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[2])})
    assert done.returncode == 2, done.stderr
    assert "no such file" in done.stderr
    assert done.stdout.strip() == "False"


def test_the_demo_incident_reaches_the_demo_and_the_simulation(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--incident checkout`` picks the demo's broken checkout for ``revwatch demo`` and
    ``revwatch simulate --scenario demo``; without it, the slowdown as before."""
    import streams.demo
    import streams.simulate

    demos: list[dict[str, object]] = []
    written: list[streams.simulate.Scenario] = []

    class Written:
        def line(self) -> str:
            return "written"

    def run_demo(*_: object, **kw: object) -> int:
        demos.append(kw)
        return 0

    def write_files(scenario: streams.simulate.Scenario, _: Path) -> Written:
        written.append(scenario)
        return Written()

    monkeypatch.setattr(streams.demo, "run_demo", run_demo)
    monkeypatch.setattr(streams.simulate, "write_files", write_files)
    assert main(["demo", "--incident", "checkout", "--incident-devices", "mobile"]) == 0
    assert main(["demo"]) == 0
    assert [(d["incident"], d["devices"]) for d in demos] == [("checkout", ("mobile",)),
                                                              ("slow-pages", ())]
    for flags in (["--incident", "checkout"], []):
        assert main(["simulate", "--scenario", "demo", *flags, "--out", str(tmp_path)]) == 0
    assert [(s.incidents[0].kind, s.incidents[0].conversion_factor) for s in written] == [
        ("conversion_drop", 0.0), ("performance_conversion_loss", 1.0)]
    with pytest.raises(SystemExit):
        main(["demo", "--incident", "outage"])

import subprocess
import sys

import pytest

from conceptlens.cli import build_parser, main

COMMANDS = [["score"], ["fit"], ["explain"], ["audit"], ["demo"], ["vocab"], ["vocab", "list"],
            ["vocab", "show"], ["vocab", "validate"], ["vocab", "convert"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: conceptlens " + " ".join(command))


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["no-such-command"]) == 2
    assert main(["score", "x.png"]) == 2  # --out missing
    assert "--out" in capsys.readouterr().err


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    code = main(["fit", str(tmp_path / "missing.parquet"), "--labels", "l.csv", "--out", str(tmp_path / "m.json")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.parquet" in err[0] and err[0].startswith("conceptlens fit: error:")


def test_debug_shows_traceback(tmp_path, capsys):
    main(["fit", str(tmp_path / "missing.parquet"), "--labels", "l.csv", "--out", "m.json", "--debug"])
    assert "Traceback" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "conceptlens", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("conceptlens ")


def test_parser_lists_all_commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"score", "fit", "explain", "audit", "report", "compare", "vocab", "demo"}

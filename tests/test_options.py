"""Options are validated before the run: limits take units, and every output path is refused before the first
case (exit 2 naming the option), not after a whole run."""
import argparse

import pytest

from refimpl.cli import main
from refimpl.options import duration, memory


def test_limits_take_units():
    assert [duration(t) for t in ("30", "30s", "2m", "500ms", "1h")] == [30.0, 30.0, 120.0, 0.5, 3600.0]
    assert [memory(t) for t in ("512", "512M", "2GiB", "2G", "1024KiB")] == [512.0, 512.0, 2048.0, 2048.0, 1.0]
    for bad, fn in (("0", duration), ("2 parsecs", duration), ("-1s", duration), ("512KB", memory), ("2X", memory)):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)


@pytest.mark.parametrize("option,kind", [("--repro-dir", "file"), ("--explore-db", "dir"), ("--explore-db", "junk"),
                                         ("--output", "dir")])
def test_a_bad_output_path_is_refused_before_the_first_case(tmp_path, capsys, option, kind):
    path = tmp_path / "x"
    if kind == "file":
        path.write_text("a file")
    elif kind == "dir":
        path.mkdir()
    else:
        path.write_text("{not json")
    code = main(["check", "--family", "sizes", "--suite", "quick", "--random", "0", "--quiet", option, str(path)])
    captured = capsys.readouterr()
    assert code == 2 and option in captured.err, captured.err
    assert "RESULT" not in captured.out and "cases x" not in captured.out      # nothing ran

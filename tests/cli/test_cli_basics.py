"""The CLI contract: commands listed, version, python -m, one-line errors and exit codes."""

import subprocess
import sys

from segpipe import __version__


def test_help_lists_every_command(cli):
    r = cli("--help")
    assert r.returncode == 0
    for name in ("convert", "validate", "formats", "schemas"):
        assert name in r.stdout


def test_version(cli):
    r = cli("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"segpipe {__version__}"


def test_console_script_and_module_agree():
    r = subprocess.run([sys.executable, "-m", "segpipe", "--version"], capture_output=True, text=True)
    assert r.stdout.strip() == f"segpipe {__version__}"


def test_missing_input_is_one_line_exit_2(cli, tmp_path):
    r = cli("validate", str(tmp_path / "nope.json"))
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "nope.json" in lines[0]
    assert "Traceback" not in r.stderr


def test_not_json_names_line_and_column(cli, tmp_path):
    bad = tmp_path / "ds" / "bad.json"  # in a folder of its own: DST may not lie in the dataset's folder
    bad.parent.mkdir()
    bad.write_text('{"images": [1, 2,,]}')
    r = cli("convert", str(bad), str(tmp_path / "out"), "--to", "voc", "--from", "coco", "-w", "0")
    assert r.returncode == 2
    assert "bad.json" in r.stderr and "line 1" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_verbose_shows_traceback(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    r = cli("--verbose", "convert", str(bad), str(tmp_path / "out"), "--to", "voc", "--from", "coco", "-w", "0")
    assert r.returncode != 0
    assert "Traceback" in r.stderr


def test_unknown_format_lists_known(cli, tmp_path):
    r = cli("convert", str(tmp_path), str(tmp_path / "out"), "--to", "nosuch", "-w", "0")
    assert r.returncode == 2
    assert "unknown format 'nosuch'" in r.stderr and "coco" in r.stderr


def test_validate_problems_exit_1(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}], "categories": '
                   '[{"id": 1, "name": "a"}], "annotations": [{"id": 1, "image_id": 1, "category_id": 1, '
                   '"segmentation": [[1, 2, 3, 4]], "bbox": [1, 2, 2, 2], "area": 1, "iscrowd": 0}]}')
    r = cli("validate", str(bad))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "bad.json: annotations[0].segmentation[0]: polygon needs >= 6 finite coordinates, got 4" in r.stdout

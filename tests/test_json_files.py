"""``fdjax.json_files.write_json``: a write that fails half-way (here: a value json cannot
encode, met after part of the record has been written) leaves the previous file whole,
as a run killed or stopped during the write would."""

import json

import pytest

from fdjax.json_files import write_json


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
  path = tmp_path / "eval" / "row-abc.json"
  write_json(str(path), {"psnr": [30.5, 31.0]})          # creates the folder
  assert json.loads(path.read_text()) == {"psnr": [30.5, 31.0]}
  with pytest.raises(TypeError):
    write_json(str(path), {"psnr": [1.0] * 10_000 + [object()]})
  # the previous record, whole (writing through a plain open(path, 'w') fails here)
  assert json.loads(path.read_text()) == {"psnr": [30.5, 31.0]}
  write_json(str(path), {"psnr": [29.0]}, indent=1)
  assert path.read_text() == '{\n "psnr": [\n  29.0\n ]\n}'

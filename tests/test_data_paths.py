"""A relative data path in a config (``fdjax.data.paths``): the current folder's where it
exists there, else the repository's, so the shipped configs' ``folder:../shared/...``
works from any folder; an error names every place looked at."""

from pathlib import Path

import pytest

from fdjax.config_fields import load_config_file
from fdjax.data import folder, paths
from fdjax.errors import ConfigError, DataError, MissingDataError
from fdjax.validate import validate_config

REPO = Path(__file__).resolve().parents[1]


def test_the_current_folder_first_then_the_repository(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "quickstart.py").write_text("")
  assert paths.resolve("configs/quickstart.py") == tmp_path / "configs" / "quickstart.py"
  assert paths.resolve("configs/quickstart.py", cwd_first=False) == (
      REPO / "configs" / "quickstart.py")
  assert paths.resolve("configs/restoration_3task.py") == REPO / "configs" / "restoration_3task.py"
  assert paths.candidates("none/x.tar")[:2] == [tmp_path / "none/x.tar", REPO / "none/x.tar"]
  assert paths.resolve("none/x.tar") == tmp_path / "none" / "x.tar"   # missing: the first
  assert paths.candidates(tmp_path / "abs") == [tmp_path / "abs"]


def test_a_folder_source_from_another_folder_finds_the_repositorys_path(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(MissingDataError) as info:
    folder.source("none/x.tar", cache_dir=str(tmp_path / "cache"))
  assert str(info.value).startswith(f"folder source 'none/x.tar': neither {tmp_path}/none/x.tar "
                                    f"nor {REPO}/none/x.tar")
  with pytest.raises(DataError) as info:   # found in the repository: a file, not images
    folder.source("configs/quickstart.py", cache_dir=str(tmp_path / "cache"))
  assert f"{REPO}/configs/quickstart.py is a file but not an archive" in str(info.value)


def test_validation_names_every_place_it_looked(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = load_config_file(str(REPO / "configs" / "quickstart.py") + ":tiny")
  config.data.source = "folder:none/x.tar"
  with pytest.raises(ConfigError, match=f"data.source 'folder:none/x.tar': neither "
                                        f"{tmp_path}/none/x.tar nor {REPO}/none/x.tar exists"):
    validate_config(config)
  config.data.source = "folder:configs"   # the repository's folder: valid from here
  validate_config(config)


def test_an_archive_reached_through_a_link_keeps_the_links_name(tmp_path, monkeypatch):
  """The name is in every stage's fingerprint: following the link renamed the data set
  'mydata-v2', and a run made before retrained every stage."""
  from test_data_recovery import make_tar, write_tree

  (tmp_path / "store").mkdir()
  target = make_tar(write_tree(tmp_path / "tree", n_per_class=1), tmp_path / "store" /
                    "mydata-v2.tar.gz")
  (tmp_path / "mydata.tar.gz").symlink_to(target)
  monkeypatch.chdir(tmp_path)
  for spec in ("mydata.tar.gz", str(tmp_path / "mydata.tar.gz")):
    assert folder.source(spec, cache_dir=str(tmp_path / "cache")).name == "mydata"

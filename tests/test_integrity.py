"""Bytes flipped inside a saved model's data files: orbax reads them back as other numbers
without an error; fdjax's recorded sha256 (``fdjax.train.integrity``) turns that into a
``CorruptCheckpointError`` for a stage's variables and for a training checkpoint."""

import glob
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdjax.train import Checkpointer, CorruptCheckpointError, create_train_state, make_mesh
from fdjax.train import integrity
from fdjax.train.variables_io import DIGEST_FILE, load_variables, save_variables

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


# Random values: incompressible, so zstd stores them as raw blocks that any bytes decode.
NOISE = np.random.default_rng(0).standard_normal(20000).astype(np.float32)


def _variables(scale=1.0):
  return {"params": {"w": NOISE * scale,
                     "b": np.linspace(-1, 1, 7).astype(np.float32)},
          "batch_stats": {"mean": np.full((3,), 0.5, np.float32)}}


def _flip_spread(directory) -> int:
  """XORs one byte every 997 in the largest array data file (what a user's probe did):
  the chunk still decodes, to other numbers. Returns the bytes changed."""
  files = sorted(glob.glob(os.path.join(directory, "**", "d", "*"), recursive=True),
                 key=os.path.getsize)
  data = bytearray(open(files[-1], "rb").read())
  positions = range(1000, len(data) - 100, 997)
  for i in positions:
    data[i] ^= 0x5A
  open(files[-1], "wb").write(bytes(data))
  return len(positions)


def test_the_digest_is_sha256_of_each_leaf_s_dtype_shape_and_bytes_in_tree_order():
  tree = {"a": np.arange(4, dtype=np.int32), "b": {"c": np.ones((2, 2), np.float16)}}
  h = hashlib.sha256()
  for array in (tree["a"], tree["b"]["c"]):   # jax orders dict keys: a, then b/c
    h.update(str((array.dtype, array.shape)).encode())
    h.update(array.tobytes())
  assert integrity.tree_digest(tree) == h.hexdigest()
  assert integrity.tree_digest(jax.tree.map(jnp.asarray, tree)) == h.hexdigest()
  key = {"k": jax.random.key(3)}   # a typed key: its key data
  assert integrity.tree_digest(key) == integrity.tree_digest(
      {"k": np.asarray(jax.random.key_data(key["k"]))})


def test_flipped_bytes_in_saved_variables_are_an_error_naming_what_to_delete(tmp_path):
  path = str(tmp_path / "variables")
  variables = _variables()
  save_variables(path, variables)
  assert json.load(open(os.path.join(path, DIGEST_FILE)))["sha256"] == \
      integrity.tree_digest(variables)
  loaded = load_variables(path, variables)   # intact: read back exactly
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(loaded),
                                                  jax.tree.leaves(variables)))
  assert _flip_spread(path) > 10
  with pytest.raises(CorruptCheckpointError, match="sha256 differs") as error:
    load_variables(path, variables)
  assert f"delete {path}" in error.value.hint
  with pytest.raises(CorruptCheckpointError, match="sha256 differs"):
    load_variables(path)   # without a template too


def test_without_the_digest_the_same_damage_loads_silently(tmp_path):
  """Why the digest exists (and a save of before it, without digest.json, still loads)."""
  path = str(tmp_path / "variables")
  variables = _variables()
  save_variables(path, variables)
  os.remove(os.path.join(path, DIGEST_FILE))
  _flip_spread(path)
  loaded = load_variables(path, variables)
  assert not np.array_equal(np.asarray(loaded["params"]["w"]), variables["params"]["w"])


def test_a_python_number_among_the_leaves_saves_and_loads(tmp_path):
  """Saved before the digests without a word; the digest's layout read ``x.dtype``."""
  path = str(tmp_path / "variables")
  variables = {"params": {"w": np.ones(3, np.float32)}, "batch_stats": {"n": 3}}
  save_variables(path, variables)
  assert os.path.exists(os.path.join(path, DIGEST_FILE))
  assert int(load_variables(path)["batch_stats"]["n"]) == 3


def test_variables_read_into_other_dtypes_are_not_damage(tmp_path):
  path = str(tmp_path / "variables")
  variables = _variables()
  save_variables(path, variables)
  as_half = jax.tree.map(lambda x: np.asarray(x, np.float16), variables)
  loaded = load_variables(path, as_half)   # a cast: the digest is not comparable
  assert np.asarray(loaded["params"]["b"]).dtype == np.float16


def _state(mesh, step, scale):
  variables = {"params": {"w": jnp.asarray(NOISE) * scale},
               "batch_stats": {}}
  state = create_train_state(variables, optax.adam(0.1), jax.random.PRNGKey(0), mesh)
  return state.replace(step=jnp.asarray(step, jnp.int32))


def test_flipped_bytes_in_a_training_checkpoint_are_corrupt_and_the_older_step_is_offered(
    tmp_path):
  mesh = make_mesh()
  checkpointer = Checkpointer(tmp_path / "ckpt", max_to_keep=3)
  for step in (1, 2):
    checkpointer.save(_state(mesh, step, float(step)), {"stage": "s", "step": step})
  target = _state(mesh, 0, 0.0)
  state, meta = checkpointer.restore(target)
  assert meta == {"stage": "s", "step": 2}   # the digest is not handed back
  assert np.array_equal(np.asarray(state.params["w"]), NOISE * 2.0)
  _flip_spread(tmp_path / "ckpt" / "2" / "state")
  with pytest.raises(CorruptCheckpointError, match="sha256 differs.*newest intact checkpoint "
                                                   "is step 1"):
    checkpointer.restore(target)
  checkpointer.close()
  fallback = Checkpointer(tmp_path / "ckpt", max_to_keep=3, on_corrupt="previous")
  state, meta = fallback.restore(target)
  assert meta["step"] == 1 and np.array_equal(np.asarray(state.params["w"]), NOISE)
  fallback.close()


def test_an_orbax_with_another_metadata_api_is_not_called_damage(tmp_path, monkeypatch):
  # orbax < 0.11.22 returns metadata without item_metadata: that is the installed
  # library, and the hint to delete the (intact) variables would have lost them.
  import orbax.checkpoint as ocp

  from fdjax.errors import UserError

  path = str(tmp_path / "variables")
  save_variables(path, _variables())
  monkeypatch.setattr(ocp.StandardCheckpointer, "metadata", lambda self, p: object())
  with pytest.raises(UserError, match="orbax-checkpoint") as error:
    load_variables(path, _variables())
  assert not isinstance(error.value, CorruptCheckpointError)
  assert "0.11.22" in error.value.hint and "delete" not in error.value.hint
  monkeypatch.undo()
  assert np.array_equal(load_variables(path, _variables())["params"]["w"], NOISE)


def test_a_damaged_digest_file_is_a_corrupt_checkpoint(tmp_path):
  # Every error of reading the variables reaches the callers as CorruptCheckpointError
  # (a finished stage's best epoch catches it to give its own hint).
  path = str(tmp_path / "variables")
  save_variables(path, _variables())
  with open(os.path.join(path, DIGEST_FILE), "w") as f:
    f.write("{not json")
  with pytest.raises(CorruptCheckpointError, match="digest.json"):
    load_variables(path, _variables())

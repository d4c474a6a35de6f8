"""Where a relative data path in a config points.

The shipped configs name the shared data relative to the repository
(``'../shared/data/restoration'``, ``'folder:../shared/data/cifar10-jpeg.tar.gz'``), so
a run started from another folder (``python -m fdjax.main
--config=/path/to/fdjax/configs/...``) must still find it: ``find`` tries the
current folder first (where a user's own relative path points; ``folder:`` sources),
then the repository, then, in a git worktree, the main checkout beside which the shared
data lies. Restoration's ``data.root`` has always meant the repository's: it skips the
current folder (``cwd_first=False``).
"""

from __future__ import annotations

from pathlib import Path


def repository() -> Path:
  """The checkout holding this ``fdjax`` package."""
  return Path(__file__).resolve().parents[2]


def candidates(path: str | Path, *, cwd_first: bool = True) -> list[Path]:
  """The places a relative ``path`` may mean, in order (an absolute one: itself):
  the current folder (with ``cwd_first``), the repository, and in a git worktree the
  main checkout."""
  path = Path(path).expanduser()
  if path.is_absolute():
    return [path]
  repo = repository()
  places = ([Path.cwd() / path] if cwd_first else []) + [repo / path]
  git = repo / ".git"
  if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
    gitdir = Path(git.read_text().partition("gitdir:")[2].strip())
    places.append(gitdir.parents[2] / path)
  return places


def find(path: str | Path, *, cwd_first: bool = True) -> Path:
  """The first of ``candidates(path)`` that exists, else the first; links not followed
  (a data set's name is its path's last part, as the user gave it: an archive reached
  through a link keeps the link's name, which the stages' fingerprints hold)."""
  places = candidates(path, cwd_first=cwd_first)
  return next((p for p in places if p.exists()), places[0])


def not_found(path: str | Path, *, cwd_first: bool = True) -> str:
  """What to say of a ``path`` that ``find`` found nowhere: ``'neither A nor B exists'``
  naming every candidate, or ``'A does not exist'`` for one."""
  places = [str(p) for p in candidates(path, cwd_first=cwd_first)]
  return (f"neither {' nor '.join(places)} exists" if len(places) > 1
          else f"{places[0]} does not exist")


def resolve(path: str | Path, *, cwd_first: bool = True) -> Path:
  """``find(path)`` made absolute, links followed."""
  return find(path, cwd_first=cwd_first).resolve()

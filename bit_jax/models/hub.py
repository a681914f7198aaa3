"""BiT checkpoints from the Hugging Face hub, without torch.

    load_pretrained('hf-hub:timm/resnetv2_50x1_bit.goog_in21k')

`hf-hub:<org>/<name>` is timm's spelling. The repo's `model.safetensors` (a timm state_dict)
comes through `huggingface_hub`, with its cache, progress bar and offline mode
(HF_HUB_OFFLINE=1: the cache only); `pretrained` reads it like any local `.safetensors`, and
its config.json (label names, input size), where it has one. `push` uploads a folder (the
timm folder `bit_jax.export --format=timm` writes) to a repo, created if needed.
"""

import os
from pathlib import Path

PREFIX = 'hf-hub:'
FILENAME = 'model.safetensors'
CONFIG = 'config.json'
EXAMPLE = 'hf-hub:timm/resnetv2_50x1_bit.goog_in21k'


def is_hub(name) -> bool:
  return isinstance(name, str) and name.startswith(PREFIX)


def download_config(name: str) -> Path | None:
  """The repo's config.json (timm's: label names, input size) beside its weights in the
  cache, or None when the repo has none or it cannot be had."""
  try:
    return download(name, CONFIG)
  except (FileNotFoundError, RuntimeError):
    return None


def download(name: str, filename: str = FILENAME) -> Path:
  """Local path of `filename` in the hub repo `name` ('hf-hub:org/repo'), cached on first use."""
  from huggingface_hub import constants, errors, hf_hub_download

  repo = name.removeprefix(PREFIX)
  # Read now: huggingface_hub reads its environment once, on import, so a notebook or a test
  # that sets these afterwards would otherwise be ignored (and, for HF_HUB_OFFLINE, it would
  # still reach for the network while building its request headers).
  offline = constants.HF_HUB_OFFLINE or os.environ.get('HF_HUB_OFFLINE', '').upper() in (
    '1',
    'ON',
    'YES',
    'TRUE',
  )
  cache = os.environ.get('HF_HUB_CACHE') or (
    os.path.join(os.environ['HF_HOME'], 'hub') if 'HF_HOME' in os.environ else None
  )
  where = f'{repo} ({filename})'
  was_offline, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, offline  # this call only
  try:
    return Path(hf_hub_download(repo, filename, cache_dir=cache, local_files_only=offline))
  except errors.LocalEntryNotFoundError as e:
    raise FileNotFoundError(
      f'{where} is not in the Hugging Face cache {cache or constants.HF_HUB_CACHE} and '
      f'{"HF_HUB_OFFLINE is set" if offline else "could not be downloaded"} ({e}). Run once '
      f'with network access to cache it, point HF_HUB_CACHE at a cache that holds it, or '
      f'download {filename} elsewhere and pass its path to load_pretrained.'
    ) from None
  except (
    errors.RepositoryNotFoundError,
    errors.RevisionNotFoundError,
    errors.EntryNotFoundError,
  ) as e:
    raise FileNotFoundError(
      f'The Hugging Face hub has no {where} ({type(e).__name__}). Check the name (BiT '
      f'weights are e.g. {EXAMPLE}); a private or gated repo needs `hf auth login`.'
    ) from None
  except (errors.HfHubHTTPError, OSError) as e:
    raise RuntimeError(
      f'Could not download {where} from the Hugging Face hub ({e}). Rerun '
      f'when the network is back, or set HF_HUB_OFFLINE=1 to use the cache '
      f'only.'
    ) from e
  finally:
    constants.HF_HUB_OFFLINE = was_offline


def push(folder, repo_id: str, *, private: bool = False) -> str:
  """Upload `folder` to the hub model repo `repo_id` (created if missing); returns its URL.
  The token is huggingface_hub's (`hf auth login` or HF_TOKEN)."""
  from huggingface_hub import HfApi, errors

  from bit_jax.runtime.errors import RunError

  api = HfApi()
  try:
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(
      repo_id=url.repo_id,
      folder_path=os.fspath(folder),
      commit_message='Upload a BiT model exported by bit_jax',
    )
  except (errors.HfHubHTTPError, OSError, ValueError) as e:
    raise RunError(
      f'Could not push {folder} to the Hugging Face hub repo {repo_id} ({type(e).__name__}: '
      f'{e}). Log in with `hf auth login` (or set HF_TOKEN) with write access, check the '
      f'name, then rerun; the folder is kept.'
    ) from None
  return str(url)

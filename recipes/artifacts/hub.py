"""Publishing an output folder to the Hugging Face Hub; pushing training checkpoints to it and fetching them back."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError
from transformers import TrainerCallback

from recipes.artifacts.checkpoints import INCOMPLETE_PREFIX, STATUS_FILE
from recipes.config import RecipeError

logger = logging.getLogger("recipes")

CHECKPOINTS_FOLDER = "checkpoints"
"""Where pushed training checkpoints live in the model repository: ``checkpoints/checkpoint-N/``."""
STAGING_PREFIX = ".checkpoint-push-"
DOWNLOAD_PREFIX = ".checkpoint-download-"

# What a fine-tuned model folder publishes; checkpoints and optimizer state stay local.
PUSH_IGNORE = ["checkpoint-*/**", "checkpoint-*", "runs/**", "*.pt", "*.pth", "training_args.bin", "*.lock",
               f"{STAGING_PREFIX}*/**", f"{DOWNLOAD_PREFIX}*/**", f"{INCOMPLETE_PREFIX}checkpoint-*/**", STATUS_FILE,
               ".*.partial-*"]


TRAINING_ARGS_FILE = "training_args.bin"
PHOTO_PATTERNS = ["examples/**", "eval-*/**", "top_losses.png", "validation_predictions.png", "predictions.png"]
"""Data photos in an output folder, pushed only when asked (``push_photos``, ``vision-recipes push
--include-photos``): the demo's validation images, the folders ``vision-recipes evaluate`` writes (copies of the
evaluation images among them) and the prediction plots drawn on validation photos (classification's top losses,
detection's and segmentation's prediction grids)."""
LOCAL_RECORDS = ["run_manifest.json", "run_fingerprint.json", "trainer_state.json", "evaluation_recipe.yaml",
                 "lr_find.json"]
"""Records of the local run that hold absolute local paths (the command, the data folders, the checkpoints):
they stay local."""
_IMAGE_LINE = re.compile(r"^!\[[^\]]*\]\(([^)\s]+)\)\s*$")


def pushed_files(output_dir: str | Path, include_photos: bool = False) -> list[str]:
    """The files of ``output_dir`` a push publishes (paths relative to it, sorted): the model, processor, card,
    metrics and plots of metrics; data photos only with ``include_photos``; never checkpoints, optimizer state,
    ``training_args.bin`` or the run's local records (:data:`LOCAL_RECORDS`)."""
    from huggingface_hub.utils import filter_repo_objects

    output_dir = Path(output_dir)
    ignore = [*PUSH_IGNORE, *LOCAL_RECORDS, ".git/**", ".cache/**", *([] if include_photos else PHOTO_PATTERNS)]
    files = sorted(path.relative_to(output_dir).as_posix() for path in output_dir.rglob("*") if path.is_file())
    return list(filter_repo_objects(files, ignore_patterns=ignore))


def card_for_push(card: str, pushed: list[str]) -> str:
    """The model card without the image lines (``![name](file)``) of local files that are not pushed."""
    lines = []
    for line in card.splitlines(keepends=True):
        match = _IMAGE_LINE.match(line.strip())
        if match and "://" not in match.group(1) and match.group(1) not in pushed:
            continue
        lines.append(line)
    return "".join(lines)


class PublishError(RuntimeError):
    """The upload failed; the message says why and how to retry. Local outputs are untouched."""


def retry_command(output_dir: str | Path, repo_id: str, private: bool = False, include_photos: bool = False) -> str:
    """The exact command that pushes ``output_dir`` again."""
    command = ["python", "scripts/push_to_hub.py", str(output_dir), "--repo-id", repo_id]
    if private:
        command.append("--private")
    if include_photos:
        command.append("--include-photos")
    return shlex.join(command)


def resolve_token(token: str | None) -> str | None:
    """The token to use: explicit, else ``HF_TOKEN``, else the one saved by ``hf auth login``."""
    if token:
        return token
    from huggingface_hub import get_token

    return os.environ.get("HF_TOKEN") or get_token()


def push_output_dir(
    output_dir: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload fine-tuned model with Vision Recipes",
    endpoint: str | None = None,
    include_photos: bool = False,
) -> str:
    """Create ``repo_id`` if needed and upload, in one commit, :func:`pushed_files` (model, processor, card, metrics,
    plots of metrics; data photos only with ``include_photos``), the card without the plots that stay local.

    Returns the repository URL. Raises :class:`PublishError` with the retry command on failure;
    the token is never part of the message.
    """
    output_dir = Path(output_dir)
    retry = retry_command(output_dir, repo_id, bool(private), include_photos)
    if not (output_dir / "config.json").is_file():
        raise PublishError(f"{output_dir} holds no model (config.json missing); train first or check the path.")
    token = resolve_token(token)
    if not token:
        raise PublishError(
            "No Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --hub_token. "
            f"Local outputs in {output_dir} are intact. Retry with:\n  {retry}"
        )
    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = repo_url.repo_id  # a bare name becomes <user>/<name>
        pushed = pushed_files(output_dir, include_photos)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(output_dir / name))
                      for name in pushed if name != "README.md"]
        if "README.md" in pushed:
            card = card_for_push((output_dir / "README.md").read_text(encoding="utf-8"), pushed)
            operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
        api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)
    except Exception as err:  # HTTP errors, httpx connection errors, OS errors: all end the same way
        reason = str(err).replace(token, "<token>")
        raise PublishError(
            f"Upload to {repo_id} failed: {reason.splitlines()[0] if reason else type(err).__name__}. "
            f"Local outputs in {output_dir} are intact. Retry with:\n  {retry}"
        ) from None
    return str(repo_url)


_CHECKPOINT = re.compile(rf"{CHECKPOINTS_FOLDER}/checkpoint-(\d+)/")


def hub_checkpoint_steps(api: HfApi, repo_id: str) -> list[int]:
    """The steps of the ``checkpoints/checkpoint-N`` folders in ``repo_id``, in ascending order."""
    return sorted({int(match.group(1)) for name in api.list_repo_files(repo_id) if (match := _CHECKPOINT.match(name))})


def _stage(folder: Path) -> Path:
    """A hard-linked (else copied) snapshot of ``folder`` next to it, so rotating checkpoints away during a slow
    upload does not take the files from under it; without ``training_args.bin`` (a pickle of the arguments, local
    paths included, that resuming does not read)."""
    staged = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder.parent))
    for path in folder.rglob("*"):
        if path.name == TRAINING_ARGS_FILE:
            continue
        target = staged / path.relative_to(folder)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return staged


class CheckpointPusher(TrainerCallback):
    """Push every saved checkpoint to ``checkpoints/checkpoint-N`` of a Hub repository, in a background thread.

    Each push is one commit that adds the new checkpoint and, with ``save_total_limit``, deletes the pushed ones the
    Trainer has rotated away locally, so the repository mirrors the checkpoints kept in ``output_dir`` (the latest
    and the best); without it nothing is deleted. Uploads run one at a time in order; training does not wait for
    them, :meth:`wait` does (the lifecycle calls it after training, however it ended: at its end, after an error,
    and after SIGTERM, for a bounded time).
    """

    def __init__(self, api: HfApi, repo_id: str) -> None:
        self.api, self.repo_id = api, repo_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="push-checkpoints")
        self._pending: list[tuple[str, Future]] = []
        self.pushed: list[str] = []
        self.failed: dict[str, str] = {}
        self._last: str | None = None

    @classmethod
    def start(cls, repo_id: str, token: str | None, private: bool | None = None,
              endpoint: str | None = None) -> CheckpointPusher:
        """Check the token and create the repository now, so a bad token or id stops the run before training."""
        token = resolve_token(token)
        if not token:
            raise RecipeError(
                "push_checkpoints needs a Hugging Face token with write access: set HF_TOKEN, run `hf auth login`, "
                "or pass --hub_token (or set --push_checkpoints false)."
            )
        api = HfApi(endpoint=endpoint, token=token)
        try:
            repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
        except Exception as err:  # HTTP, connection and OS errors alike
            reason = str(err).replace(token, "<token>").splitlines()
            raise RecipeError(
                f"push_checkpoints: cannot create or open the Hub repository `{repo_id}`: "
                f"{reason[0] if reason else type(err).__name__}. Check `hub_model_id`, the token's write access and "
                "the network, or set --push_checkpoints false to keep checkpoints local only."
            ) from None
        return cls(api, repo_id)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        output_dir = Path(args.output_dir)
        name = f"checkpoint-{state.global_step}"
        if not (output_dir / name).is_dir():
            return
        # Without save_total_limit the Trainer rotates nothing away, so the push deletes nothing: the remote
        # checkpoints that are not local (earlier ones of a run resumed with resume_from_hub) stay.
        keep = None if args.save_total_limit is None else {
            path.name for path in output_dir.glob("checkpoint-*") if path.is_dir()}
        staged = _stage(output_dir / name)
        self._last = name
        self._pending.append((name, self._executor.submit(self._upload, staged, name, keep)))

    def _upload(self, staged: Path, name: str, keep: set[str] | None) -> None:
        try:
            prefix = f"{CHECKPOINTS_FOLDER}/{name}"
            operations: list[Any] = [
                CommitOperationAdd(f"{prefix}/{path.relative_to(staged).as_posix()}", str(path))
                for path in sorted(staged.rglob("*")) if path.is_file()
            ]
            rotated = [] if keep is None else [step for step in hub_checkpoint_steps(self.api, self.repo_id)
                                               if f"checkpoint-{step}" not in keep | {name}]
            operations += [CommitOperationDelete(f"{CHECKPOINTS_FOLDER}/checkpoint-{step}/", is_folder=True)
                           for step in rotated]
            self.api.create_commit(self.repo_id, operations, commit_message=f"Training checkpoint {name}")
            logger.info("Pushed %s to %s/%s", name, self.repo_id, prefix)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the queued uploads (at most ``timeout`` seconds in all: the ones not done by then are recorded
        as failed and the ones not started are cancelled); record (and log) the ones that failed."""
        pending, self._pending = self._pending, []
        deadline = None if timeout is None else time.monotonic() + timeout
        if pending:
            logger.info("Waiting for %d queued checkpoint push(es) to %s%s.", len(pending), self.repo_id,
                        "" if timeout is None else f" (at most {timeout:.0f}s)")
        for name, future in pending:
            try:
                future.result(None if deadline is None else max(0.0, deadline - time.monotonic()))
                self.pushed.append(name)
                self.failed.pop(name, None)
            except FutureTimeout:
                future.cancel()
                self.failed[name] = f"not finished within {timeout:.0f}s"
                logger.error("Pushing %s to %s did not finish within %.0fs (it stays in the output folder).", name,
                             self.repo_id, timeout)
            except Exception as err:  # a failed push never stops training: the local checkpoint is intact
                token = self.api.token if isinstance(self.api.token, str) else None
                reason = str(err).replace(token, "<token>") if token else str(err)
                self.failed[name] = reason.splitlines()[0] if reason else type(err).__name__
                logger.error("Pushing %s to %s failed: %s (it stays in the output folder).", name, self.repo_id,
                             self.failed[name])

    @property
    def last_failed(self) -> bool:
        """Whether the latest checkpoint did not reach the Hub."""
        return self._last is not None and self._last in self.failed


def _hub_error(repo_id: str, err: Exception, token: str | None) -> RecipeError:
    """``resume_from_hub``'s error for a repository that cannot be read."""
    reason = str(err).replace(token, "<token>") if token else str(err)
    first = reason.splitlines()[0] if reason else type(err).__name__
    fix = "Check the id, and the token (HF_TOKEN, `hf auth login` or --hub_token)"
    if isinstance(err, RepositoryNotFoundError):
        return RecipeError(f"resume_from_hub: repository `{repo_id}` not found, or it is private and the token "
                           f"cannot read it ({first}). {fix}.")
    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, HfHubHTTPError) and status in (401, 403):
        return RecipeError(f"resume_from_hub: not authorised to read `{repo_id}` ({first}). {fix}: it must be "
                           "valid and allowed to read the repository.")
    return RecipeError(f"resume_from_hub: could not read `{repo_id}` from the Hub ({first}). Check the network "
                       "and HF_ENDPOINT, then rerun the same command.")


def hub_checkpoints(repo_id: str, token: str | None = None, endpoint: str | None = None) -> list[int]:
    """The checkpoint steps ``resume_from_hub`` can continue from (ascending; the last is resumed); a
    :class:`RecipeError` saying why when the repository cannot be read or holds none. In a run of several
    processes only the main one calls it, and the others use its answer (a push between two listings would make
    them resume different steps)."""
    token = resolve_token(token)
    try:
        steps = hub_checkpoint_steps(HfApi(endpoint=endpoint, token=token), repo_id)
    except Exception as err:
        raise _hub_error(repo_id, err, token) from None
    if not steps:
        raise RecipeError(
            f"resume_from_hub: `{repo_id}` holds no checkpoints (no {CHECKPOINTS_FOLDER}/checkpoint-N folder). "
            f"Runs push them with --push_checkpoints true --hub_model_id {repo_id}."
        )
    return steps


def download_checkpoint(repo_id: str, output_dir: str | Path, token: str | None = None,
                        endpoint: str | None = None, steps: list[int] | None = None) -> Path:
    """Fetch the last ``checkpoints/checkpoint-N`` of ``repo_id`` (and the best one its state names) into
    ``output_dir/checkpoint-N``; return that folder. Local checkpoint folders of the same name are kept as they are.
    ``steps``: the repository's checkpoints as the main process listed them (:func:`hub_checkpoints`, listed here
    when None)."""
    output_dir = Path(output_dir)
    token = resolve_token(token)
    if steps is None:
        steps = hub_checkpoints(repo_id, token, endpoint)
    last = steps[-1]
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        fetched = _fetch(repo_id, last, output_dir, token, endpoint)
        best = _best_step(output_dir / f"checkpoint-{last}")
        if best is not None and best != last and best in steps:
            fetched += _fetch(repo_id, best, output_dir, token, endpoint)
    except Exception as err:
        raise _hub_error(repo_id, err, token) from None
    _as_local_checkpoints(output_dir, sorted(fetched))
    logger.info("Resuming from checkpoint-%d of %s (downloaded to %s)", last, repo_id, output_dir)
    return output_dir / f"checkpoint-{last}"


def _fetch(repo_id: str, step: int, output_dir: Path, token: str | None, endpoint: str | None) -> list[int]:
    """Download ``checkpoints/checkpoint-{step}`` to ``output_dir/checkpoint-{step}`` unless that folder exists
    (another process of the run fetched it, or it is the local copy of the same checkpoint)."""
    target = output_dir / f"checkpoint-{step}"
    if target.exists():
        logger.info("resume_from_hub: using the local %s.", target)
        return []
    with tempfile.TemporaryDirectory(prefix=DOWNLOAD_PREFIX, dir=output_dir) as scratch:
        snapshot_download(repo_id, allow_patterns=[f"{CHECKPOINTS_FOLDER}/checkpoint-{step}/*"], local_dir=scratch,
                          token=token, endpoint=endpoint)
        shutil.move(str(Path(scratch) / CHECKPOINTS_FOLDER / f"checkpoint-{step}"), target)
    return [step]


def _best_step(checkpoint: Path) -> int | None:
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    best = state.get("best_global_step")
    return int(best) if best else None


def _as_local_checkpoints(output_dir: Path, steps: list[int]) -> None:
    """Make downloaded checkpoints look as if they were saved here: modification times in step order (the
    Trainer rotates checkpoints by mtime) and the best checkpoint's path pointing into this ``output_dir``."""
    now = time.time()
    for i, step in enumerate(steps):
        folder = output_dir / f"checkpoint-{step}"
        state_file = folder / "trainer_state.json"
        if state_file.is_file():
            state = json.loads(state_file.read_text())
            best = state.get("best_model_checkpoint")
            if best and (output_dir / Path(best).name).is_dir():
                state["best_model_checkpoint"] = os.path.join(str(output_dir), Path(best).name)
                state_file.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        stamp = now - 10 * (len(steps) - i)
        os.utime(folder, (stamp, stamp))

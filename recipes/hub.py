"""Publishing an output folder to the Hugging Face Hub."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from huggingface_hub import HfApi

# What a fine-tuned model folder publishes; checkpoints and optimizer state stay local.
PUSH_IGNORE = ["checkpoint-*/**", "checkpoint-*", "runs/**", "*.pt", "*.pth", "training_args.bin", "*.lock"]


class PublishError(RuntimeError):
    """The upload failed; the message says why and how to retry. Local outputs are untouched."""


def retry_command(output_dir: str | Path, repo_id: str, private: bool = False) -> str:
    """The exact command that pushes ``output_dir`` again."""
    command = ["python", "scripts/push_to_hub.py", str(output_dir), "--repo-id", repo_id]
    if private:
        command.append("--private")
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
) -> str:
    """Create ``repo_id`` if needed and upload model, processor, card, plots and metrics.

    Returns the repository URL. Raises :class:`PublishError` with the retry command on failure;
    the token is never part of the message.
    """
    output_dir = Path(output_dir)
    retry = retry_command(output_dir, repo_id, bool(private))
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
        api.upload_folder(
            repo_id=repo_id,
            folder_path=output_dir,
            commit_message=commit_message,
            ignore_patterns=PUSH_IGNORE,
        )
    except Exception as err:  # HTTP errors, httpx connection errors, OS errors: all end the same way
        reason = str(err).replace(token, "<token>")
        raise PublishError(
            f"Upload to {repo_id} failed: {reason.splitlines()[0] if reason else type(err).__name__}. "
            f"Local outputs in {output_dir} are intact. Retry with:\n  {retry}"
        ) from None
    return str(repo_url)

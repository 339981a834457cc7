"""``vision-recipes space MODEL_OR_REPO --repo_id USER/NAME``: create or update a Gradio Space that demos a
fine-tuned model (an output folder or a Hub model id) of any task.

The Space holds ``app.py`` (self-contained: transformers, torch, gradio and pillow; the demo's outputs),
``space_config.json`` (task, model id, class colours, threshold), ``requirements.txt`` (the versions the model was
trained with, from its ``run_manifest.json`` or card) and ``README.md`` (the Space card: ``sdk: gradio``,
``sdk_version``, ``app_file``, ``models``, title, licence, a link to the model). The Space loads the model by its
Hub id, or from its own ``model/`` folder with ``--bundle_model`` (a private model, or one not on the Hub).
Example images only with ``--examples DIR`` or ``--examples N`` (N validation images the training run saved);
never by default, the data may be private. The model card gets a link to the Space when the token can write to
the model repo. The token comes from --token, else HF_TOKEN, else `hf auth login`; it is never printed."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from importlib import metadata
from pathlib import Path
from typing import Any

from recipes.config import RecipeError
from recipes.decode.images import IMAGE_EXTENSIONS

APP_TEMPLATE = Path(__file__).with_name("space_app.py")
SETTINGS_FILE = "space_config.json"
MODEL_FOLDER = "model"
EXAMPLES_FOLDER = "examples"
HUB_URL = "https://huggingface.co"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# What inference needs from a model folder (bundled into the Space with --bundle_model).
MODEL_FILES = ("config.json", "*.safetensors", "model.safetensors.index.json", "preprocessor_config.json")
CARD_FILES = ("config.json", "preprocessor_config.json", "README.md", "run_manifest.json", "palette.json")
# Pinned in requirements.txt (gradio comes from the card's sdk_version); torchvision runs the image processors of
# transformers >= 5 (without it they fall back to their PIL versions, whose numbers differ a little).
PINNED = ("transformers", "torch", "torchvision")


@dataclass
class SourceModel:
    """The model a Space demos: its files (``folder``), task, Hub repo (if any) and training record."""

    folder: Path
    pipeline_tag: str
    config: Any
    model_repo: str | None
    manifest: dict[str, Any] = field(default_factory=dict)
    card_text: str = ""
    private: bool = False


def check_repo_id(repo_id: str, what: str = "--repo_id") -> str:
    if not REPO_ID.match(repo_id or ""):
        raise RecipeError(f"{what} {repo_id!r} is not USER/NAME: name the namespace (your user or organisation) "
                          "and the repository, e.g. --repo_id your-name/food101-demo.")
    return repo_id


def _reason(err: Exception, token: str | None) -> str:
    text = str(err).replace(token, "<token>") if token else str(err)
    return text.splitlines()[0] if text else type(err).__name__


def _task_of(folder: Path, where: str) -> tuple[str, Any]:
    from transformers import AutoConfig

    from recipes.tasks import task_for_config

    if not (folder / "config.json").is_file():
        raise RecipeError(
            f"{where} has no config.json: pass the output folder of `vision-recipes train` (it holds config.json, "
            "model.safetensors and preprocessor_config.json) or its Hub id, not a checkpoint-* subfolder or a data "
            "folder."
        )
    if not (folder / "preprocessor_config.json").is_file():
        raise RecipeError(f"{where} has no preprocessor_config.json, so the Space could not prepare images for it: "
                          "pass the output folder of `vision-recipes train` (or its Hub id).")
    config = AutoConfig.from_pretrained(folder)
    return task_for_config(config, where=where).pipeline_tag, config


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def resolve_source(reference: str, api: Any, scratch: Path, *, model_repo: str | None, bundle: bool,
                   examples: bool, token: str | None) -> SourceModel:
    """The model's files: the local output folder as it is, or the needed files of a Hub repo in ``scratch``."""
    local = Path(reference).expanduser()
    if local.exists():
        if not local.is_dir():
            raise RecipeError(f"{local} is a file: pass the output folder of `vision-recipes train` or a Hub id.")
        tag, config = _task_of(local, str(local))
        manifest = _read_json(local / "run_manifest.json")
        repo = model_repo or (manifest.get("recipe", {}).get("training", {}) or {}).get("hub_model_id")
        private = False
        if repo:
            check_repo_id(repo, "--model_repo")
            try:
                info = api.model_info(repo)
            except Exception as err:  # not found, no access, no network
                if not model_repo:  # only named in the training record: the model was never pushed
                    repo = None
                else:
                    raise RecipeError(
                        f"--model_repo {repo}: the Hub did not serve it ({_reason(err, token)}). Push the model first "
                        f"(vision-recipes push {local} --repo-id {repo}), or pass --bundle_model to ship it inside "
                        "the Space."
                    ) from None
            else:
                private = bool(info.private)
                if private and not bundle:
                    print(f"warning: {repo} is private: the Space can only load it with an HF_TOKEN secret that "
                          "reads it (Space settings), or use --bundle_model.", file=sys.stderr)
        if repo is None and not bundle:
            raise RecipeError(
                f"{local} is a local folder and the Space loads the model by its Hub id: push it "
                f"(vision-recipes push {local} --repo-id USER/MODEL) and pass --model_repo USER/MODEL, or pass "
                "--bundle_model to ship the model inside the Space."
            )
        card = local / "README.md"
        return SourceModel(local, tag, config, repo, manifest, card.read_text(encoding="utf-8") if card.is_file()
                           else "", private)
    if model_repo:
        raise RecipeError("--model_repo is for a local output folder; MODEL_OR_REPO is already a Hub id.")
    if not REPO_ID.match(reference):
        raise RecipeError(f"{reference}: no such folder, and not a Hub model id (USER/NAME). Pass the output folder "
                          "of `vision-recipes train` or the Hub id it was pushed to.")
    patterns = [*CARD_FILES, *(MODEL_FILES if bundle else ())]
    from huggingface_hub import snapshot_download

    try:  # the repo's top-level files (not its pushed checkpoints/), and examples/ when asked
        wanted = [name for name in api.list_repo_files(reference)
                  if ("/" not in name and any(fnmatch(name, pattern) for pattern in patterns))
                  or (examples and name.startswith(f"{EXAMPLES_FOLDER}/") and name.count("/") == 1)]
        folder = Path(snapshot_download(reference, allow_patterns=wanted or ["config.json"],
                                        local_dir=scratch / "source", token=token, endpoint=api.endpoint))
        private = bool(api.model_info(reference).private)
    except Exception as err:
        raise RecipeError(
            f"{reference} is neither a local folder nor a model the Hub served ({_reason(err, token)}). Check the "
            "path or the Hub id, and the token for a private model."
        ) from None
    if private and not bundle:
        print(f"warning: {reference} is private: the Space can only load it with an HF_TOKEN secret that reads it "
              "(Space settings), or use --bundle_model.", file=sys.stderr)
    tag, config = _task_of(folder, reference)
    card = folder / "README.md"
    return SourceModel(folder, tag, config, reference, _read_json(folder / "run_manifest.json"),
                       card.read_text(encoding="utf-8") if card.is_file() else "", private)


def trained_versions(source: SourceModel) -> tuple[dict[str, str], str]:
    """The library versions the model was trained with, and where they were read: ``run_manifest.json``, else the
    card's *Framework versions*, else the ones installed here."""
    versions = {str(k).lower(): str(v) for k, v in (source.manifest.get("versions") or {}).items()}
    where = "run_manifest.json"
    if not versions:
        section = source.card_text.partition("## Framework versions")[2]
        versions = {m.group(1).lower(): m.group(2) for m in re.finditer(r"^- (\S+) (\S+)\s*$", section, re.M)}
        where = "the model card"
    if not versions:
        where = "this environment (the model records none)"
    for name in ("transformers", "torch", "torchvision"):
        if name not in versions:
            with contextlib.suppress(metadata.PackageNotFoundError):
                versions[name] = metadata.version(name)
    return versions, where


def requirements(source: SourceModel) -> str:
    versions, where = trained_versions(source)
    lines = [f"# The versions the model was trained with (from {where}); gradio is the card's sdk_version.",
             *(f"{name}=={versions[name].split('+')[0]}" for name in PINNED if name in versions),
             f"pillow=={metadata.version('pillow')}"]
    return "\n".join(lines) + "\n"


def _licence(source: SourceModel) -> str | None:
    from huggingface_hub import ModelCard

    if source.card_text:
        try:
            licence = ModelCard(source.card_text, ignore_metadata_errors=True).data.license
        except Exception:  # a card without metadata
            licence = None
        if licence:
            return str(licence)
    return (source.manifest.get("recipe", {}).get("run", {}) or {}).get("license")


def space_card(source: SourceModel, repo_id: str, title: str, bundled: bool) -> str:
    """The Space's README.md: its metadata, then what it shows and a link to the model repository."""
    from huggingface_hub import SpaceCard, SpaceCardData

    try:
        gradio_version = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        raise RecipeError('The Space is tested with the installed Gradio: pip install -e ".[demo]"') from None
    data = SpaceCardData(title=title, sdk="gradio", sdk_version=gradio_version, app_file="app.py",
                         license=_licence(source), models=[source.model_repo] if source.model_repo else None,
                         tags=["vision-recipes", source.pipeline_tag], pinned=False, emoji="🔍",
                         colorFrom="blue", colorTo="green")
    if source.model_repo:
        model = f"[{source.model_repo}]({HUB_URL}/{source.model_repo})"
        where = "bundled in this Space (`model/`)" if bundled else "loaded from the Hub by its id"
        origin = f"the fine-tuned model {model}, {where}"
    else:
        origin = "a fine-tuned model bundled in this Space (`model/`)"
    from recipes.tasks import get_task

    shows = get_task(source.pipeline_tag).demo_description
    body = (f"# {title}\n\nA Gradio demo of {origin} ({source.pipeline_tag}, {source.config.num_labels} classes). "
            f"Upload an image to see {shows}.\n\nMade with Vision Recipes (`vision-recipes space`); `app.py` needs "
            "only the packages of `requirements.txt` and reads its settings from `space_config.json`.\n")
    return str(SpaceCard(f"---\n{data.to_yaml()}\n---\n\n{body}"))


def _example_files(source: SourceModel, spec: str) -> list[Path]:
    """``--examples DIR`` (its image files) or ``--examples N`` (N of the validation images the training run saved)."""
    folder = Path(spec).expanduser()
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not found:
            raise RecipeError(f"--examples {spec}: no image files in that folder ({', '.join(IMAGE_EXTENSIONS)}).")
        return found
    if not spec.isdigit() or int(spec) < 1:
        raise RecipeError(f"--examples {spec}: pass a folder of images or a number of validation images (1 or more).")
    saved = sorted(p for p in (source.folder / EXAMPLES_FOLDER).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not saved:
        raise RecipeError(f"--examples {spec}: the model has no validation images saved ({EXAMPLES_FOLDER}/ of the "
                          "output folder; a Hub model has them only when pushed with --include-photos); pass "
                          "--examples DIR with images you may publish, or the local output folder.")
    if len(saved) < int(spec):
        print(f"warning: --examples {spec}: the training run saved {len(saved)} validation images; using them.",
              file=sys.stderr)
    return saved[: int(spec)]


def stage_space(source: SourceModel, folder: Path, *, repo_id: str, title: str | None, threshold: float,
                bundle: bool, examples: str | None) -> Path:
    """Write the Space's files into ``folder``."""
    from recipes.draw.render import class_palette

    folder.mkdir(parents=True, exist_ok=True)
    title = title or repo_id.split("/")[1]
    config = source.config
    shutil.copyfile(APP_TEMPLATE, folder / "app.py")
    settings = {
        "task": source.pipeline_tag,
        "model_id": source.model_repo,
        "model_path": MODEL_FOLDER if bundle else None,
        "title": title,
        "description": f"## {title}\n{source.pipeline_tag} · {config.num_labels} classes · "
                       f"`{(config.architectures or ['?'])[0]}`"
                       + (f" · [{source.model_repo}]({HUB_URL}/{source.model_repo})" if source.model_repo else ""),
        "threshold": threshold,
        "palette": class_palette(source.folder, config.num_labels).tolist(),
    }
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    (folder / "requirements.txt").write_text(requirements(source), encoding="utf-8")
    (folder / "README.md").write_text(space_card(source, repo_id, title, bundle), encoding="utf-8")
    if bundle:
        (folder / MODEL_FOLDER).mkdir()
        for pattern in MODEL_FILES:
            for path in source.folder.glob(pattern):
                shutil.copyfile(path, folder / MODEL_FOLDER / path.name)
        if not list((folder / MODEL_FOLDER).glob("*.safetensors")):
            raise RecipeError(f"--bundle_model: {source.folder} holds no *.safetensors weights to ship.")
    if examples is not None:
        (folder / EXAMPLES_FOLDER).mkdir()
        for path in _example_files(source, examples):
            shutil.copyfile(path, folder / EXAMPLES_FOLDER / path.name)
    return folder


def link_model_card(api: Any, model_repo: str, space_id: str, token: str | None) -> str:
    """Add the Space to the model card on the Hub; the message says what happened (or the line to add)."""
    from huggingface_hub import hf_hub_download

    from recipes.artifacts.card import link_space

    try:
        card = Path(hf_hub_download(model_repo, "README.md", token=token, endpoint=api.endpoint)).read_text()
    except Exception:  # a repo without a card
        card = ""
    linked = link_space(card, space_id)
    if linked == card:
        return f"The model card of {model_repo} already links the Space."
    try:
        api.upload_file(path_or_fileobj=linked.encode(), path_in_repo="README.md", repo_id=model_repo,
                        commit_message=f"Link the demo Space {space_id}")
    except Exception as err:
        return (f"warning: could not update the model card of {model_repo} ({_reason(err, token)}); add this to its "
                f"README.md:\n  [Demo Space: {space_id}]({HUB_URL}/spaces/{space_id})")
    return f"Linked the Space from the model card of {model_repo}."


def _check_visibility(api: Any, repo_id: str, source: SourceModel, *, bundle: bool, private: bool,
                      token: str | None) -> None:
    """Never publish a private model inside a public Space; ``--private`` only makes a new Space private."""
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        existing: bool | None = bool(api.repo_info(repo_id, repo_type="space").private)
    except RepositoryNotFoundError:
        existing = None
    except Exception as err:
        raise RecipeError(f"Could not read the Space {repo_id} ({_reason(err, token)}). Check the token and the "
                          "network, then rerun.") from None
    if private and existing is False:
        raise RecipeError(f"The Space {repo_id} exists and is public: make it private in its settings on the Hub "
                          "first (--private only creates new Spaces private).")
    if bundle and source.private and not (existing or (existing is None and private)):
        raise RecipeError(f"{source.model_repo} is private: bundling it into a public Space would publish it. Pass "
                          "--private (for a new Space) or make the Space private first.")


def publish_space(reference: str, repo_id: str, *, token: str | None = None, endpoint: str | None = None,
                  model_repo: str | None = None, bundle: bool = False, examples: str | None = None,
                  private: bool | None = None, title: str | None = None, threshold: float = 0.5,
                  link_card: bool = True) -> str:
    """Create or update the Space ``repo_id`` for ``reference``; return its URL."""
    from huggingface_hub import HfApi

    from recipes.artifacts.hub import resolve_token

    check_repo_id(repo_id)
    token = resolve_token(token)
    if not token:
        raise RecipeError("No Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass --token (a token that "
                          "can write to the Space's namespace).")
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="vision-recipes-space-") as scratch:
        source = resolve_source(reference, api, Path(scratch), model_repo=model_repo, bundle=bundle,
                                examples=examples is not None, token=token)
        staged = stage_space(source, Path(scratch) / "space", repo_id=repo_id, title=title, threshold=threshold,
                             bundle=bundle, examples=examples)
        _check_visibility(api, repo_id, source, bundle=bundle, private=bool(private), token=token)
        try:
            url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
            api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=staged,
                              commit_message=f"Demo of {source.model_repo or 'a fine-tuned model'} (vision-recipes "
                                             "space)",
                              delete_patterns=[f"{EXAMPLES_FOLDER}/*", f"{MODEL_FOLDER}/*"])
        except Exception as err:
            raise RecipeError(f"Creating or updating the Space {repo_id} failed: {_reason(err, token)}. Check the "
                              "token's write access to that namespace and the network, then rerun.") from None
    if source.model_repo and link_card:
        print(link_model_card(api, source.model_repo, repo_id, token))
    return str(url)


def _threshold(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: choose a score between 0 and 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vision-recipes space", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="Output folder of `vision-recipes train` or a Hub model id")
    parser.add_argument("--repo_id", "--repo-id", required=True, help="The Space: USER/NAME")
    parser.add_argument("--model_repo", default=None, help="For a local folder: the Hub id it was pushed to "
                        "(default: hub_model_id of its run_manifest.json)")
    parser.add_argument("--bundle_model", action="store_true", help="Ship the model inside the Space (private "
                        "models, or ones not on the Hub)")
    parser.add_argument("--examples", default=None, metavar="DIR|N", help="Example images: a folder of them, or "
                        "N validation images the training run saved (none by default)")
    parser.add_argument("--private", action="store_true", help="Create the Space as private")
    parser.add_argument("--title", default=None, help="Title of the Space (default: its name)")
    parser.add_argument("--threshold", type=_threshold, default=0.5, help="Initial detection score threshold")
    parser.add_argument("--no_card_link", action="store_true", help="Leave the model card as it is")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the saved login)")
    args = parser.parse_args(argv)
    try:
        url = publish_space(args.model, args.repo_id, token=args.token, model_repo=args.model_repo,
                            bundle=args.bundle_model, examples=args.examples, private=args.private or None,
                            title=args.title, threshold=args.threshold, link_card=not args.no_card_link)
    except RecipeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Space ready: {url}")
    return 0

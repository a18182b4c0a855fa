"""Publish a saved model on the Hugging Face Hub: one commit of its safe files and a generated model card.

The token is the one ``huggingface_hub`` resolves (``HF_TOKEN``, or ``hf auth login``'s stored token); it
is never printed: a missing or refused token, or an unreachable Hub, ends in a ``UserError`` whose one line
holds no token.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from ernievil_ds.distributed import get_logger
from ernievil_ds.errors import UserError
from ernievil_ds.hub.card import build_model_card
from ernievil_ds.hub.files import CARD_FILE, TOKENIZER_FILES, ModelFiles, collect_model_files
from ernievil_ds.hub.model_code import has_model_code, write_model_code
from ernievil_ds.hub.runs import RunRecord, locate_model, read_run
from ernievil_ds.runs import RunFolder

logger = get_logger(__name__)

#: What a refusal by the Hub means, by HTTP status.
REFUSALS = {
    401: "the Hub refused the token (401 Unauthorized): log in again with `hf auth login` or set HF_TOKEN",
    403: "the token may not write there (403 Forbidden): use a token with write access to that namespace",
}


@dataclass(frozen=True)
class Upload:
    """What a push of one model sends: the model's safe files and its card."""

    repo_id: str
    files: ModelFiles
    run: RunRecord | None
    card: ModelCard

    def listing(self) -> str:
        """The files with their sizes in bytes, then the files left out and why."""
        sizes = {**self.files.sizes(), CARD_FILE: len(str(self.card).encode())}
        width = max(len(name) for name in sizes)
        lines = [f"Files for {self.repo_id} (from {self.files.model_dir}):"]
        lines += [f"  {name:<{width}}  {size:>15,} bytes" for name, size in sizes.items()]
        lines.append(f"  {'total':<{width}}  {sum(sizes.values()):>15,} bytes")
        if not any(name in TOKENIZER_FILES for name in sizes):
            lines.append(
                f"No tokenizer files in {self.files.model_dir}: save the tokenizer it was trained with there "
                "to publish it too"
            )
        if self.files.left_out:
            lines.append("Left out:")
            lines += [f"  {name}: {reason}" for name, reason in self.files.left_out]
        return "\n".join(lines)

    def operations(self) -> list[CommitOperationAdd]:
        files = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=self.files.model_dir / name)
            for name in self.files.published
        ]
        return [*files, CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=str(self.card).encode())]


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` when it is a valid Hub repository name (``user/name`` or ``name``), else a ``UserError``."""
    try:
        validate_repo_id(repo_id)
    except ValueError as error:
        raise UserError(f"--repo-id {repo_id!r} is not a Hub repository name: {error}") from None
    return repo_id


def ensure_model_code(model_dir: Path) -> None:
    """Write the model's code and ``auto_map`` into a folder that lacks them (one ``save_pretrained``
    wrote alone), so that what is published loads with ``trust_remote_code=True``."""
    try:
        if has_model_code(model_dir):
            return
        written = write_model_code(model_dir)
    except ValueError as error:
        raise UserError(
            f"{model_dir / 'config.json'} is not an ernievil-ds model's config: {error}"
        ) from None
    logger.info("Wrote the model's code into %s: %s", model_dir, ", ".join(written))


def prepare_upload(path: str | Path, repo_id: str) -> Upload:
    """The upload of the model in ``path`` (a model folder, or a run folder holding ``hf_model/``); a
    folder without the model's code gets it first (``ensure_model_code``)."""
    model_dir, run_dir = locate_model(path)
    ensure_model_code(model_dir)
    files = collect_model_files(model_dir)
    run = read_run(run_dir)
    return Upload(check_repo_id(repo_id), files, run, build_model_card(repo_id, files, run))


def require_token() -> str:
    """The Hub token ``huggingface_hub`` resolves; a ``UserError`` when there is none."""
    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: log in with `hf auth login` or set HF_TOKEN")
    return token


def check_push_ready(repo_id: str) -> None:
    """Before training: a valid repository name and a token to push with, so that no run fails at its end."""
    check_repo_id(repo_id)
    require_token()


@contextlib.contextmanager
def hub_errors(repo_id: str, token: str) -> Iterator[None]:
    """Turn the Hub's refusals and network failures into a one-line ``UserError`` that holds no token."""
    try:
        yield
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        reason = REFUSALS.get(status) or " ".join(str(error).split())
        message = f"pushing to {repo_id} failed: {reason}"
        raise UserError(message.replace(token, "<token>")) from None
    except OfflineModeIsEnabled:
        raise UserError(f"pushing to {repo_id} failed: HF_HUB_OFFLINE is set; unset it to push") from None
    except httpx2.HTTPError as error:
        message = f"pushing to {repo_id} failed: cannot reach {constants.ENDPOINT} ({type(error).__name__}: {error})"
        raise UserError(message.replace(token, "<token>")) from None


def check_visibility(api: HfApi, repo_id: str, private: bool) -> None:
    """Refuse ``--private`` for a repository that exists and is public: the Hub keeps an existing
    repository's visibility when asked to create it again, and the push would publish the model."""
    if private and not api.repo_info(repo_id).private:
        raise UserError(
            f"{repo_id} already exists and is public, and --private does not change an existing repository: "
            f"make it private first (`hf repos settings {repo_id} --private`, or its settings page on the Hub), "
            "push to a new repository, or drop --private to publish there"
        )


def push_upload(
    upload: Upload, *, private: bool = False, revision: str | None = None, commit_message: str | None = None
) -> str:
    """Create the repository if needed (and the branch ``revision``), commit the upload; its commit URL.

    Raises:
        UserError: ``private`` with a repository that exists and is public (nothing is uploaded), a
            missing or refused token, or an unreachable Hub.
    """
    token = require_token()
    for name, reason in upload.files.left_out:
        logger.warning("Not published: %s: %s", name, reason)
    api = HfApi()
    message = commit_message or (
        f"Upload ERNIE-ViL ({upload.run.kind}) from ernievil-ds" if upload.run else "Upload ERNIE-ViL"
    )
    with hub_errors(upload.repo_id, token):
        api.create_repo(upload.repo_id, private=private, exist_ok=True)
        check_visibility(api, upload.repo_id, private)
        if revision is not None:
            api.create_branch(upload.repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(
            upload.repo_id, upload.operations(), commit_message=message, revision=revision
        )
    return commit.commit_url


def push_after_training(
    run_dir: Path, repo_id: str, *, private: bool = False, revision: str | None = None
) -> str:
    """Push a run's ``hf_model/`` at the end of training; a failure says how to push the saved model later."""
    try:
        url = push_upload(prepare_upload(run_dir, repo_id), private=private, revision=revision)
    except UserError as error:
        raise UserError(
            f"{error}; the model is saved: push it with `ernievil-ds push-to-hub {run_dir} --repo-id {repo_id}`"
        ) from None
    logger.info("Pushed %s to %s", run_dir, url)
    return url


@dataclass(frozen=True)
class HubPublisher:
    """The Hub's part of the end of a run (``ernievil_ds.runs.finish_run``): the model card beside the
    exported model and, when ``repo_id`` names a repository, the push."""

    repo_id: str | None
    private: bool = False
    revision: str | None = None

    def write_card(self, run_dir: Path) -> None:
        """``hf_model/README.md``: the card that the push would publish (named after the model folder when
        there is no repository to push to)."""
        model_dir = RunFolder(Path(run_dir)).model_dir
        files = collect_model_files(model_dir)
        card = build_model_card(self.repo_id or str(model_dir), files, read_run(Path(run_dir)))
        (model_dir / CARD_FILE).write_text(str(card))

    def push(self, run_dir: Path) -> str:
        if self.repo_id is None:
            raise ValueError("HubPublisher.push needs a repo_id")
        return push_after_training(run_dir, self.repo_id, private=self.private, revision=self.revision)

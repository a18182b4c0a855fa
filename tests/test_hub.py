"""Publishing on the Hub: the files chosen, the model card, the dry run, and the push through an in-process
stand-in for the Hub's HTTP API (installed with huggingface_hub's ``set_client_factory``), with a Hub
token that must never show in any output."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

import httpx2
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory
from safetensors.torch import save_file

from ernievil_ds.cli import main as ernievil_ds
from ernievil_ds.data import load_tokenizer
from ernievil_ds.errors import UserError
from ernievil_ds.finetuning.arguments import FinetuneSettings, parse_finetune_arguments
from ernievil_ds.finetuning.loop import main as finetune_main
from ernievil_ds.finetuning.modeling import ErnieVilForVisualQuestionAnswering
from ernievil_ds.hub.files import collect_model_files
from ernievil_ds.hub.model_code import model_code_files, write_model_code
from ernievil_ds.hub.push import prepare_upload
from ernievil_ds.hub.runs import base_model
from ernievil_ds.pretraining.arguments import parse_pretrain_arguments
from ernievil_ds.pretraining.pretrain import PretrainingRun
from ernievil_ds.runs import FINETUNING, PRETRAINING, RunFolder, write_settings
from tests.conftest import assert_loads_in_fresh_process

REPO = Path(__file__).resolve().parents[1]
TOKEN = "hf_SentinelToken0123456789abcdefXYZ"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
#: A hand-written cloze.json: three node types, numbers chosen to be told apart.
CLOZE = {
    "true_image": {
        "object": {"top1": 0.625, "top5": 0.875, "count": 8},
        "attribute": {"top1": 0.75, "top5": 1.0, "count": 12},
        "relation": {"top1": 0.5, "top5": 0.75, "count": 4},
    },
    "mismatched_image": {
        "object": {"top1": 0.125, "top5": 0.5, "count": 8},
        "attribute": {"top1": 0.25, "top5": 0.5, "count": 12},
        "relation": {"top1": 0.25, "top5": 0.5, "count": 4},
    },
    "gap_top1": {"object": 0.5, "attribute": 0.5, "relation": 0.25},
}


class FakeHub:
    """The Hub's endpoints that ``create_repo``, ``create_branch`` and ``create_commit`` call, in this
    process. As on the Hub, safetensors files are declared LFS uploads: they come through the LFS batch
    endpoint and a PUT (basic transfer; Xet storage is switched off), and the fake checks their sha256;
    the others come inline in the commit. Committed files land in ``root/<repo id>/<revision>/``.
    ``existing`` holds the repositories there before, repo id -> private; as on the Hub, creating one of
    them again answers 409 and leaves its visibility. ``status`` makes every request fail with that
    status and ``body``."""

    def __init__(
        self, root: Path, status: int | None = None, body: str = "", existing: dict[str, bool] | None = None
    ) -> None:
        self.root, self.status, self.body = root, status, body
        self.repos = dict(existing or {})  # repo id -> private
        self.requests: list[httpx2.Request] = []
        self.created: list[dict] = []
        self.commits: list[dict] = []
        self.lfs: dict[str, bytes] = {}  # sha256 -> content

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        self.requests.append(request)
        if self.status is not None:
            return httpx2.Response(self.status, text=self.body)
        path = unquote(request.url.path)
        if path == "/api/repos/create":
            created = json.loads(request.content)
            self.created.append(created)
            repo_id = f"{created['organization']}/{created['name']}"
            url = f"https://huggingface.co/{repo_id}"
            if repo_id in self.repos:
                return httpx2.Response(409, json={"error": "You already created this model repo", "url": url})
            self.repos[repo_id] = created.get("visibility") == "private"
            return httpx2.Response(200, json={"url": url})
        if request.method == "GET" and (match := re.fullmatch(r"/api/models/([^/]+/[^/]+)", path)):
            if match.group(1) not in self.repos:
                return httpx2.Response(404, json={"error": "Repository not found"})
            return httpx2.Response(200, json={"id": match.group(1), "private": self.repos[match.group(1)]})
        if re.fullmatch(r"/api/models/(.+)/preupload/(.+)", path):
            return self.preupload(json.loads(request.content)["files"])
        if path == "/api/validate-yaml":  # create_commit checks a README's metadata first
            front_matter(json.loads(request.content)["content"])
            return httpx2.Response(200, json={"warnings": []})
        if re.fullmatch(r"/api/models/(.+)/branch/(.+)", path):
            return httpx2.Response(200, json={})
        if re.fullmatch(r"/(.+)\.git/info/lfs/objects/batch", path):
            return self.lfs_batch(json.loads(request.content)["objects"])
        if match := re.fullmatch(r"/lfs-storage/([0-9a-f]{64})", path):
            assert hashlib.sha256(request.content).hexdigest() == match.group(1)
            self.lfs[match.group(1)] = request.content
            return httpx2.Response(200)
        if match := re.fullmatch(r"/api/models/(.+)/commit/(.+)", path):
            return self.commit(*match.groups(), request.content)
        return httpx2.Response(404, json={"error": f"the fake Hub has no {request.method} {path}"})

    def preupload(self, files: list[dict]) -> httpx2.Response:
        modes = [
            {
                "path": f["path"],
                "uploadMode": "lfs" if f["path"].endswith(".safetensors") else "regular",
                "shouldIgnore": False,
            }
            for f in files
        ]
        return httpx2.Response(200, json={"files": modes})

    def lfs_batch(self, objects: list[dict]) -> httpx2.Response:
        answer = [
            {
                "oid": o["oid"],
                "size": o["size"],
                "actions": {"upload": {"href": f"https://huggingface.co/lfs-storage/{o['oid']}"}},
            }
            for o in objects
        ]
        return httpx2.Response(200, json={"transfer": "basic", "objects": answer})

    def commit(self, repo_id: str, revision: str, content: bytes) -> httpx2.Response:
        lines = [json.loads(line) for line in content.splitlines()]
        folder = self.root / repo_id / revision
        for line in lines[1:]:
            value = line["value"]
            if line["key"] == "lfsFile":
                data = self.lfs[value["oid"]]
                assert len(data) == value["size"], value["path"]
            else:
                assert line["key"] == "file" and value["encoding"] == "base64", line["key"]
                data = base64.b64decode(value["content"])
            target = folder / value["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        self.commits.append({"repo_id": repo_id, "revision": revision, **lines[0]["value"]})
        url = f"https://huggingface.co/{repo_id}/commit/{'a' * 40}"
        return httpx2.Response(200, json={"commitUrl": url, "commitOid": "a" * 40, "pullRequestUrl": None})


@pytest.fixture
def hub_token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return TOKEN


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))


@pytest.fixture
def install_hub(tmp_path, monkeypatch):
    """Install a ``FakeHub`` (or a handler) as huggingface_hub's HTTP transport; the default after the test.
    Xet storage, whose client does its own networking, is switched off."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)

    def install(hub=None, **options):
        hub = hub or FakeHub(tmp_path / "hub", **options)
        handler = hub.handle if isinstance(hub, FakeHub) else hub
        set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler)))
        return hub

    yield install
    set_client_factory(default_client_factory)


@pytest.fixture
def saved_run(tmp_path, tiny_config, pretraining_model):
    """A pretraining run folder: run.json from the real argument parser, a hand-written cloze.json, and
    hf_model/ with a tiny model, its code, the tokenizer and files that must not be published."""
    run_dir = tmp_path / "run"
    args = parse_pretrain_arguments(
        [
            *("--deepspeed", "ds_configs/cpu_fp32.json", "--output-dir", str(run_dir), "--max-steps", "40"),
            *(
                "--preset",
                "tiny",
                "--node-mask-prob",
                '{"relation": 1.0}',
                "--no-sgp",
                "--push-to-hub",
                "a/b",
            ),
        ]
    )
    model = pretraining_model(tiny_config)
    model_dir = run_dir / "hf_model"
    model.save_pretrained(model_dir)
    write_model_code(model_dir)
    load_tokenizer().save_pretrained(model_dir)
    write_settings(RunFolder(run_dir), PRETRAINING, vars(args), model.config.to_dict())
    (run_dir / "cloze.json").write_text(json.dumps(CLOZE))
    (model_dir / "optimizer.pt").write_bytes(b"\x80\x04pickled optimizer state")
    (model_dir / "pytorch_model.bin").write_bytes(b"\x80\x04pickled weights")
    (model_dir / "training_notes.txt").write_text("lr 1e-4")
    (model_dir / "README.md").write_text("an old card")
    (model_dir / "checkpoint-10").mkdir()
    (model_dir / "checkpoint-10" / "model.safetensors").write_bytes(b"0")
    return run_dir, model, args


CODE_FILES = tuple(model_code_files())
PUBLISHED = ("config.json", "model.safetensors", *CODE_FILES, *TOKENIZER_FILES)
LEFT_OUT = ("README.md", "checkpoint-10", "optimizer.pt", "pytorch_model.bin", "training_notes.txt")


def front_matter(card: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", card, flags=re.DOTALL)
    assert match, card[:200]
    return yaml.safe_load(match.group(1))


def model_index_metrics(metadata: dict) -> dict[str, float]:
    (result,) = metadata["model-index"][0]["results"]
    return {metric["name"]: metric["value"] for metric in result["metrics"]}


def test_only_config_safetensors_code_and_tokenizer_are_published(saved_run):
    run_dir, _, _ = saved_run
    files = collect_model_files(run_dir / "hf_model")
    assert sorted(files.published) == sorted(PUBLISHED)
    reasons = dict(files.left_out)
    assert sorted(reasons) == sorted(LEFT_OUT)
    assert "pickle" in reasons["optimizer.pt"] and "pickle" in reasons["pytorch_model.bin"]
    assert "folder" in reasons["checkpoint-10"] and "card" in reasons["README.md"]


def test_a_folder_saved_without_its_code_gets_it_before_the_push(
    tmp_path, tiny_config, pretraining_model, capsys
):
    """A folder ``save_pretrained`` wrote alone: the push (even a dry run) writes the code and auto_map
    into it, and publishes them."""
    pretraining_model(tiny_config).save_pretrained(tmp_path)
    assert "auto_map" not in json.loads((tmp_path / "config.json").read_text())
    assert ernievil_ds(["push-to-hub", str(tmp_path), "--repo-id", "a/b", "--dry-run"]) == 0
    listing = capsys.readouterr().out
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForPreTraining"] == "modeling_ernievil.ErnieVilForPreTraining"
    for name in CODE_FILES:
        assert (tmp_path / name).is_file() and re.search(
            rf"^  {re.escape(name)} +[\d,]+ bytes$", listing, re.M
        )


def test_a_config_of_another_model_is_refused(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"a": torch.zeros(2)}, tmp_path / "model.safetensors")
    assert ernievil_ds(["push-to-hub", str(tmp_path), "--repo-id", "a/b", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not an ernievil-ds model's config: model_type 'bert'" in err


def test_sharded_weights_are_published_with_their_index(tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    shards = {"model-00001-of-00002.safetensors": "a", "model-00002-of-00002.safetensors": "b"}
    for name, key in shards.items():
        save_file({key: torch.zeros(2)}, tmp_path / name)
    index = {"metadata": {}, "weight_map": {key: name for name, key in shards.items()}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    published = collect_model_files(tmp_path).published
    assert sorted(published) == sorted(["config.json", "model.safetensors.index.json", *shards])
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(UserError, match=r"names shards that are not in .*model-00002-of-00002"):
        collect_model_files(tmp_path)


def test_a_folder_without_safetensors_weights_is_refused(tmp_path, tiny_config, capsys):
    tiny_config.save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    assert ernievil_ds(["push-to-hub", str(tmp_path), "--repo-id", "a/b", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no model.safetensors" in err


def test_dry_run_lists_files_sizes_and_card_and_sends_nothing(saved_run, no_token, install_hub, capsys):
    run_dir, _, _ = saved_run
    hub = install_hub()
    assert ernievil_ds(["push-to-hub", str(run_dir), "--repo-id", "someone/tiny", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert hub.requests == []
    listing, card = out.split("README.md " + "-" * 30 + "\n")
    for name in PUBLISHED:
        size = (run_dir / "hf_model" / name).stat().st_size
        assert re.search(rf"^  {re.escape(name)} +{size:,} bytes$", listing, flags=re.MULTILINE), name
    card = card.removesuffix("Dry run: nothing uploaded.\n").rstrip("\n") + "\n"
    card_size = len(card.encode())
    assert re.search(rf"^  README.md +{card_size:,} bytes$", listing, flags=re.MULTILINE)
    for name in LEFT_OUT:
        assert re.search(rf"^  {re.escape(name)}: ", listing, flags=re.MULTILINE), name
    assert model_index_metrics(front_matter(card))["object top-1 accuracy"] == 0.625


def test_pretraining_card_metadata_metrics_command_and_citation(saved_run):
    run_dir, model, args = saved_run
    card = str(prepare_upload(run_dir, "someone/tiny").card)
    metadata = front_matter(card)
    assert metadata["library_name"] == "transformers" and metadata["license"] == "apache-2.0"
    assert {"ernie-vil", "pretraining"} <= set(metadata["tags"])
    assert metadata["model-index"][0]["name"] == "tiny"
    expected = {
        f"{node} top-{k} accuracy": CLOZE["true_image"][node][f"top{k}"]
        for node in CLOZE["true_image"]
        for k in (1, 5)
    }
    assert model_index_metrics(metadata) == expected
    assert ModelCard(card).data.eval_results[0].metric_value == 0.625  # the Hub's own parser agrees
    assert "| relation | 4 | 0.500 | 0.750 | 0.250 | +0.250 |" in card
    params = sum(p.numel() for name, p in model.state_dict().items() if name != "token_head.decoder.weight")
    assert f"preset `tiny`), {params:,} parameters" in card
    assert "arXiv" in card and "2006.16934" in card and "Yu, Fei" in card and "AAAI" in card
    assert "synthetic" in card and "random token masking only" in card
    # Loading needs transformers only, through the code the repository carries.
    assert 'AutoModelForPreTraining.from_pretrained("someone/tiny", trust_remote_code=True)' in card
    assert "pip install" not in card and "import ernievil_ds" not in card
    assert "pipeline_tag" not in metadata and "base_model" not in metadata
    # The command in the card parses back to the run's settings.
    command = re.search(r"```bash\n(.*?)\n```", card, flags=re.DOTALL).group(1)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["deepspeed", "launchers/pretrain.py"]
    reparsed = vars(parse_pretrain_arguments(argv[2:]))
    invocation = {"push_to_hub"}
    assert {k: v for k, v in reparsed.items() if k not in invocation} == {
        k: v for k, v in vars(args).items() if k not in invocation
    }


def test_finetuning_card_takes_the_last_evaluation(tmp_path, saved_run, monkeypatch):
    run_dir, _, _ = saved_run
    finetuned = tmp_path / "finetuned"
    finetuned.mkdir()
    (run_dir / "hf_model").rename(finetuned / "hf_model")
    settings = FinetuneSettings(
        task="synth_qa",
        output_dir=finetuned,
        steps=50,
        learning_rate=3e-4,
        vqa_loss="softmax",
        train_question_types=("count", "colour"),
        question_loss_weights={"count": 4.0},
    )
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under accelerate launch --num_processes 2
    write_settings(RunFolder(finetuned), FINETUNING, vars(settings), None)
    monkeypatch.delenv("WORLD_SIZE")
    records = [
        {"step": 25, "eval_accuracy": 0.25, "eval_accuracy_colour": 0.125},
        {"step": 50, "eval_accuracy": 0.5, "eval_accuracy_colour": 0.375},
    ]
    (finetuned / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    card = str(prepare_upload(finetuned / "hf_model", "someone/tiny-vqa").card)
    metadata = front_matter(card)
    assert model_index_metrics(metadata) == {"accuracy": 0.5, "accuracy colour": 0.375}
    assert metadata["model-index"][0]["results"][0]["task"]["type"] == "visual-question-answering"
    assert "fine-tuning" in metadata["tags"]
    assert "| metric (step 50) | value |" in card and "| accuracy colour | 0.3750 |" in card
    command = re.search(r"```bash\n(.*?)\n```", card, flags=re.DOTALL).group(1)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv == [
        *("accelerate", "launch", "--num_processes", "2", "launchers/finetune.py"),
        *("--task", "synth_qa", "--output-dir", str(finetuned), "--train-question-types", "count,colour"),
        *("--question-loss-weights", '{"count": 4.0}'),
        *("--steps", "50", "--learning-rate", "0.0003", "--vqa-loss", "softmax"),
    ]
    assert parse_finetune_arguments(argv[5:]) == settings  # the card's command trains the same run
    assert "(colour, relation, yes/no, count; trained on count, colour only)" in card


def test_a_vqa_card_names_its_task_its_auto_class_and_its_base_model(tmp_path, saved_run, tiny_config):
    """A fine-tuned VQA model: pipeline tag, the VQA Auto class in the usage code, and as base model the
    repository its starting model was pushed to (recorded as the pretraining run's --push-to-hub)."""
    run_dir, _, _ = saved_run
    finetuned = tmp_path / "finetuned"
    model_dir = RunFolder(finetuned).model_dir
    ErnieVilForVisualQuestionAnswering(tiny_config).save_pretrained(model_dir)
    settings = FinetuneSettings(task="synth_qa", output_dir=finetuned, model=run_dir / "hf_model")
    write_settings(RunFolder(finetuned), FINETUNING, vars(settings), None)
    card = str(prepare_upload(finetuned, "someone/vqa").card)
    metadata = front_matter(card)
    assert metadata["pipeline_tag"] == "visual-question-answering" and metadata["base_model"] == "a/b"
    assert (
        'model = AutoModelForVisualQuestionAnswering.from_pretrained("someone/vqa", trust_remote_code=True)'
        in card
    )


def test_the_base_model_is_a_hub_name_or_where_the_starting_run_was_pushed(tmp_path, saved_run):
    run_dir, _, _ = saved_run
    assert base_model(None) is None  # a fresh preset
    assert base_model("someone/ernievil-base") == "someone/ernievil-base"  # not a local folder
    assert base_model(str(run_dir / "hf_model")) == "a/b"
    assert base_model(str(tmp_path / "missing" / "hf_model")) is None  # a local path, not a Hub name
    unpushed = tmp_path / "plain"
    (run_dir / "hf_model").rename(unpushed)
    assert base_model(str(unpushed)) is None  # no run folder around it


@pytest.mark.parametrize(
    ("existing", "private", "refused"),
    [
        ({"someone/tiny": False}, True, True),
        ({"someone/tiny": True}, True, False),
        ({"someone/tiny": False}, False, False),
    ],
    ids=["private-to-public", "private-to-private", "public-to-public"],
)
def test_private_is_refused_for_an_existing_public_repository(
    saved_run, hub_token, install_hub, existing, private, refused, capsys
):
    """The Hub leaves an existing repository's visibility as it is: --private there is an error, before
    anything is uploaded; a repository that exists and matches takes the push."""
    run_dir, _, _ = saved_run
    hub = install_hub(existing=existing)
    argv = ["push-to-hub", str(run_dir), "--repo-id", "someone/tiny", *(["--private"] if private else [])]
    assert ernievil_ds(argv) == (2 if refused else 0)
    err = capsys.readouterr().err
    assert len(hub.commits) == (0 if refused else 1)
    if refused:
        assert (
            err.startswith("ernievil-ds: error: someone/tiny already exists and is public")
            and err.count("\n") == 1
        )
        assert "`hf repos settings someone/tiny --private`" in err
    assert hub.repos == existing  # no visibility changed


def pushed_files(hub: FakeHub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    folder = hub.root / repo_id / revision
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_commits_the_files_and_the_card_and_the_result_loads_in_a_fresh_process(
    saved_run, hub_token, install_hub, batch_factory, tiny_config, capsys, caplog
):
    run_dir, model, _ = saved_run
    hub = install_hub()
    caplog.set_level(logging.DEBUG)
    argv = ["push-to-hub", str(run_dir / "hf_model"), "--repo-id", "someone/tiny", "--private"]
    assert ernievil_ds([*argv, "--revision", "v1", "--commit-message", "first"]) == 0
    assert hub.created == [{"name": "tiny", "organization": "someone", "visibility": "private"}]
    assert hub.commits[0]["summary"] == "first" and hub.commits[0]["revision"] == "v1"
    files = pushed_files(hub, "someone/tiny", "v1")
    assert sorted(files) == sorted([*PUBLISHED, "README.md"])
    assert list(hub.lfs.values()) == [files["model.safetensors"]]  # through the LFS transfer
    for name in PUBLISHED:
        assert files[name] == (run_dir / "hf_model" / name).read_bytes(), name
    assert model_index_metrics(front_matter(files["README.md"].decode()))["relation top-5 accuracy"] == 0.75
    posts = [r for r in hub.requests if r.method == "POST"]  # repo, branch, card, preupload, LFS, commit
    assert len(posts) == 6 and all(r.headers["authorization"] == f"Bearer {hub_token}" for r in posts)
    out = capsys.readouterr()
    assert "Pushed to https://huggingface.co/someone/tiny/commit/" in out.out
    assert hub_token not in out.out + out.err + caplog.text
    assert_loads_in_fresh_process(hub.root / "someone/tiny/v1", model, batch_factory(tiny_config))


def refusing_transport(request: httpx2.Request) -> httpx2.Response:
    raise httpx2.ConnectError("connection refused", request=request)


@pytest.mark.parametrize(
    ("hub_options", "message"),
    [
        (
            {
                "status": 401,
                "body": json.dumps({"error": f"Invalid credentials in Authorization header {TOKEN}"}),
            },
            "the Hub refused the token (401 Unauthorized)",
        ),
        (
            {"status": 500, "body": json.dumps({"error": f"internal error while checking {TOKEN}"})},
            "internal error while checking <token>",
        ),
        (refusing_transport, "cannot reach https://huggingface.co (ConnectError: connection refused)"),
    ],
    ids=["refused-token", "server-error-echoing-the-token", "network-failure"],
)
def test_a_failed_push_is_one_line_without_the_token(
    saved_run, hub_token, install_hub, hub_options, message, capsys, caplog
):
    run_dir, _, _ = saved_run
    if callable(hub_options):
        install_hub(hub_options)
    else:
        install_hub(**hub_options)
    caplog.set_level(logging.DEBUG)
    assert ernievil_ds(["push-to-hub", str(run_dir), "--repo-id", "someone/tiny"]) == 2
    out = capsys.readouterr()
    assert (
        out.err.startswith("ernievil-ds: error: pushing to someone/tiny failed: ")
        and out.err.count("\n") == 1
    )
    assert message in out.err
    assert hub_token not in out.out + out.err + caplog.text


def test_a_missing_token_is_one_line_before_any_request(saved_run, no_token, install_hub, capsys):
    run_dir, _, _ = saved_run
    hub = install_hub()
    assert ernievil_ds(["push-to-hub", str(run_dir), "--repo-id", "someone/tiny"]) == 2
    err = capsys.readouterr().err
    assert err == "ernievil-ds: error: no Hugging Face token: log in with `hf auth login` or set HF_TOKEN\n"
    assert hub.requests == []


def test_pretraining_checks_the_push_before_training(tmp_path, no_token):
    base = ["--deepspeed", "ds_configs/cpu_fp32.json", "--output-dir", str(tmp_path), "--max-steps", "2"]
    with pytest.raises(UserError, match="no Hugging Face token"):
        PretrainingRun.prepare(parse_pretrain_arguments([*base, "--push-to-hub", "someone/tiny"]))
    with pytest.raises(UserError, match="is not a Hub repository name"):
        PretrainingRun.prepare(parse_pretrain_arguments([*base, "--push-to-hub", "a/b/c"]))
    with pytest.raises(UserError, match="drop --no-export"):
        PretrainingRun.prepare(parse_pretrain_arguments([*base, "--push-to-hub", "a/b", "--no-export"]))


def test_pretraining_pushes_the_run_after_the_export(saved_run, hub_token, install_hub):
    run_dir, _, args = saved_run
    hub = install_hub()
    args.export = args.cloze = False  # hf_model/ is there already; the export has its own tests
    args.hub_revision = "final"
    PretrainingRun(args, {}, None, None, run_dir, 1, None).finish("cpu")
    files = pushed_files(hub, "a/b", "final")
    assert sorted(files) == sorted([*PUBLISHED, "README.md"])
    assert "deepspeed launchers/pretrain.py" in files["README.md"].decode()


def test_a_push_failing_after_training_says_how_to_push_later(saved_run, hub_token, install_hub):
    run_dir, _, args = saved_run
    install_hub(status=401)
    args.export = args.cloze = False
    with pytest.raises(
        UserError, match=r"401 Unauthorized.*the model is saved: push it with `ernievil-ds push-to-hub"
    ):
        PretrainingRun(args, {}, None, None, run_dir, 1, None).finish("cpu")


def test_finetuning_pushes_the_model_with_its_tokenizer_at_the_end(tmp_path, hub_token, install_hub, capsys):
    hub = install_hub()
    argv = ["--task", "synth_qa", "--preset", "tiny", "--output-dir", str(tmp_path / "run"), "--steps", "2"]
    argv += ["--batch-size", "4", "--train-images", "4", "--eval-images", "2", "--push-to-hub", "someone/vqa"]
    assert finetune_main(argv) == 0
    files = pushed_files(hub, "someone/vqa")
    assert {"config.json", "model.safetensors", "README.md", "tokenizer.json"} <= set(files)
    final = json.loads((tmp_path / "run" / "eval.jsonl").read_text().splitlines()[-1])
    metrics = model_index_metrics(front_matter(files["README.md"].decode()))
    assert metrics["accuracy"] == round(final["eval_accuracy"], 6)
    assert hub_token not in capsys.readouterr().out


def test_finetuning_checks_the_token_before_training(tmp_path, no_token):
    argv = ["--task", "synth_qa", "--preset", "tiny", "--output-dir", str(tmp_path / "run")]
    with pytest.raises(UserError, match="no Hugging Face token"):
        finetune_main([*argv, "--push-to-hub", "someone/vqa"])
    assert not (tmp_path / "run").exists()

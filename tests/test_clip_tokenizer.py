"""The CLIP tokenizer the pack builds from open_clip's BPE file, against tokenizers built without the pack's code.

The pack builds its transformers CLIPTokenizer (SD pipelines without tokenizer files, the CLIP node's
transformers path, and the tokenizer both sides of the prompt-encode parity tests use) from its own reading
of open_clip's bpe_simple_vocab_16e6.txt.gz (models/perception/clip_inputs.py). Checked here against
- the released CLIP tokenizer files (vocab.json, merges.txt of openai/clip-vit-large-patch14, as ComfyUI
  ships them in comfy/sd1_tokenizer: read from the ComfyUI checkout at test time, never copied), loaded by
  transformers' own CLIPTokenizer.from_pretrained;
- open_clip's own SimpleTokenizer (its own parse of the BPE file, its own text cleaning);
on a varied corpus: accents, CJK, Cyrillic, emoji, combining marks, punctuation, prompt grammar, long words,
numbers, odd whitespace, HTML entities, ligatures, full-width letters, smart quotes, and prompts over 77 tokens.
open_clip cleans text first (ftfy, HTML unescape, whitespace) where transformers does not; ComfyUI and
diffusers tokenize with transformers, so the pack must equal transformers on the raw text, and open_clip on
the text open_clip's cleaning gives.
"""
from __future__ import annotations

import json

import pytest

from vk_testing import import_pack, tiers
from vk_testing.comfy_checkouts import ComfyUINotFound, find_comfyui_dir

import_pack()
from visionkit_pack.models.perception import clip_inputs as cb  # noqa: E402
from visionkit_pack.models.sd import prompt as sp  # noqa: E402

BOS, EOS = 49406, 49407
CORPUS = [
    "", "a photo of a cat", "A Photo OF a CAT", "café crème brûlée naïve", "Straße über Ärger", "東京の夜景 中文",
    "кошка на крыше", "🐱🚀✨ emoji!", "a\u0301 combining mark", "hello, world! what's up? (yes) [no] {maybe} <tag>",
    "(masterpiece:1.2), \\(escaped\\), [less], ((more))", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 60, "1234567890 3.14159 1e-5 #42 $9.99 50%", "tabs\tand\nnewlines   many   spaces  ",
    "&amp; &lt;b&gt; html &quot;", "don't won't it's y'all", "--- ... !!! ??? ;;; ::: /// ___ ***",
    "under_score snake_case CamelCase kebab-case", "ﬁ ligature ＦＵＬＬ width", "“smart quotes” ‘single’ — em dash",
    "mixed😀text😀here", "tokenizer-breaking://url.example/path?q=1&x=2", "ÅÄÖ ÆØ ĳ ǅ ﬀ",
    " ".join(f"word{i}" for i in range(100)),  # > 77 tokens: truncated, and 3 chunks for the prompt encoder
    " ".join("supercalifragilisticexpialidocious" for _ in range(30)),
]


@pytest.fixture(scope="module")
def released():
    """transformers' CLIPTokenizer from the released files in the ComfyUI checkout (not the pack's code)."""
    try:
        comfy = find_comfyui_dir()
    except ComfyUINotFound as ex:
        pytest.fail(str(ex))
    if comfy is None or not (comfy / "comfy" / "sd1_tokenizer" / "vocab.json").is_file():
        tiers.missing("T2", "no ComfyUI checkout with comfy/sd1_tokenizer (the released CLIP tokenizer files)")
    from transformers import CLIPTokenizer

    folder = comfy / "comfy" / "sd1_tokenizer"
    return folder, CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def ids(tok, text: str) -> list[int]:
    return tok(text, padding="max_length", max_length=77, truncation=True).input_ids


def test_vocab_and_merges_are_the_released_ones_and_open_clips(released):
    from open_clip.tokenizer import SimpleTokenizer

    folder, _ = released
    vocab, merges = cb.bpe_vocab_and_merges()
    assert vocab == json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").split("\n")
    assert lines[0].startswith("#version")
    assert list(merges) == [tuple(line.split()) for line in lines[1:] if line]
    oc = SimpleTokenizer()
    specials = {"<|startoftext|>": "<start_of_text>", "<|endoftext|>": "<end_of_text>"}
    assert {specials.get(k, k): v for k, v in vocab.items()} == oc.encoder
    assert {m: i for i, m in enumerate(merges)} == oc.bpe_ranks


@pytest.mark.parametrize("pad", [None, "!"], ids=["clip-l", "openclip-bigG"])
def test_token_ids_equal_transformers_on_the_released_files(released, pad):
    """The pack's tokenizer (and the tokenizer folder the tiny SD fixtures write) equal transformers' on the
    released files, padding included (SDXL's second tokenizer pads with "!", id 0)."""
    from transformers import CLIPTokenizer

    folder, ref = released
    if pad:
        ref = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, pad_token=pad)
        vocab, merges = cb.bpe_vocab_and_merges()
        pack = CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77, pad_token=pad)
    else:
        pack = cb.hf_bpe_tokenizer(77)._tok
    assert ref.pad_token_id == (0 if pad else EOS) == pack.pad_token_id
    for text in CORPUS:
        want = ids(ref, text)
        assert len(want) == 77 and want[0] == BOS and EOS in want, text
        assert ids(pack, text) == want, text
        assert pack.tokenize(text) == ref.tokenize(text), text  # no truncation: every token of long texts too


def test_tiny_fixture_tokenizer_folder_equals_the_released_files(released, tmp_path):
    from transformers import CLIPTokenizer
    from vk_testing.tiny_sd import write_tokenizer

    _, ref = released
    write_tokenizer(tmp_path / "tok", "<|endoftext|>")
    tiny = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"), local_files_only=True)
    for text in CORPUS:
        assert ids(tiny, text) == ids(ref, text), text


def test_token_ids_equal_open_clip_on_open_clips_cleaned_text():
    """open_clip's SimpleTokenizer on the raw text = the pack's on the text after open_clip's cleaning, for
    every text (truncated the same way: 76 tokens, then end-of-text); the raw texts differ only where the
    cleaning changes the text (HTML entities, ligatures, full-width letters, smart quotes)."""
    from open_clip.tokenizer import SimpleTokenizer, basic_clean, whitespace_clean

    oc, pack = SimpleTokenizer(), cb.hf_bpe_tokenizer(77)._tok
    changed = 0
    for text in CORPUS:
        want = oc([text], context_length=77)[0].tolist()
        end = want.index(EOS) + 1
        cleaned = whitespace_clean(basic_clean(text)).lower()
        got = ids(pack, cleaned)
        assert got[:end] == want[:end] and set(got[end:]) <= {EOS} and set(want[end:]) <= {0}, text
        changed += cleaned != whitespace_clean(text.lower()).strip()
    assert changed >= 4  # the corpus does exercise the cleaning


def test_prompt_chunks_equal_with_the_released_tokenizer(released):
    """The prompt encoder's chunks (weights, 75-token chunks, padding) with the pack's tokenizer are the ones
    the released tokenizer gives, for every text and for weighted prompts over 77 tokens."""
    _, ref = released
    pack = cb.hf_bpe_tokenizer(77)._tok
    prompts = CORPUS + [f"(a cat:1.3), {CORPUS[-2]}, [blurry], (masterpiece)", f"(({CORPUS[-1]}:0.8))"]
    multi = 0
    for text in prompts:
        got = sp.tokenize_chunks(pack, text)
        assert got == sp.tokenize_chunks(ref, text), text
        multi += len(got) > 1
    assert multi >= 3

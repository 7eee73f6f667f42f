"""The training corpus, the held-out split and the tokenizer of the bundled OPT models.

Shared by train_opt.py and hf_perplexity.py so both see the same text and the same token ids.

Corpus: ../shared/data/corpus (State of the Union addresses sotu/<year>_<president>.txt, and
moby-dick.txt). Addresses from HELDOUT_FROM_YEAR on are held out; everything else is training
text. The held-out text is one string: the held-out addresses in year order, each stripped,
joined by a blank line. tests/data/heldout/sotu-2010-2021.txt is exactly that string.

Vocabulary: GPT-2's byte-level BPE (gpt2-bpe/encoder.json, vocab.bpe), laid out as OPT lays out
its vocabulary: the four specials first (<s> 0, <pad> 1, </s> 2, <unk> 3) and every GPT-2 token
at its GPT-2 id + 4 (so "<|endoftext|>" is 50260). GPT-2's own ids would make BOS/EOS 2 the
character '#' and pad 1 the double quote; this layout keeps OPT's special ids genuine. The
embedding has 50272 rows (OPT's size, a multiple of 8); ids 50261.. are unused.
The model directory ships this as vocab.json (+ merges.txt = vocab.bpe), which both Hugging
Face's GPT2Tokenizer and llmint8's coordinator/tokenizer.h read.
"""

import json
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))

HELDOUT_FROM_YEAR = 2010
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
PAD_ID, BOS_ID, EOS_ID = 1, 2, 2
ID_OFFSET = len(SPECIALS)
VOCAB_SIZE = 50272  # OPT's embedding rows

_YEAR = re.compile(r"^(\d{4})_")


def sotu_files(corpus_dir):
    """[(year, path)] of the State of the Union addresses, sorted by file name (year first)."""
    d = os.path.join(corpus_dir, "sotu")
    out = []
    for name in sorted(os.listdir(d)):
        m = _YEAR.match(name)
        if not m or not name.endswith(".txt"):
            raise ValueError(f"unexpected file {name} in {d}: want <year>_<name>.txt")
        out.append((int(m.group(1)), os.path.join(d, name)))
    return out


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def train_documents(corpus_dir, heldout_from_year=HELDOUT_FROM_YEAR):
    """[(label, text)] of the training documents: addresses before the split year + Moby-Dick."""
    docs = [(os.path.basename(p), read_text(p))
            for y, p in sotu_files(corpus_dir) if y < heldout_from_year]
    docs.append(("moby-dick.txt", read_text(os.path.join(corpus_dir, "moby-dick.txt"))))
    return docs


def heldout_files(corpus_dir, heldout_from_year=HELDOUT_FROM_YEAR):
    return [p for y, p in sotu_files(corpus_dir) if y >= heldout_from_year]


def heldout_text(corpus_dir, heldout_from_year=HELDOUT_FROM_YEAR):
    """The held-out addresses in year order, joined by a blank line, with a final newline."""
    return "\n\n".join(read_text(p) for p in heldout_files(corpus_dir, heldout_from_year)) + "\n"


def write_opt_vocab(encoder_json, path):
    """Writes GPT-2's encoder.json in OPT's layout (see the module doc) to `path`."""
    with open(encoder_json, encoding="utf-8") as f:
        enc = json.load(f)
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for tok, i in sorted(enc.items(), key=lambda kv: kv[1]):
        if tok in vocab:
            raise ValueError(f"GPT-2 vocabulary already holds the special {tok!r}")
        vocab[tok] = i + ID_OFFSET
    assert max(vocab.values()) < VOCAB_SIZE
    with open(path, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)


# What facebook/opt-* checkpoints ship (tokenizer_config.json), so AutoTokenizer.from_pretrained
# on a model directory prepends </s> as OPT does.
TOKENIZER_CONFIG = {
    "tokenizer_class": "GPT2Tokenizer",
    "add_bos_token": True,
    "add_prefix_space": False,
    "errors": "replace",
    "bos_token": "</s>",
    "eos_token": "</s>",
    "unk_token": "</s>",
    "pad_token": "<pad>",
    "model_max_length": 1000000000000000019884624838656,
}
SPECIAL_TOKENS_MAP = {"bos_token": "</s>", "eos_token": "</s>", "unk_token": "</s>",
                      "pad_token": "<pad>"}


def write_tokenizer_files(data_dir, out_dir):
    """vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json into out_dir."""
    bpe = os.path.join(data_dir, "gpt2-bpe")
    write_opt_vocab(os.path.join(bpe, "encoder.json"), os.path.join(out_dir, "vocab.json"))
    with open(os.path.join(bpe, "vocab.bpe"), encoding="utf-8") as f:
        merges = f.read()
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
        f.write(merges)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump(SPECIAL_TOKENS_MAP, f, indent=2)


def load_tokenizer(tok_dir):
    """The tokenizer of tok_dir (vocab.json + merges.txt + tokenizer_config.json, as written by
    write_tokenizer_files), through AutoTokenizer: the fast (Rust) GPT-2 tokenizer.

    encode() below gives the ids; it prepends BOS_ID itself (explicit, and independent of how a
    transformers version treats add_bos_token).
    """
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tok_dir)
    for token, want in (("</s>", BOS_ID), ("<pad>", PAD_ID), ("\u0120the", 262 + ID_OFFSET)):
        got = tok.convert_tokens_to_ids(token)
        if got != want:
            raise ValueError(f"{tok_dir}: token {token!r} has id {got}, want {want}")
    return tok


def encode(tok, text, add_bos=True):
    """Token ids of `text` as a list of ints: [BOS] + BPE ids (OPT's tokenizer prepends </s>).

    Special tokens written in the text are plain text (split_special_tokens), as in llmint8's
    coordinator/tokenizer.h.
    """
    ids = tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ([BOS_ID] if add_bos else []) + ids

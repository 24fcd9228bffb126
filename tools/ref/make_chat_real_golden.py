#!/usr/bin/env python3
"""A chat turn of a real GGUF model through transformers: the chat template applied by
apply_chat_template(tokenize=True) (the prompt's token ids) and the greedy reply, decoded.

transformers reads the GGUF (gguf_file=..., dequantized to float32) with its own tokenizer
conversion and model class, so both the prompt ids and the reply are independent of fusekit.
tests/real/test_real.c runs the same turn through fusekit's chat path and compares.

usage: python3 make_chat_real_golden.py FILE.gguf "USER MESSAGE" MAX_NEW > OUT.json
Needs: pip install torch transformers gguf (torch 2.15, transformers 5.25 made the committed file).
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    path, message, max_new = sys.argv[1], sys.argv[2], int(sys.argv[3])
    d, f = os.path.dirname(os.path.abspath(path)), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, torch_dtype=torch.float32)
    msgs = [{"role": "user", "content": message}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if ids and isinstance(ids[0], list):
        ids = ids[0]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False)
    reply_ids = out[0, len(ids):].tolist()
    text = tok.decode(reply_ids, skip_special_tokens=True)
    json.dump({"file": f, "message": message, "prompt_ids": ids, "reply_ids": reply_ids, "reply": text}, sys.stdout, ensure_ascii=False)
    print()


if __name__ == "__main__":
    main()

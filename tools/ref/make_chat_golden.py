#!/usr/bin/env python3
"""Chat-template goldens from Hugging Face transformers' own apply_chat_template.

For each template file given, renders a fixed set of conversations with
PreTrainedTokenizerFast.apply_chat_template(tokenize=False) -- transformers' Jinja environment
(trim_blocks, lstrip_blocks, raise_exception, strftime_now, tojson) -- and writes one JSON
file: [{"template": NAME, "bos": ..., "eos": ..., "vars": {...}, "messages": [...],
"add_generation_prompt": bool, "expected": TEXT} or {..., "error": MESSAGE}].
tests/test_chat.c renders the same conversations with fusekit and compares byte for byte.

usage: python3 make_chat_golden.py OUT.json TEMPLATE.jinja...   (NO_SNIPPETS=1: the templates only)
       (templates: tests/data/chat/*.jinja; the survey over llama.cpp's collection runs the same
        script on vendor/llama.cpp/models/templates/*.jinja of the llama-cpp-python sdist)
Needs: pip install transformers tokenizers jinja2 (transformers 5.25 made the committed file).
"""
import json
import os
import sys

from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

CONVERSATIONS = [
    ([{"role": "user", "content": "Hello! What's 2+2?"}], True),
    ([{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."},
      {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one?"}], True),
    ([{"role": "user", "content": "  Leading and trailing spaces \n"}, {"role": "assistant", "content": "Sure:\n- a\n- b"},
      {"role": "user", "content": "\u00fcn\u00efc\u00f6d\u00e9 \"quotes\" and 'apostrophes' {{ not a tag }} {% neither %}"}], True),
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], False),
    ([{"role": "system", "content": "Only a system message."}, {"role": "user", "content": "And a question?"}], False),
    ([{"role": "assistant", "content": "I speak first."}, {"role": "user", "content": "Fine."}], True),
]

# the BOS / EOS texts a family's tokenizer has (only their text reaches the template)
SPECIALS = [
    ("llama-3", "<|begin_of_text|>", "<|eot_id|>"), ("Llama-3", "<|begin_of_text|>", "<|eot_id|>"),
    ("gemma", "<bos>", "<eos>"), ("Qwen", "", "<|im_end|>"), ("qwen", "", "<|im_end|>"),
    ("SmolLM2", "<|im_start|>", "<|im_end|>"), ("Phi", "<s>", "<|endoftext|>"), ("phi", "<s>", "<|endoftext|>"),
]
VARS = {"date_string": "26 Jul 2024"}

# Small templates for Jinja's rules (whitespace control with transformers' trim_blocks and
# lstrip_blocks, expressions, filters, tests, string methods, loops, set scoping, namespaces),
# rendered over [user "Hi", assistant "Yo"] with add_generation_prompt, BOS "<s>", EOS "</s>".
SNIPPETS = [
    "{% if true %}\nA{% endif %}\n",
    "  {% if true %}A{% endif %}",
    "x  {% if true %}A{% endif %}",
    "{{ 'A' }}\nB",
    "A   {{- 'B' -}}   \n C",
    "A\n  {%- if true %}B{% endif %}",
    "{# note #}\nA",
    "A {#- note -#} B",
    "  {%+ if true %}A{% endif %}",
    "{% for m in messages %}\n  {{ m.role }}\n{% endfor %}",
    "{{ messages[0]['content'] }}-{{ messages[-1].content }}-{{ messages | length }}",
    "{{ 'a' + 'b' ~ 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ 2 * 3 + 1 }}|{{ 1 / 2 }}",
    "{{ messages[1:] | length }}{{ messages[::-1][0].role }}{{ 'abc'[1] }}{{ 'abcdef'[1:4] }}",
    "{{ 'x' if messages|length > 1 else 'y' }}{{ 'z' if false }}",
    "{{ not undefined_name is defined }}{{ none is none }}{{ 3 is odd }}{{ 4 is divisibleby 2 }}{{ 'a' is string }}",
    "{{ 'ell' in 'hello' }}{{ 'q' not in 'hello' }}{{ 'role' in messages[0] }}{{ 2 in [1, 2] }}",
    "{{ '  pad  ' | trim }}|{{ 'Ab' | upper }}{{ 'Ab' | lower }}|{{ [1, 'a', none, true] }}|{{ {'k': 'v'} }}",
    "{{ {'a': [1, 'x'], 'b': none, 'c': 'q\"\\n'} | tojson }}",
    "{{ [1] | tojson(indent=2) }}",
    "{{ '  a b  '.strip() }}|{{ 'a,b'.split(',') | join('+') }}|{{ 'abc'.startswith('ab') }}|{{ 'x\\n'.rstrip('\\n') }}|{{ 'aXa'.replace('a', 'b') }}",
    "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}{{ messages | map(attribute='role') | join(',') }}",
    "{{ {'b': 1, 'a': 2} | dictsort | first | first }}{{ {'k': 1}.get('k') }}{{ {'k': 1}.get('z', 'd') }}",
    "{{ missing | default('dflt') }}{{ '' | default('e', true) }}{{ missing }}|{{ bos_token }}{{ eos_token }}",
    "{{ (1 < 2) and (2 >= 2) or false }}{{ 'b' > 'a' }}{{ 1 == 1.0 }}{{ none == none }}",
    "{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }};{% endfor %}",
    "{% for m in messages if m.role == 'assistant' %}{{ loop.index }}{{ m.content }}{% endfor %}",
    "{% for x in [] %}A{% else %}empty{% endfor %}",
    "{% for x in range(5) %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }} {% endfor %}",
    "{% set x = 'out' %}{% for m in messages %}{% set x = m.role %}{% endfor %}{{ x }}",
    "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
    "{% set b %}[{{ messages[0].content }}]{% endset %}{{ b }}{{ b }}",
    "{% if false %}a{% elif messages %}b{% else %}c{% endif %}{% generation %}g{% endgeneration %}",
    "{{ add_generation_prompt }}{% if add_generation_prompt %}<assistant>{% endif %}"
]
SNIPPET_MESSAGES = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]


def specials(name):
    for key, bos, eos in SPECIALS:
        if key in name:
            return bos, eos
    return "<s>", "</s>"


def main():
    out, paths = sys.argv[1], sys.argv[2:]
    tok = Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    rows = []
    for path in paths:
        name = os.path.basename(path)
        with open(path, encoding="utf-8") as f:
            tmpl = f.read()
        bos, eos = specials(name)
        t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos or None, eos_token=eos)
        for msgs, gen in CONVERSATIONS:
            row = {"template": name, "bos": bos, "eos": eos, "vars": VARS, "messages": msgs, "add_generation_prompt": gen}
            try:
                row["expected"] = t.apply_chat_template(msgs, chat_template=tmpl, tokenize=False, add_generation_prompt=gen, **VARS)
            except Exception as e:  # raise_exception, or a template transformers cannot render
                row["error"] = str(e)
            rows.append(row)
    if not os.environ.get("NO_SNIPPETS"):
        t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
        for src in SNIPPETS:
            row = {"source": src, "bos": "<s>", "eos": "</s>", "vars": {}, "messages": SNIPPET_MESSAGES, "add_generation_prompt": True}
            row["expected"] = t.apply_chat_template(SNIPPET_MESSAGES, chat_template=src, tokenize=False, add_generation_prompt=True)
            rows.append(row)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{out}: {len(rows)} renderings of {len(paths)} templates, "
          f"{sum('error' in r for r in rows)} errors", file=sys.stderr)


if __name__ == "__main__":
    main()

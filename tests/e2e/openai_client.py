#!/usr/bin/env python3
"""Calls llmint8's OpenAI-compatible API with the official OpenAI Python SDK.

Usage: openai_client.py PORT MODEL_ID TOKEN_IDS MAX_TOKENS
Prints one JSON object: the token ids, text, logprobs and top-2 logprobs of a non-streamed and
the token ids and text of a streamed greedy completion of the token-id prompt (penalised by
frequency_penalty 0.5), the streamed usage, the logprobs of the prompt scored with echo and
max_tokens 0, the token ids of each choice of a greedy batch (the prompt and its first two
tokens, n=2), and the error a bad request raised.
Run by tests/e2e/http_e2e_test.cc with the interpreter of a venv that has `openai` installed
(scripts/test.sh makes it).
"""
import json
import sys

import openai


def main() -> None:
    port, model, prompt, max_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ids = [int(t) for t in prompt.split(",")]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                           max_retries=0, timeout=60)
    extra = {"ignore_eos": True, "return_token_ids": True}
    whole = client.completions.create(model=model, prompt=ids, max_tokens=max_tokens,
                                      temperature=0, logprobs=2, frequency_penalty=0.5,
                                      extra_body=extra)
    choice = whole.choices[0]
    out = {
        "models": [m.id for m in client.models.list()],
        "tokens": choice.model_extra["token_ids"],
        "text": choice.text,
        "finish_reason": choice.finish_reason,
        "logprobs": choice.logprobs.token_logprobs,
        "top_logprobs": choice.logprobs.top_logprobs,
        "usage": whole.usage.total_tokens,
    }
    stream_tokens, stream_text, usage = [], "", None
    for chunk in client.completions.create(model=model, prompt=ids, max_tokens=max_tokens,
                                           temperature=0, frequency_penalty=0.5,
                                           stream=True, extra_body=extra,
                                           stream_options={"include_usage": True}):
        for c in chunk.choices:
            stream_tokens += c.model_extra["token_ids"]
            stream_text += c.text
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
    out.update(stream_tokens=stream_tokens, stream_text=stream_text, stream_usage=usage)
    scored = client.completions.create(model=model, prompt=ids, max_tokens=0, echo=True,
                                       logprobs=1)
    out["echo_logprobs"] = scored.choices[0].logprobs.token_logprobs
    batch = client.completions.create(model=model, prompt=[ids, ids[:2]], n=2,
                                      max_tokens=max_tokens, temperature=0, extra_body=extra)
    out["batch"] = [[c.index, c.model_extra["token_ids"]] for c in batch.choices]
    try:
        client.completions.create(model=model, prompt=ids, max_tokens=4, temperature=-1)
        out["error"] = None
    except openai.BadRequestError as e:
        out["error"] = {"status": e.status_code, "message": e.message}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

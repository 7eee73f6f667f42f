#!/usr/bin/env python3
"""Calls llmint8's /v1/chat/completions with the official OpenAI Python SDK.

Usage: openai_chat_client.py PORT MODEL_ID MAX_TOKENS
Prints one JSON object: the content, finish reason, token logprobs (with two alternatives
each) and usage of a non-streamed greedy reply to a system + user conversation; the content,
role and finish reason of the same reply streamed; and the error a request with tools raised.
Run by tests/e2e/text_e2e_test.cc with the interpreter of a venv that has `openai` installed
(scripts/test.sh makes it).
"""
import json
import sys

import openai


def main() -> None:
    port, model, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                           max_retries=0, timeout=60)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hello world"}]
    extra = {"ignore_eos": True}
    whole = client.chat.completions.create(model=model, messages=messages,
                                           max_completion_tokens=max_tokens, temperature=0,
                                           logprobs=True, top_logprobs=2, extra_body=extra)
    choice = whole.choices[0]
    out = {
        "role": choice.message.role,
        "content": choice.message.content,
        "finish_reason": choice.finish_reason,
        "logprobs": [t.logprob for t in choice.logprobs.content],
        "top_logprobs": [[c.logprob for c in t.top_logprobs] for t in choice.logprobs.content],
        "usage": whole.usage.completion_tokens,
    }
    roles, content, finish = [], "", None
    for chunk in client.chat.completions.create(model=model, messages=messages,
                                                max_completion_tokens=max_tokens,
                                                temperature=0, stream=True, extra_body=extra):
        delta = chunk.choices[0].delta
        if delta.role is not None:
            roles.append(delta.role)
        content += delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    out.update(stream_roles=roles, stream_content=content, stream_finish_reason=finish)
    try:
        client.chat.completions.create(
            model=model, messages=messages,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    except openai.BadRequestError as e:
        out["error"] = {"status": e.status_code, "message": e.message}
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""An unmodified official SDK call through the gateway, for Tessera's integration tests.

Usage: sdk_client.py CALL BASE_URL MODEL
CALL is one of
    openai-chat       openai: chat.completions.create
    openai-stream     openai: chat.completions.create(stream=True)
    openai-embed      openai: embeddings.create
    anthropic-message anthropic: messages.create
Prints one JSON object: {"text": ...} (the answer's text, or the embedding length), and for
openai-stream {"chunks": [...], "received_at": [time.time() per chunk]}. The SDKs get a
client key of their own ("sk-client-..."); the gateway must never forward it.
SDK retries are off: failover is the gateway's job, and a test must see its answer.
"""

import json
import sys
import time


def main():
    call, base_url, model = sys.argv[1:4]
    out = {}
    if call.startswith("openai"):
        import openai

        client = openai.OpenAI(base_url=base_url, api_key="sk-client-openai",
                               max_retries=0, timeout=20)
        messages = [{"role": "user", "content": "hi"}]
        if call == "openai-chat":
            r = client.chat.completions.create(model=model, messages=messages)
            out["text"] = r.choices[0].message.content
        elif call == "openai-stream":
            chunks, received = [], []
            for event in client.chat.completions.create(model=model, messages=messages,
                                                        stream=True):
                received.append(time.time())
                chunks.append(event.choices[0].delta.content if event.choices else None)
            out.update(chunks=chunks, received_at=received)
        elif call == "openai-embed":
            r = client.embeddings.create(model=model, input="hi")
            out["text"] = len(r.data[0].embedding)
        else:
            sys.exit(f"unknown call {call}")
    elif call == "anthropic-message":
        import anthropic

        client = anthropic.Anthropic(base_url=base_url, api_key="sk-client-anthropic",
                                     max_retries=0, timeout=20)
        r = client.messages.create(model=model, max_tokens=16,
                                   messages=[{"role": "user", "content": "hi"}])
        out["text"] = r.content[0].text
    else:
        sys.exit(f"unknown call {call}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

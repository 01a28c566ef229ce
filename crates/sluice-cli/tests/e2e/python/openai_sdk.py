"""End-to-end checks of `sluice serve` with the official `openai` Python SDK.

Run by crates/sluice-cli/tests/e2e/python_sdk.rs, one interpreter per scenario group:

    python openai_sdk.py GROUP BASE_URL

Each check asserts what the caller saw; the Rust test asserts what each mock region saw.
On success the script prints one JSON object (the facts the Rust side checks) and exits 0;
any failed assertion or SDK error exits non-zero with a traceback.
"""

import json
import sys

import openai

GROUPS = {}


def group(fn):
    GROUPS[fn.__name__] = fn
    return fn


def client(base):
    # No SDK retries: a retry would hide a failed first call from the hit counts.
    return openai.OpenAI(base_url=base, api_key="caller-secret", max_retries=0, timeout=60)


def region_of(raw):
    region = raw.headers.get("x-sluice-region")
    assert region, f"no x-sluice-region header: {dict(raw.headers)}"
    return region


@group
def openai_surface(base):
    c = client(base)
    out = {}

    # Chat, plain.
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "plain"}]
    )
    chat = raw.parse()
    text = chat.choices[0].message.content
    assert text == "Hello from near: plain", text
    assert raw.headers.get("x-sluice-attempts") == "1", dict(raw.headers)
    assert raw.headers.get("x-sluice-request-id", "").startswith("sluice-"), dict(raw.headers)
    assert chat.usage.total_tokens == 7, chat.usage
    out["chat_region"] = region_of(raw)

    # Chat, streamed: every chunk has a choice (the usage chunk Sluice asked for is hidden).
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    out["stream_region"] = region_of(raw)
    pieces = []
    chunks = 0
    for chunk in raw.parse():
        chunks += 1
        assert chunk.choices, f"a chunk without choices reached a caller who did not ask for usage: {chunk}"
        assert chunk.usage is None, chunk
        pieces.append(chunk.choices[0].delta.content or "")
    assert "".join(pieces) == "Hello from near: streamed", pieces
    out["stream_chunks"] = chunks

    # Chat, streamed, asking for usage: the caller gets the usage chunk.
    stream = c.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "usage"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usage) == 1 and usage[0].total_tokens == 7, usage

    # Embeddings (the SDK asks for base64 and decodes it).
    raw = c.embeddings.with_raw_response.create(model="text-embedding-3-small", input=["one", "two"])
    emb = raw.parse()
    assert [d.embedding for d in emb.data] == [[0.5, -0.25, 1.0]] * 2, emb
    out["embeddings_region"] = region_of(raw)

    # Responses, and a follow-up with previous_response_id that prefers another region:
    # the state lives where it was created, so the follow-up goes there.
    raw = c.responses.with_raw_response.create(model="gpt-4o-mini", input="first")
    first = raw.parse()
    assert first.output_text == "near answered: first", first
    out["response_region"] = region_of(raw)
    raw = c.responses.with_raw_response.create(
        model="gpt-4o-mini",
        input="second",
        previous_response_id=first.id,
        extra_headers={"x-sluice-region": "far"},
    )
    second = raw.parse()
    assert second.output_text == f"near answered: second (after {first.id})", second
    out["follow_up_region"] = region_of(raw)
    got = c.responses.retrieve(second.id)
    assert got.id == second.id, got

    # A transcription upload (multipart), routed by its `model` form field.
    audio = b"RIFF" + bytes(range(256)) * 8
    raw = c.audio.transcriptions.with_raw_response.create(
        model="whisper-1", file=("hello.wav", audio, "audio/wav")
    )
    tr = raw.parse()
    assert tr.text == f"near heard {len(audio)} bytes", tr
    out["transcription_region"] = region_of(raw)
    out["audio_bytes"] = len(audio)
    return out


@group
def providers_and_models(base):
    c = client(base)
    out = {}

    # An Azure region (the mock checks api-key, api-version and the deployment path).
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "azure"}]
    )
    chat = raw.parse()
    assert chat.choices[0].message.content == "Hello from azure-eu: azure", chat
    out["azure_region"] = region_of(raw)
    out["azure_model_header"] = raw.headers.get("x-sluice-model")

    # The preferred region does not serve the model: it is skipped, not tried.
    raw = c.chat.completions.with_raw_response.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "skip"}],
        extra_headers={"x-sluice-region": "near"},
    )
    chat = raw.parse()
    assert chat.choices[0].message.content == "Hello from far: skip", chat
    out["skipped_to_region"] = region_of(raw)

    # A model every region of which fails: its fallback serves, and the answer says so.
    raw = c.chat.completions.with_raw_response.create(
        model="o-broken", messages=[{"role": "user", "content": "fallback"}]
    )
    chat = raw.parse()
    assert chat.choices[0].message.content == "Hello from near: fallback", chat
    assert chat.model == "gpt-4o-mini", chat.model
    out["fallback_model_header"] = raw.headers.get("x-sluice-model")
    out["fallback_region"] = region_of(raw)
    out["fallback_attempts"] = raw.headers.get("x-sluice-attempts")

    # A model no region serves: 404 model_not_found in OpenAI's shape, through the SDK's error.
    try:
        c.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("a model no region serves was answered")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found", e.body
    return out


def main():
    name, base = sys.argv[1], sys.argv[2]
    print(json.dumps(GROUPS[name](base)), flush=True)


if __name__ == "__main__":
    main()

"""The LLM stand-in against OpenAI's official Python SDK (`openai`).

`openai.OpenAI(base_url=<stand-in>/v1)` streams and fetches chat completions and must get the
scripted text back through the SDK's own parsing (including Groq's `/openai/v1` path and
streamed tool calls); with 429s injected on every request and `max_retries=0`, the SDK raises
`openai.RateLimitError`.
"""

import json

import openai
import pytest

KEY = "gsk-conformance"
MESSAGES = [
    {"role": "system", "content": "You are a concise phone agent."},
    {"role": "user", "content": "What are your opening hours?"},
]
REPLY = "We're open nine to five, Monday to Friday."


def client(url: str, path: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + path, api_key=KEY, max_retries=0, timeout=10)


def test_streamed_completion_is_the_scripted_reply(spawn_sim):
    url = spawn_sim("llm", "--api-key", KEY, "--reply", REPLY)
    stream = client(url).chat.completions.create(
        model="llama-3.1-8b-instant",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == REPLY
    assert finish == "stop"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_groq_path_and_whole_completion_echo(spawn_sim):
    url = spawn_sim("llm", "--api-key", KEY)
    completion = client(url, "/openai/v1").chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES)
    assert completion.choices[0].message.content == "You said: What are your opening hours."
    assert completion.choices[0].finish_reason == "stop"


def test_streamed_tool_call(spawn_sim):
    url = spawn_sim("llm", "--api-key", KEY, "--reply", 'tool:end_call {"reason":"caller said goodbye"}')
    stream = client(url).chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES, stream=True)
    name = ""
    arguments = ""
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            name += call.function.name or ""
            arguments += call.function.arguments or ""
        finish = choice.finish_reason or finish
    assert name == "end_call"
    assert json.loads(arguments) == {"reason": "caller said goodbye"}
    assert finish == "tool_calls"


def test_parallel_tool_calls_then_the_answer_to_their_results(spawn_sim):
    """Two calls stream under their own indexes and ids (the SDK's accumulation recipe);
    the request that carries their results gets the scripted answer; a `tool` message that
    answers no call is refused with OpenAI's 400."""
    line = 'tool:book_visit {"day":"friday"} && tool:email_offers {} => Booked, and the offers are on their way.'
    url = spawn_sim("llm", "--api-key", KEY, "--reply-by-turn", "--reply", line)
    stream = client(url).chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES, stream=True)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += delta.id or ""
            call["name"] += (delta.function.name if delta.function else None) or ""
            call["arguments"] += (delta.function.arguments if delta.function else None) or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["book_visit", "email_offers"]
    assert json.loads(calls[0]["arguments"]) == {"day": "friday"}
    assert calls[0]["id"] != calls[1]["id"]
    followup = MESSAGES + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls.values()
            ],
        },
        *({"role": "tool", "tool_call_id": c["id"], "content": '{"ok":true}'} for c in calls.values()),
    ]
    answer = client(url).chat.completions.create(model="llama-3.1-8b-instant", messages=followup)
    assert answer.choices[0].message.content == "Booked, and the offers are on their way."
    orphan = MESSAGES + [{"role": "tool", "tool_call_id": "call_nope", "content": "{}"}]
    with pytest.raises(openai.BadRequestError) as error:
        client(url).chat.completions.create(model="llama-3.1-8b-instant", messages=orphan)
    assert "role 'tool'" in str(error.value)


def test_rate_limit_raises_rate_limit_error(spawn_sim):
    url = spawn_sim("llm", "--api-key", KEY, "--rate-limit-share", "1.0")
    with pytest.raises(openai.RateLimitError) as error:
        client(url).chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES, stream=True)
    assert error.value.status_code == 429
    assert error.value.response.headers["retry-after"] == "2"
    assert error.value.body["code"] == "rate_limit_exceeded"


def test_wrong_key_raises_authentication_error(spawn_sim):
    url = spawn_sim("llm", "--api-key", KEY)
    wrong = openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="llama-3.1-8b-instant", messages=MESSAGES)


def test_speech_face_pcm(spawn_sim):
    """The TTS stand-in's OpenAI `/v1/audio/speech` face, through the SDK: `pcm` is headerless
    24 kHz s16le (an even number of bytes, more for more text); mp3 is refused as a 400."""
    url = spawn_sim("tts", "--api-key", KEY, "--deterministic")
    speech = client(url).audio.speech

    def say(text: str, response_format: str = "pcm") -> bytes:
        return speech.create(model="gpt-4o-mini-tts", voice="alloy", input=text, response_format=response_format).read()

    short, long = say("Thanks for calling."), say("Thanks for calling. How can I help you today?")
    assert len(short) % 2 == 0 and 0 < len(short) < len(long)
    with pytest.raises(openai.BadRequestError):
        say("Thanks.", "mp3")

"""The Deepgram live-STT stand-in against Deepgram's official Python SDK (deepgram-sdk v7).

The SDK's sync live client is pointed at the stand-in through `DeepgramClientEnvironment`
(its `production` URL is the WebSocket base), streams generated audio (tone bursts, and
espeak-ng speech when installed) with silences between utterances, and must receive the SDK's
own typed `Results` (interim and final, with `speech_final`), then `Metadata` on CloseStream.
"""

import math
import shutil
import struct
import subprocess

import pytest
import websockets.exceptions
from deepgram import DeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment

KEY = "dg-conformance-key"
SCRIPT = ["Hello there, I would like to book a table.", "For two people at eight."]


def client_for(url: str, key: str = KEY) -> DeepgramClient:
    ws = url.replace("http://", "ws://")
    env = DeepgramClientEnvironment(base=url, production=ws, agent=ws, agent_rest=url)
    return DeepgramClient(api_key=key, environment=env)


def tone(ms: int, hz: float, rate: int = 8000, amplitude: int = 8000) -> bytes:
    n = rate * ms // 1000
    return struct.pack(f"<{n}h", *(int(amplitude * math.sin(2 * math.pi * hz * i / rate)) for i in range(n)))


def silence(ms: int, rate: int = 8000) -> bytes:
    return b"\x00\x00" * (rate * ms // 1000)


def ulaw(pcm: bytes) -> bytes:
    """Classic G.711 µ-law encoder (PROTOCOLS §8), for 16-bit little-endian PCM."""
    out = bytearray()
    for (sample,) in struct.iter_unpack("<h", pcm):
        sign = 0x80 if sample < 0 else 0
        magnitude = min(abs(sample), 32635) + 0x84
        exponent = 7
        while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
            exponent -= 1
        mantissa = (magnitude >> (exponent + 3)) & 0x0F
        out.append(~(sign | (exponent << 4) | mantissa) & 0xFF)
    return bytes(out)


def frames(audio: bytes, size: int):
    for start in range(0, len(audio), size):
        yield audio[start : start + size]


def collect_until_speech_finals(socket, count: int):
    """Receives SDK-typed messages until `count` finals with speech_final arrive."""
    messages = []
    finals = 0
    while finals < count:
        message = socket.recv()
        messages.append(message)
        if getattr(message, "type", None) == "Results" and message.speech_final:
            finals += 1
    return messages


def close_and_expect_metadata(socket):
    socket.send_close_stream()
    while True:
        message = socket.recv()
        if getattr(message, "type", None) == "Metadata":
            return message


def test_tone_bursts_mulaw_give_interim_and_final_results(spawn_sim):
    url = spawn_sim("deepgram", "--api-key", KEY, "--script", SCRIPT[0], "--script", SCRIPT[1])
    audio = silence(300) + tone(2200, 300.0) + silence(800) + tone(1200, 250.0) + silence(1200)
    with client_for(url).listen.v1.connect(
        model="nova-3",
        encoding="mulaw",
        sample_rate="8000",
        channels="1",
        interim_results="true",
        endpointing="300",
        vad_events="true",
        utterance_end_ms="1000",
        punctuate="true",
    ) as socket:
        for chunk in frames(ulaw(audio), 160):
            socket.send_media(chunk)
        messages = collect_until_speech_finals(socket, 2)
        results = [m for m in messages if m.type == "Results"]
        interims = [r for r in results if not r.is_final]
        finals = [r for r in results if r.is_final]
        assert interims, "interim results arrive during speech"
        assert [f.channel.alternatives[0].transcript for f in finals] == SCRIPT
        assert all(f.speech_final for f in finals)
        assert finals[0].channel.alternatives[0].words[0].punctuated_word == "Hello"
        assert any(m.type == "SpeechStarted" for m in messages)
        metadata = close_and_expect_metadata(socket)
        assert metadata.duration == pytest.approx(len(audio) / 16000, abs=0.02)
        assert metadata.request_id == finals[0].metadata.request_id


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_espeak_speech_linear16_gives_final_results(spawn_sim):
    url = spawn_sim("deepgram", "--api-key", KEY, "--script", SCRIPT[0])
    wav_bytes = subprocess.run(
        ["espeak-ng", "--stdout", "-v", "en-us", SCRIPT[0]], check=True, capture_output=True
    ).stdout
    # espeak-ng's streaming header declares an unknown length; take the samples that are there
    # and send them as linear16 at espeak-ng's own rate (22 050 Hz).
    rate = struct.unpack("<I", wav_bytes[24:28])[0]
    audio = silence(300, rate) + wav_bytes[44:] + silence(1500, rate)
    with client_for(url).listen.v1.connect(
        model="nova-2-phonecall",
        encoding="linear16",
        sample_rate=str(rate),
        interim_results="true",
        endpointing="500",
        smart_format="true",
    ) as socket:
        for chunk in frames(audio, rate // 50 * 2):
            socket.send_media(chunk)
        messages = collect_until_speech_finals(socket, 1)
        finals = [m for m in messages if m.type == "Results" and m.is_final and m.channel.alternatives[0].transcript]
        assert finals[-1].channel.alternatives[0].transcript == SCRIPT[0]
        assert finals[-1].metadata.model_info.arch == "nova-2"
        close_and_expect_metadata(socket)


def test_wrong_key_is_refused_401(spawn_sim):
    """The handshake is refused with 401. (SDK 7.16's sync client only maps the legacy
    websockets exception to ApiError, so the newer InvalidStatus surfaces as is.)"""
    url = spawn_sim("deepgram", "--api-key", KEY)
    with pytest.raises((ApiError, websockets.exceptions.InvalidStatus)) as error:
        with client_for(url, key="wrong").listen.v1.connect(model="nova-3", encoding="mulaw", sample_rate="8000"):
            pass
    status = getattr(error.value, "status_code", None) or error.value.response.status_code
    assert status == 401


def test_speak_face_streams_raw_mulaw(spawn_sim):
    """The TTS stand-in's Deepgram `/v1/speak` face, through the SDK's speak client: raw µ-law
    at 8 kHz whose length grows with the text; a wrong key is an ApiError 401."""
    url = spawn_sim("tts", "--api-key", KEY, "--deterministic")
    speak = client_for(url).speak.v1.audio

    def say(text: str) -> bytes:
        return b"".join(speak.generate(text=text, model="aura-2-thalia-en", encoding="mulaw", sample_rate=8000, container="none"))

    short, long = say("Hello."), say("Hello. Your table for two is booked at eight tonight.")
    assert 0 < len(short) < len(long)
    assert not short.startswith(b"RIFF")
    with pytest.raises(ApiError) as error:
        b"".join(client_for(url, key="wrong").speak.v1.audio.generate(text="Hi.", encoding="mulaw"))
    assert error.value.status_code == 401

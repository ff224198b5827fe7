"""Unit tests: framing, config decoding, error mapping, protocol declarations."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from pirag.client import errors
from pirag.client.framing import FrameTooLargeError, frame, read_frame
from pirag.client.protocol import OPS, RawReply, request_union
from pirag.daemon.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_frame_round_trip_and_clean_eof() -> None:
    async def main() -> None:
        reader = _reader(frame(b"abc") + frame(b""))
        assert await read_frame(reader, 10) == b"abc"
        assert await read_frame(reader, 10) == b""
        assert await read_frame(reader, 10) is None

    asyncio.run(main())


def test_frame_too_large_is_refused_before_the_body() -> None:
    async def main() -> None:
        reader = _reader(frame(b"x" * 100))
        with pytest.raises(FrameTooLargeError) as caught:
            await read_frame(reader, 99)
        assert caught.value.length == 100
        assert reader._buffer == bytearray(b"x" * 100)  # the body was not consumed

    asyncio.run(main())


def test_eof_inside_a_frame_is_an_error() -> None:
    async def main() -> None:
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(_reader(frame(b"abcdef")[:6]), 100)

    asyncio.run(main())


def test_default_config_file_matches_the_built_in_defaults() -> None:
    assert load_config(REPO / "configs" / "pirag.toml") == Config()


def test_every_config_key_is_documented_in_the_default_file() -> None:
    text = (REPO / "configs" / "pirag.toml").read_text()

    def check(table: str, values: dict) -> None:
        parts = re.split(rf"^\[{re.escape(table)}\]$", text, flags=re.M)
        assert len(parts) == 2, f"[{table}] missing from configs/pirag.toml"
        body = parts[1].split("\n[", 1)[0]
        for key, value in values.items():
            if isinstance(value, dict) and value:  # a nested table: [section.key]
                check(f"{table}.{key}", value)
            else:
                assert re.search(rf"^{key} = ", body, re.M), f"{table}.{key} missing from configs/pirag.toml"

    for section, values in msgspec.to_builtins(Config()).items():
        if isinstance(values, dict):
            check(section, values)
        else:
            assert re.search(rf"^{section} = ", text, re.M)


@pytest.mark.parametrize("content, expected", [
    ("[server]\nmax_conections = 3\n", "unknown key 'server.max_conections'"),
    ("[server]\nmax_connections = 0\n", "bad value for 'server.max_connections'"),
    ("[server]\nmax_connections = 'many'\n", "bad value for 'server.max_connections'"),
    ("bogus = 1\n", "unknown key 'bogus'"),
    ("[server\n", "not valid TOML"),
])
def test_bad_config_names_the_file_and_the_key(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_error_codes_map_to_exception_classes_and_unknown_codes_fall_back() -> None:
    assert isinstance(errors.error_from_wire("not_found", "x"), errors.NotFound)
    assert isinstance(errors.error_from_wire("frame_too_large", "x"), errors.ProtocolError)
    future = errors.error_from_wire("quota_exceeded", "x")
    assert type(future) is errors.PiragError and future.code == "quota_exceeded"


def test_every_op_has_a_summary_and_a_result_type() -> None:
    assert {"hello", "ping", "status"} <= set(OPS)
    for spec in OPS.values():
        assert spec.summary
        assert issubclass(spec.result, msgspec.Struct)
    msgspec.msgpack.Decoder(request_union())  # the union builds


def test_raw_reply_keeps_the_result_undecoded() -> None:
    body = msgspec.msgpack.encode({"id": 3, "result": {"pong": True}})
    reply = msgspec.msgpack.decode(body, type=RawReply)
    assert reply.id == 3 and reply.error is None and bytes(reply.result)


def test_importing_the_client_imports_nothing_heavy() -> None:
    code = ("import sys, pirag.client, pirag.client.protocol; "
            "heavy = [m for m in ('chromadb', 'llama_cpp', 'numpy', 'uvloop', 'pirag.daemon') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

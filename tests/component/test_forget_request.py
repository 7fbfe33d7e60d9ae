"""A forget request in the Faust agent (test context, no broker): the runner's state keys
leave the table, their in-memory state goes, and what comes after is dead-lettered."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

from base.forgotten import CONTROL_HEADER, FORGET_REQUEST, forget_request_value
from stream.state_codec import history_key, seen_key
from tests.component.test_stream_agent import SCENARIOS, _built, events


def test_a_forget_request_deletes_the_runners_keys_and_refuses_what_follows(
        tmp_path: Path) -> None:
    built, rec = _built(tmp_path)
    gone, kept = SCENARIOS[0], next(s for s in SCENARIOS[1:] if s.runner != SCENARIOS[0].runner)
    gone_events, kept_events = events(gone.messages), events(kept.messages)
    later = events(gone.messages[-1:])

    async def feed() -> None:
        async with built.agent.test_context() as agent:
            for key, value in gone_events + kept_events:
                await agent.put(value, key=key)
            await agent.put(forget_request_value(gone.runner), key=gone.runner.encode(),
                            headers={CONTROL_HEADER: FORGET_REQUEST})
            before = len(rec["metrics"].sent)
            for key, value in later:
                await agent.put(value, key=key)
            assert len(rec["metrics"].sent) == before  # nothing of theirs goes on

    key = gone.runner.encode()
    asyncio.run(feed())
    assert [k for k in (key, seen_key(key), history_key(key)) if k in built.table] == []
    assert kept.runner.encode() in built.table
    assert gone.runner in built.forgotten
    letters = [json.loads(v) for _, v in rec["deadletters"].sent]
    assert [letter["reason"] for letter in letters] == ["runner forgotten"] * len(later)
    assert all(letter["runner"] == gone.runner and letter["stage"] == "stream"
               for letter in letters)
    assert base64.b64decode(letters[0]["raw_b64"]) == later[0][1]
    assert built.stats["forgotten_runners"] == 1
    assert built.stats["forgotten_events"] == len(later)

"""The files source with real file system events (inotify through watchdog) and a real Redis:
many files at once, slow writers, atomic renames, writers that keep files open, restarts with
files dropped while down, two runners on one folder, and an inotify overflow."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from stoker.platform.context import PlatformContext
from stoker.platform.outcomes import encode_outcome
from stoker.triggers.files.config import FilesConfig, validate
from stoker.triggers.files.records import DONE, SENT
from stoker.triggers.files.source import FilesSource
from stoker.triggers.files.watcher import CHANGED, WHOLE, FileEvent
from tests.integration.triggers.conftest import TriggerEnv, deploy, published, until, write_function


def files_config(env: TriggerEnv, **table: Any) -> tuple[Path, FilesConfig]:
    inbox = env.tmp / "inbox"
    inbox.mkdir(exist_ok=True)
    write_function(env.tmp / "fn", "ingest", "")
    normalised = validate({"path": str(inbox), "pattern": "*.csv", "settle": 0.5, **table}, None)
    return inbox, FilesConfig.from_trigger("ingest", normalised)


async def keys_fired(ctx: PlatformContext) -> list[str]:
    return [p["Records"][0]["s3"]["object"]["key"] for _, p in await published(ctx)]


class Running:
    """A source running in the background of the test's loop."""

    def __init__(self, ctx: PlatformContext, config: FilesConfig, consumer: str = "test") -> None:
        self.source = FilesSource(ctx, config, consumer=consumer)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FilesSource:
        self.task = asyncio.create_task(self.source.run(self.stop))
        await until(self._watching, 10, "the watcher to start")
        return self.source

    async def _watching(self) -> bool:
        return self.source.watcher.mode != "stopped"

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


def atomic_write(folder: Path, name: str, text: str) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_text(text)
    os.rename(tmp, folder / name)


def test_many_files_at_once_each_fire_once_with_an_s3_event(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env)

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config):
                for i in range(300):
                    atomic_write(inbox, f"f{i}.csv", f"row,{i}\n")
                for i in range(20):
                    (inbox / f"skip{i}.txt").write_text("not a csv")
                    (inbox / f"part{i}.csv.part").write_text("still arriving")
                await until(lambda: _count(ctx, 300), 60, "300 files to fire")
                await asyncio.sleep(1.0)  # anything extra would show now
            fired = await keys_fired(ctx)
            assert Counter(fired) == Counter(f"f{i}.csv" for i in range(300))
            envelope, event = next((e, p) for e, p in await published(ctx)
                                   if p["Records"][0]["s3"]["object"]["key"] == "f7.csv")
            record = event["Records"][0]
            assert record["eventSource"] == "stoker:files" and record["eventName"] == "ObjectCreated:Put"
            assert record["s3"]["bucket"]["name"] == "inbox"
            assert record["s3"]["object"]["size"] == len("row,7\n")
            assert record["s3"]["object"]["eTag"] == hashlib.md5(b"row,7\n").hexdigest()
            assert record["file"]["path"] == str(inbox / "f7.csv")
            assert envelope.trigger == "files" and envelope.invocation_type == "async"
        finally:
            await ctx.close()

    asyncio.run(main())


async def _count(ctx: PlatformContext, n: int) -> bool:
    return len(await published(ctx)) >= n


def test_slow_writers_fire_once_when_whole(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env, settle=1.0)

    def slow_writer(name: str, close: bool) -> None:
        f = (inbox / name).open("w")
        for _ in range(8):
            f.write("x" * 1000)
            f.flush()
            time.sleep(0.2)
        if close:
            f.close()
        else:  # keeps it open: only the settle time says it is whole
            time.sleep(3)
            f.close()

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config):
                threads = [threading.Thread(target=slow_writer, args=(f"slow{i}.csv", i != 2)) for i in range(3)]
                for t in threads:
                    t.start()
                await until(lambda: _count(ctx, 3), 30, "three slow files to fire")
                for t in threads:
                    await asyncio.to_thread(t.join)
                await asyncio.sleep(1.5)
            sizes = {p["Records"][0]["s3"]["object"]["key"]: p["Records"][0]["s3"]["object"]["size"]
                     for _, p in await published(ctx)}
            assert sizes == {"slow0.csv": 8000, "slow1.csv": 8000, "slow2.csv": 8000}
            assert len(await published(ctx)) == 3  # the late close of slow2 changed nothing: same content
        finally:
            await ctx.close()

    asyncio.run(main())


def test_files_renamed_in_from_outside_fire_at_once(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env, settle=30.0)  # a long settle: only the rename can fire them
    staging = trigger_env.tmp / "staging"
    staging.mkdir()

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config):
                for i in range(10):
                    (staging / f"r{i}.csv").write_text("r" * i)
                    os.rename(staging / f"r{i}.csv", inbox / f"r{i}.csv")
                (inbox / "closed.csv").write_text("written and closed")
                await until(lambda: _count(ctx, 11), 15, "renamed and closed files to fire")
            assert sorted(await keys_fired(ctx)) == sorted([f"r{i}.csv" for i in range(10)] + ["closed.csv"])
        finally:
            await ctx.close()

    asyncio.run(main())


async def _complete(ctx: PlatformContext, status: str = "succeeded") -> int:
    """Report a final outcome for every published event, as the platform does after retries."""
    done = 0
    for envelope, _ in await published(ctx):
        if envelope.meta and envelope.meta.get("notify"):
            outcome = encode_outcome(envelope, status, None if status == "succeeded" else "Error", b"{}")
            await ctx.redis.xadd(envelope.meta["notify"], {"o": outcome})
            done += 1
    await ctx.redis.delete(ctx.keys.intake_async)
    return done


def test_a_restart_fires_files_dropped_while_down_and_nothing_twice(trigger_env: TriggerEnv) -> None:
    done_dir = trigger_env.tmp / "done"
    inbox, config = files_config(trigger_env, on_success=f"move:{done_dir}")

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config):
                for i in range(20):
                    atomic_write(inbox, f"a{i}.csv", f"a{i}")
                await until(lambda: _count(ctx, 20), 30, "the first files to fire")
                first = await keys_fired(ctx)
                # ten finish while it runs; ten are still in flight when it stops
                for envelope, _payload in (await published(ctx))[:10]:
                    assert envelope.meta is not None
                    await ctx.redis.xadd(envelope.meta["notify"],
                                         {"o": encode_outcome(envelope, "succeeded", None, b"{}")})
                in_flight = [e for e, _ in (await published(ctx))[10:]]
                await until(lambda: _moved(done_dir, 10), 15, "ten files to be moved")
            # down: more files arrive, in-flight events finish (their outcomes wait in the stream)
            for i in range(15):
                (inbox / f"b{i}.csv").write_text(f"b{i}")
            for envelope in in_flight:
                assert envelope.meta is not None
                await ctx.redis.xadd(envelope.meta["notify"], {"o": encode_outcome(envelope, "succeeded", None, b"{}")})
            async with Running(ctx, config) as restarted:
                await until(lambda: _count(ctx, 35), 30, "files dropped while down to fire")
                await until(lambda: _moved(done_dir, 20), 15, "in-flight files to be moved after the restart")
                await asyncio.sleep(1.5)
                await restarted.scan()  # a rescan finds nothing new
                await asyncio.sleep(1.0)
            fired = await keys_fired(ctx)
            assert Counter(fired) == Counter(first + [f"b{i}.csv" for i in range(15)])
            assert sorted(os.listdir(done_dir)) == sorted(f"a{i}.csv" for i in range(20))
            assert sorted(os.listdir(inbox)) == sorted(f"b{i}.csv" for i in range(15))  # in flight now
        finally:
            await ctx.close()

    asyncio.run(main())


async def _moved(folder: Path, n: int) -> bool:
    return folder.exists() and len(os.listdir(folder)) >= n


def test_outcomes_decide_keep_delete_or_move_and_changed_content_fires_again(trigger_env: TriggerEnv) -> None:
    failed_dir = trigger_env.tmp / "failed"
    inbox, config = files_config(trigger_env, on_success="keep", on_failure=f"move:{failed_dir}")

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config) as source:
                (inbox / "good.csv").write_text("v1")
                (inbox / "bad.csv").write_text("broken")
                await until(lambda: _count(ctx, 2), 15, "two files to fire")
                for envelope, payload in await published(ctx):
                    key = payload["Records"][0]["s3"]["object"]["key"]
                    status = "succeeded" if key == "good.csv" else "dead_lettered"
                    assert envelope.meta is not None
                    await ctx.redis.xadd(envelope.meta["notify"], {"o": encode_outcome(envelope, status, None, b"{}")})
                await until(lambda: _moved(failed_dir, 1), 15, "the failed file to be moved aside")
                await until(lambda: _state(source, "good.csv", DONE), 10, "the kept file to be done")
                await ctx.redis.delete(ctx.keys.intake_async)
                # touched with the same content: not new; new content: fires again
                os.utime(inbox / "good.csv")
                await asyncio.sleep(1.5)
                assert await published(ctx) == []
                (inbox / "good.csv").write_text("v2")
                await until(lambda: _count(ctx, 1), 15, "the changed file to fire again")
                # a file dropped again under a name that was moved away fires again too
                (inbox / "bad.csv").write_text("broken")
                await until(lambda: _count(ctx, 2), 15, "the re-dropped file to fire")
            assert sorted(await keys_fired(ctx)) == ["bad.csv", "good.csv"]
            assert os.listdir(failed_dir) == ["bad.csv"]
        finally:
            await ctx.close()

    asyncio.run(main())


async def _state(source: FilesSource, rel: str, state: str) -> bool:
    _, record = await source.records.get(rel)
    return record is not None and record.state == state


def test_two_runners_on_one_folder_fire_each_file_once(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env)

    async def main() -> None:
        ctx_a, ctx_b = trigger_env.context(), trigger_env.context()
        try:
            await deploy(ctx_a, trigger_env.tmp / "fn")
            async with Running(ctx_a, config, "a"), Running(ctx_b, config, "b"):
                for i in range(100):
                    atomic_write(inbox, f"s{i}.csv", str(i))
                await until(lambda: _count(ctx_a, 100), 30, "100 files to fire")
                await asyncio.sleep(1.0)
            assert Counter(await keys_fired(ctx_a)) == Counter(f"s{i}.csv" for i in range(100))
        finally:
            await ctx_a.close()
            await ctx_b.close()

    asyncio.run(main())


def test_an_inotify_overflow_rescans_the_folder(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env, settle=0.2)

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config) as source:
                # the kernel drops events when its queue overflows: drop them here too
                deliver = source.on_event
                source.watcher.deliver = lambda e: None if e.kind in (CHANGED, WHOLE) else deliver(e)
                for i in range(25):
                    atomic_write(inbox, f"o{i}.csv", str(i))
                await asyncio.sleep(1.0)
                assert await published(ctx) == []  # nothing seen
                await asyncio.to_thread(source.watcher.simulate_overflow)  # the kernel's IN_Q_OVERFLOW
                await until(lambda: _count(ctx, 25), 15, "the rescan to fire the lost files")
            assert Counter(await keys_fired(ctx)) == Counter(f"o{i}.csv" for i in range(25))
        finally:
            await ctx.close()

    asyncio.run(main())


def test_records_survive_in_redis_and_describe_each_file(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env)

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config) as source:
                atomic_write(inbox, "r.csv", "content")
                await until(lambda: _count(ctx, 1), 15, "the file to fire")
                raw: Any = await ctx.redis.hget(source.records.key, "r.csv")
            record = orjson.loads(raw)
            st = os.stat(inbox / "r.csv")
            assert record["state"] == SENT and record["size"] == st.st_size and record["mtime_ns"] == st.st_mtime_ns
            assert record["sha256"] == hashlib.sha256(b"content").hexdigest()
            assert record["id"] == (await published(ctx))[0][0].id
            assert source.records.key == f"{ctx.keys.prefix}:files:ingest:{config.folder_id}"
        finally:
            await ctx.close()

    asyncio.run(main())


def test_deliver_ignores_other_folders(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env)

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            source = FilesSource(ctx, config)
            source.on_event(FileEvent(WHOLE, str(trigger_env.tmp / "elsewhere.csv")))
            source.on_event(FileEvent(CHANGED, str(inbox / "x.txt")))
            assert source.arrivals.pending == {} and not source._tasks
        finally:
            await ctx.close()

    asyncio.run(main())


def test_recursive_folders_and_a_move_target_inside_the_watched_folder(trigger_env: TriggerEnv) -> None:
    inbox = trigger_env.tmp / "inbox"
    inbox, config = files_config(trigger_env, recursive=True, on_success=f"move:{inbox / 'done'}")
    staging = trigger_env.tmp / "staging"

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config):
                (inbox / "sub").mkdir()
                atomic_write(inbox / "sub", "a.csv", "a")
                (inbox / "sub2" / "deeper").mkdir(parents=True)
                (inbox / "sub2" / "deeper" / "b.csv").write_text("b")
                (inbox / ".hidden").mkdir()
                (inbox / ".hidden" / "c.csv").write_text("never")
                (staging / "batch").mkdir(parents=True)  # a whole folder moved in at once
                for i in range(3):
                    (staging / "batch" / f"m{i}.csv").write_text(str(i))
                os.rename(staging / "batch", inbox / "batch")
                await until(lambda: _count(ctx, 5), 20, "five files in sub-folders to fire")
                await _complete(ctx)
                await until(lambda: _moved(inbox / "done" / "batch", 3), 15, "the batch to be moved")
                await asyncio.sleep(1.5)  # files landing in done/ must not fire
                assert await published(ctx) == []
            assert (inbox / "done" / "sub" / "a.csv").read_text() == "a"
            assert (inbox / "done" / "sub2" / "deeper" / "b.csv").exists()
            assert (inbox / ".hidden" / "c.csv").exists()
        finally:
            await ctx.close()

    asyncio.run(main())


def test_polling_for_network_file_systems(trigger_env: TriggerEnv) -> None:
    inbox, config = files_config(trigger_env, poll=True, settle=0.5)

    async def main() -> None:
        ctx = trigger_env.context()
        try:
            await deploy(ctx, trigger_env.tmp / "fn")
            async with Running(ctx, config) as source:
                assert source.watcher.mode == "PollingObserver"
                for i in range(5):
                    atomic_write(inbox, f"p{i}.csv", str(i))
                (inbox / "plain.csv").write_text("written in place")
                await until(lambda: _count(ctx, 6), 20, "polled files to fire")
                await asyncio.sleep(1.5)
            assert sorted(await keys_fired(ctx)) == sorted([f"p{i}.csv" for i in range(5)] + ["plain.csv"])
        finally:
            await ctx.close()

    asyncio.run(main())

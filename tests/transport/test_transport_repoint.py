"""Re-pointing the writer consumer (courier repair redeliver) against a real nats-server."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.js.api import DeliverPolicy

from courier.errors import ProvisioningError, RepairRefusedError, UnknownEventTypeError
from courier.transport import (
    WRITER_CONSUMER,
    provision_type,
    repoint_writer,
    stream_name,
    verify_type,
)


def _plays(n: int) -> list[dict[str, object]]:
    return [{"track_id": f"t{i}", "ms_played": i} for i in range(n)]


async def _publish(pipeline, n: int, prefix: str) -> list[int]:
    return [await pipeline.publish("PlaySong", _plays(1), [f"{prefix}{i}"]) for i in range(n)]


async def _ack_everything(pipeline) -> None:
    consumer = await pipeline.transport.pull_consumer("PlaySong")
    got = await consumer.fetch(100, 1.0)
    await pipeline.transport.ack(got)
    await consumer.unsubscribe()


async def _writer_config(pipeline):
    info = await pipeline.transport.js.consumer_info(stream_name("PlaySong"), WRITER_CONSUMER)
    return info.config


async def test_a_redelivery_from_a_sequence_delivers_again_from_there_and_holds_the_watermark(
    pipeline,
):
    seqs = await _publish(pipeline, 5, "a")
    await _ack_everything(pipeline)
    assert (await pipeline.transport.progress("PlaySong")).oldest_unacked_at is None

    done = await repoint_writer(pipeline.transport, pipeline.settings, "PlaySong", from_seq=2)

    assert (done.from_seq, done.messages, done.previous_ack_floor_seq) == (2, 4, 5)
    progress = await pipeline.transport.progress("PlaySong")
    assert progress.ack_floor_seq == 1 and progress.num_pending == 4
    assert progress.oldest_unacked_at is not None  # the watermark moved back
    consumer = await pipeline.transport.pull_consumer("PlaySong")
    got = await consumer.fetch(100, 1.0)
    assert [d.seq for d in got] == seqs[1:]
    await consumer.unsubscribe()


async def test_start_up_checks_and_re_provisioning_keep_a_re_pointed_consumer(
    pipeline, make_settings
):
    await _publish(pipeline, 3, "a")
    await _ack_everything(pipeline)
    await repoint_writer(pipeline.transport, pipeline.settings, "PlaySong", from_seq=2)

    await verify_type(pipeline.transport, pipeline.settings, "PlaySong")  # not drift
    await provision_type(pipeline.transport, pipeline.settings, "PlaySong")  # unchanged
    changed = make_settings(writer={**pipeline.settings.writer.model_dump(), "ack_wait_secs": 9})
    await provision_type(pipeline.transport, changed, "PlaySong")  # an update keeps the start
    await verify_type(pipeline.transport, changed, "PlaySong")

    config = await _writer_config(pipeline)
    assert config.deliver_policy == DeliverPolicy.BY_START_SEQUENCE
    assert config.opt_start_seq == 2
    assert config.ack_wait == pytest.approx(9.0)
    assert (await pipeline.transport.progress("PlaySong")).ack_floor_seq == 1


async def test_a_start_the_stream_no_longer_holds_is_refused_and_changes_nothing(pipeline):
    await _publish(pipeline, 3, "a")
    await _ack_everything(pipeline)
    await pipeline.transport.js.delete_msg(stream_name("PlaySong"), 1)  # as if expired

    with pytest.raises(RepairRefusedError, match="first retained message is seq 2"):
        await repoint_writer(pipeline.transport, pipeline.settings, "PlaySong", from_seq=1)
    with pytest.raises(RepairRefusedError, match="no longer holds messages from"):
        await repoint_writer(
            pipeline.transport, pipeline.settings, "PlaySong", from_time=time.time() - 3600
        )

    config = await _writer_config(pipeline)
    assert config.deliver_policy == DeliverPolicy.ALL
    assert (await pipeline.transport.progress("PlaySong")).ack_floor_seq == 3


async def test_a_start_past_unacked_messages_is_refused_because_it_would_skip_them(pipeline):
    await _publish(pipeline, 3, "a")  # nothing acked yet
    with pytest.raises(RepairRefusedError, match=r"would skip seq 1\.\.2"):
        await repoint_writer(pipeline.transport, pipeline.settings, "PlaySong", from_seq=3)
    assert (await _writer_config(pipeline)).deliver_policy == DeliverPolicy.ALL


async def test_a_redelivery_from_a_time_starts_at_the_first_message_published_at_or_after_it(
    pipeline,
):
    await _publish(pipeline, 3, "old")
    await asyncio.sleep(0.2)
    cut = time.time()
    await asyncio.sleep(0.2)
    later = await _publish(pipeline, 2, "new")
    await _ack_everything(pipeline)

    done = await repoint_writer(pipeline.transport, pipeline.settings, "PlaySong", from_time=cut)

    assert done.from_seq == later[0] == 4
    assert (await pipeline.transport.progress("PlaySong")).ack_floor_seq == 3


async def test_an_unknown_type_or_a_drifted_consumer_is_refused(pipeline, make_settings):
    with pytest.raises(UnknownEventTypeError, match="Nope"):
        await repoint_writer(pipeline.transport, pipeline.settings, "Nope", from_seq=1)
    other = make_settings(writer={**pipeline.settings.writer.model_dump(), "ack_wait_secs": 9})
    with pytest.raises(ProvisioningError, match="ack_wait"):
        await repoint_writer(pipeline.transport, other, "PlaySong", from_seq=1)

"""The producer SDK: send events through a crash-safe disk spool.

```python
from courier.sdk import Producer

with Producer(spool_dir="/var/spool/myapp", gateway_url="http://gateway:8080") as p:
    p.send("PlaySong", {"track_id": "t1", "ms_played": 31500})
```
"""

from courier.sdk.delivery import (
    DeliveryPolicy,
    DeliveryStopped,
    EventRejection,
    GatewayClient,
    MemoryDeliverer,
)
from courier.sdk.metrics import ProducerCollector
from courier.sdk.producer import (
    AsyncProducer,
    Producer,
    ProducerSettings,
    ProducerStats,
    RejectedEvent,
)
from courier.sdk.rejected import RejectedLog
from courier.sdk.spool import Spool, SpoolFull

__all__ = [
    "AsyncProducer",
    "DeliveryPolicy",
    "DeliveryStopped",
    "EventRejection",
    "GatewayClient",
    "MemoryDeliverer",
    "Producer",
    "ProducerCollector",
    "ProducerSettings",
    "ProducerStats",
    "RejectedEvent",
    "RejectedLog",
    "Spool",
    "SpoolFull",
]

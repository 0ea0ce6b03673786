"""A batch run in a process of its own, for crash, ownership and campaign tests.

    python -m tests.batch_child '{"base_url": ..., "journal": ..., "ids": [...], ...}'

Prints one JSON line per result (``order_id``, ``outcome``) on stdout, so a test
that SIGKILLs it can still read what it reported before dying. Uses only the
public API, so the same file runs against older versions of the SDK.
"""

from __future__ import annotations

import asyncio
import json
import sys
from decimal import Decimal

import httpx

from alikassa_async import AliKassaClient, Certificate, PayoutRequest, RetryPolicy
from alikassa_async._batch import ReconcilePolicy


async def main(spec: dict) -> int:
    cert = Certificate.from_dir(spec["cert_dir"])
    items = [
        PayoutRequest(
            service="payment_card_rub",
            order_id=order_id,
            amount=Decimal(spec.get("amount", "10.00")),
            fields={"number": "4111111111111111"},
        )
        for order_id in spec["ids"]
    ]
    connections = spec.get("max_connections", 32)
    async with AliKassaClient(
        spec["account"],
        payout_cert=cert,
        base_url=spec["base_url"],
        timeout=httpx.Timeout(spec.get("timeout", 5.0), connect=2.0),
        max_connections=connections,
        max_keepalive_connections=connections,
        retry=RetryPolicy(
            backoff_base=0.02, backoff_max=0.2, total_timeout=spec.get("total_timeout", 30.0)
        ),
    ) as client:
        async for result in client.payouts_batch(
            items,
            concurrency=spec.get("concurrency", 16),
            rate=spec.get("rate"),
            journal=spec["journal"],
            reconcile=ReconcilePolicy(
                settle=spec["settle"],
                backoff_base=0.05,
                backoff_max=0.3,
                lookups=spec.get("lookups", 10),
                pause=0.1,
            ),
        ):
            print(
                json.dumps(
                    {
                        "order_id": result.order_id,
                        "outcome": result.outcome.value,
                        "error": type(result.error).__name__ if result.error else None,
                    }
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))

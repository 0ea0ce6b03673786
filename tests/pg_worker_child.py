"""``alikassa payouts ...`` in a process of its own, for the shared-batch campaign.

    python tests/pg_worker_child.py payouts work --dsn ... --batch ...

With ``ALIKASSA_TEST_BROKEN_TAKEOVER=1`` the worker runs a deliberately broken
copy of the takeover rule: it claims items whose lease is still running, as if
nobody had sent them (no lease check, no reconcile). The negative control uses
it to show that the campaign's checks can fail.
"""

from __future__ import annotations

import os
import sys
import time


def _broken_claims() -> None:
    from alikassa_async import pg_journal

    async def claim_items(self, batch, worker, limit, *, lease, max_rounds):  # type: ignore
        s = self.schema
        before = time.monotonic()
        async with self._connection() as conn:
            cur = await conn.execute(
                f"""WITH picked AS (
                    SELECT order_id FROM {s}.payouts
                    WHERE batch = %(batch)s AND state IN ('pending', 'intent')
                      AND (owner IS DISTINCT FROM %(worker)s)
                    ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
                UPDATE {s}.payouts p SET owner = %(worker)s,
                    token = nextval('{s}.claim_tokens'),
                    lease_until = now() + make_interval(secs => %(lease)s),
                    sends = p.sends + 1, state = 'intent', updated_at = now()
                FROM picked WHERE p.order_id = picked.order_id
                RETURNING p.order_id, p.token, p.seq, p.line, p.sealed, p.body_digest,
                    p.sends, p.sent, p.payout_id""",
                {"batch": batch, "worker": worker, "limit": limit, "lease": lease},
            )
            rows = await cur.fetchall()
        return [
            pg_journal.Claim(
                order_id=r[0],
                token=r[1],
                seq=r[2],
                line=r[3],
                sealed=r[4],
                body_digest=r[5],
                previous="pending",
                sends=r[6],
                sent=0,
                payout_id=r[8],
                sent_ago=None,
                lease_deadline=before + lease,
            )
            for r in rows
        ]

    pg_journal.PostgresJournal.claim_items = claim_items  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("ALIKASSA_TEST_BROKEN_TAKEOVER") == "1":
        _broken_claims()
    from alikassa_async.cli import main

    sys.exit(main(sys.argv[1:]))

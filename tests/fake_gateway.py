"""The API reference's example answer of each endpoint (§6), as parsed JSON.

What is left of the old MockTransport gateway: the client's tests now run on the
sandbox (tests/wire.py). Only tests/test_canaries.py still reads these bodies; move
them there (and delete this module) when that file is next edited.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULTS"]

DEFAULTS: dict[str, Any] = {
    "v1/payment": {"url": "https://pay-merchant.alikassa.com/u-1", "payment_status": "wait",
                   "id": 108465371, "uuid": "bd291fe1-0000-4000-8000-000000000001",
                   "success_redirect_url": None},
    "v1/payment/status": {"order_id": "A-1", "id": 108465371, "payment_status": "paid",
                          "amount": "300", "payment_amount": "350", "hold_at": None,
                          "account_payment_amount": "290", "commission_amount": "10",
                          "service_code": "payment_card_number_rub_hpp",
                          "account_old_balance": "93.84000000",
                          "account_new_balance": "383.84000000"},
    "v1/payment/history": {"data": [], "meta": {"current_page": 1, "last_page": 1}},
    "v1/payout": {"payment_status": "wait", "id": 100001524},
    "v1/payout/status": {"order_id": "P-1", "id": 100001524, "payment_status": "paid",
                         "amount": "3000.00", "payment_amount": "3000.00",
                         "is_partial_payment": False, "RRN": "11111111111",
                         "commission_amount": "10"},
    "v1/account/balance": {"currency": "RUB", "balance": "93.84000000", "hold": "0.00000000",
                           "rolling_reserve": "0.00000000", "pending_payouts": "1234.00000000"},
    "v1/account/info": {"is_allowed_payment": True, "is_allowed_payout": True,
                        "payments": [{"method": "payment_card", "currency": "RUB",
                                      "service_code": "payment_card_rub_hpp",
                                      "status": "active"}],
                        "payouts": [{"method": "payment_card", "currency": "RUB",
                                     "service_code": "payment_card_rub", "status": "active"}]},
}

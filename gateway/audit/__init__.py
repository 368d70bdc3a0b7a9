"""The tamper-evident evaluation log: appends, published heads and their verification (Art. 19)."""

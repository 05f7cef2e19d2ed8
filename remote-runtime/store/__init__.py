"""The store: schema, database, the ready queue's SQL, ids and wake-up notifications."""

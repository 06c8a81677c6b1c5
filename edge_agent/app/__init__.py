"""The use cases, one module per capability, that the command line, the web app and the
scheduler call: each opens what it needs, asks the core, and returns plain values.

    ingest       the agent's loop (run)          status       the store's counters
    deadletters  list, show, replay              people       erasure, subject access
    insights     hour cells, a day's release     retention    expiry
    models       list, pull, rollback, train     screens      pairing, what a screen shows
    sync         drain the outbox now            backup       backup, restore
    checkin      the site's health to central
    schedule     when each of them runs (apscheduler)
"""

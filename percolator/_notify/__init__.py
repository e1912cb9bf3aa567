"""Notifications for observers, where the data is: the log, its feed to workers, backfill.

    log          the bytes: log keys and entries, registrations (their one owner)
    resolved     the resolved timestamp: no log position at or below it is still to be
                 written
    assignment   live workers (leases) and which one owns which bucket of a column
    feed         a table's log handed to the owners of its buckets: pulls from cursors,
                 long polls woken by writes, deletes of handled entries
    backfill     entries for cells committed before their column was observed
    parking      entries whose observer keeps failing, set aside and replayed
    local        the verbs in-process (``LocalBackend.notifications``: embedded and node)
    api          the verbs' protocol and values
    wire, service, client    the verbs over gRPC (``percolator.v1.Notifications``)

The protocol steps write the entries (``percolator._steps.notify``); docs/observers.md
has the design and the argument that no committed write goes unseen.
"""

"""CDC mode on PostgreSQL: logical decoding through a ``pgoutput`` slot, read by peeking.

* :mod:`~services_sync.cdc.pgoutput` reads the protocol's messages and
  :mod:`~services_sync.cdc.decoder` streams them as row changes (pure);
* :mod:`~services_sync.cdc.changes`: which changes a window delivers, in which batches, keyed how
  (pure);
* :mod:`~services_sync.cdc.source`: the publication and slot primitives;
* :mod:`~services_sync.cdc.checks`, :mod:`~services_sync.cdc.capture`,
  :mod:`~services_sync.cdc.batches`: setup and slot health, capture into a window, batches and
  acknowledgment; :mod:`~services_sync.cdc.tasks` names what the DAG calls;
* :mod:`~services_sync.cdc.mode`: the mode as the shared delivery reaches it;
  :mod:`~services_sync.cdc.setup`: ``make cdc-setup``.
"""

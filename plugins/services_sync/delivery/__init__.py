"""Delivery: the ``HttpOperator`` lanes that POST the outbox, and ``record_delivery`` after them.

Capture-mode agnostic: a lane sends whatever batches the outbox holds for its DAG.
"""

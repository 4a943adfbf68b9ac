"""What every capture mode shares: settings, contract, bodies and keys, ack and retry rules, state.

Nothing here knows which capture mode is running: the modes call in, never the other way round.
"""

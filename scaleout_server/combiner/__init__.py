"""The combiner: connected clients, their task queues, model transfer and aggregation.

Entry points: `server.run_combiner(settings)` (blocking, the CLI), `server.serve(settings, stop_event)`
(async), `server.CombinerServer` / `server.CombinerThread` (embedding and tests).
"""

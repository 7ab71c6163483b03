"""The harness's tasks: one module each (data, network, loss, metrics of one kind of run)."""

"""What every layer shares: errors with their exit codes, files on any filesystem (local or
gs://), progress bars, the names of the metrics, the device mesh, stop requests, the workdir
lock and the metrics writers. Imports nothing else of bit_jax."""

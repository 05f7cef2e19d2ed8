"""A worker node: the supervisor, its task processes and the backends it talks to."""

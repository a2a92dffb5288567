import os

# Tests run on CPU everywhere (CI has no GPU); keep XLA to one thread per op
# pool so the suite does not fight itself on small machines.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

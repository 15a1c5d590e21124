"""The test bed, outside the data plane and in no image: the demo (the whole loop on one
machine), a local runtime that runs what the operator decides, an open-loop load
generator, and the one harness (``harness``) that the tests, the benchmarks and the demo
share."""

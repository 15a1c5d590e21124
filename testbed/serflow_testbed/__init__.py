"""The whole loop on one machine: a local runtime that runs what the operator decides,
an open-loop load generator, and the demo that ties them to the local control plane."""
